"""CLIP's image tower as an ONNX graph, written with numpy and the `onnx` package alone (no torch),
so that scripts/bench-web.sh can time onnxruntime-web on the very weights candle runs in the
worker. Usage:

    python export_onnx.py MODEL_DIR OUT.onnx [--no-check] [--full-last-layer]

MODEL_DIR is a Hugging Face CLIP folder (config.json + model.safetensors, as make_bench_model.py
writes). The graph maps `pixel_values` (batch, 3, S, S) f32 to `image_features` (batch, P): the
same as transformers' `CLIPModel.get_image_features` (patch conv, class token, position embedding,
pre_layrnorm, pre-LN encoder layers with quick_gelu, post_layernorm of the class token,
visual_projection), in opset 17's standard ops with the weights as f32 initialisers (one file:
ViT-B/32's tower is ~350 MB, far from protobuf's 2 GB limit).

The last encoder layer is computed for the class token alone (its keys and values still from
every token), as dama's tower computes it (`ClipVisionTransformer::forward`): the output is the
same, and both sides then do the same work. `--full-last-layer` runs it over every token instead.

Unless `--no-check`, the export is then checked before anyone times it: onnxruntime (the python
package) runs the graph natively on seeded pixel values, and dama's own CLIP (crates/dama-clip,
itself tested against transformers) embeds the same values
(`cargo run -p dama-clip --example embed_pixels`); the two must agree to 1e-4 of the features'
largest magnitude, or the script exits with status 1. Because the bench model's biases are all
zero and its norms all one, which would hide a wrongly wired bias or norm, the same check also
runs on a tiny CLIP with every tensor random (dama-clip's test fixture, its 1-D tensors
re-drawn). The check writes, for web/e2e/bench_ort.mjs, `OUT.pixels.f32` (one image's pixel
values) and `OUT.features.f32` (dama's features for them).
"""
import json, os, subprocess, sys, tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOLERANCE = 1e-4


def read_safetensors(path):
    """name → float32 array. The format: 8-byte little-endian header length, a JSON header of
    dtype, shape and byte offsets into the data that follows."""
    with open(path, 'rb') as f:
        n = int.from_bytes(f.read(8), 'little')
        header = json.loads(f.read(n))
        data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
    out = {}
    for name, t in header.items():
        if name == '__metadata__':
            continue
        a, b = t['data_offsets']
        raw = data[a:b]
        if t['dtype'] == 'F32':
            x = raw.view('<f4')
        elif t['dtype'] == 'F16':
            x = raw.view('<f2').astype(np.float32)
        elif t['dtype'] == 'BF16':  # the high half of an f32
            x = (raw.view('<u2').astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f'{path}: {name} is {t["dtype"]}, not a float type')
        out[name] = np.asarray(x, dtype=np.float32).reshape(t['shape'])
    return out


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, a in tensors.items():
        header[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(',', ':')).encode()
    blob += b' ' * (-len(blob) % 8)
    with open(path, 'wb') as f:
        f.write(len(blob).to_bytes(8, 'little'))
        f.write(blob)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, '<f4').tobytes())


class Graph:
    """Collects nodes and initialisers; each helper returns its output's name."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, hint):
        self.n += 1
        return f'{hint}_{self.n}'

    def const(self, hint, array):
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op, inputs, hint=None, **attrs):
        out = self.name(hint or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(self, x, w, b, hint):
        # torch's Linear stores (out, in); MatMul wants (in, out).
        y = self.op('MatMul', [x, self.const(hint + '.weight', w.T.copy())], hint)
        return y if b is None else self.op('Add', [y, self.const(hint + '.bias', b)], hint + '.add')

    def layer_norm(self, x, w, b, eps, hint):
        return self.op('LayerNormalization', [x, self.const(hint + '.weight', w), self.const(hint + '.bias', b)],
                       hint, axis=-1, epsilon=eps)


def vision_graph(weights, config, full_last_layer=False):
    v = config['vision_config']
    d, heads, layers = v['hidden_size'], v['num_attention_heads'], v['num_hidden_layers']
    p, side, eps = v['patch_size'], v['image_size'], v.get('layer_norm_eps', 1e-5)
    act = v.get('hidden_act', 'quick_gelu')
    if act != 'quick_gelu':
        raise SystemExit(f'vision hidden_act {act}: only quick_gelu (every OpenAI CLIP) is exported')
    hd = d // heads
    proj = weights['visual_projection.weight']
    W = lambda k: weights['vision_model.' + k]
    g = Graph()
    i64 = lambda *xs: np.array(xs, np.int64)

    # Patches: (B, 3, S, S) → (B, D, S/p, S/p) → (B, patches, D).
    x = g.op('Conv', ['pixel_values', g.const('patch_embedding.weight', W('embeddings.patch_embedding.weight'))],
             'patch_embedding', kernel_shape=[p, p], strides=[p, p])
    x = g.op('Reshape', [x, g.const('shape', i64(0, d, -1))])
    x = g.op('Transpose', [x], perm=[0, 2, 1])
    # The class token, one per image of the batch, in front.
    batch = g.op('Shape', ['pixel_values'], 'batch', start=0, end=1)
    cls_shape = g.op('Concat', [batch, g.const('shape', i64(1, d))], axis=0)
    cls = g.op('Expand', [g.const('class_embedding', W('embeddings.class_embedding').reshape(1, 1, d)), cls_shape])
    x = g.op('Concat', [cls, x], axis=1)
    x = g.op('Add', [x, g.const('position_embedding', W('embeddings.position_embedding.weight')[None])])
    x = g.layer_norm(x, W('pre_layrnorm.weight'), W('pre_layrnorm.bias'), eps, 'pre_layrnorm')

    heads_shape = g.const('shape', i64(0, 0, heads, hd))
    merge_shape = g.const('shape', i64(0, 0, d))
    scale = g.const('scale', np.array(hd ** -0.5, np.float32))
    for i in range(layers):
        L = lambda k: W(f'encoder.layers.{i}.{k}')
        pre = f'layers.{i}'
        # In the last layer only the class token's output is used: its query alone.
        pooled = i == layers - 1 and not full_last_layer
        h = g.layer_norm(x, L('layer_norm1.weight'), L('layer_norm1.bias'), eps, pre + '.layer_norm1')
        hq = g.op('Slice', [h, g.const('i', i64(0)), g.const('i', i64(1)), g.const('i', i64(1))]) if pooled else h
        q = g.op('Mul', [g.linear(hq, L('self_attn.q_proj.weight'), L('self_attn.q_proj.bias'), pre + '.q_proj'), scale])
        k = g.linear(h, L('self_attn.k_proj.weight'), L('self_attn.k_proj.bias'), pre + '.k_proj')
        val = g.linear(h, L('self_attn.v_proj.weight'), L('self_attn.v_proj.bias'), pre + '.v_proj')
        split = lambda t, perm: g.op('Transpose', [g.op('Reshape', [t, heads_shape])], perm=perm)
        q, k, val = split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1]), split(val, [0, 2, 1, 3])
        a = g.op('Softmax', [g.op('MatMul', [q, k], pre + '.scores')], axis=-1)
        a = g.op('MatMul', [a, val], pre + '.context')
        a = g.op('Reshape', [g.op('Transpose', [a], perm=[0, 2, 1, 3]), merge_shape])
        a = g.linear(a, L('self_attn.out_proj.weight'), L('self_attn.out_proj.bias'), pre + '.out_proj')
        xq = g.op('Slice', [x, g.const('i', i64(0)), g.const('i', i64(1)), g.const('i', i64(1))]) if pooled else x
        x = g.op('Add', [xq, a], pre + '.residual1')
        h = g.layer_norm(x, L('layer_norm2.weight'), L('layer_norm2.bias'), eps, pre + '.layer_norm2')
        h = g.linear(h, L('mlp.fc1.weight'), L('mlp.fc1.bias'), pre + '.fc1')
        # quick_gelu: x · sigmoid(1.702 x)
        h = g.op('Mul', [h, g.op('Sigmoid', [g.op('Mul', [h, g.const('c', np.array(1.702, np.float32))])])])
        h = g.linear(h, L('mlp.fc2.weight'), L('mlp.fc2.bias'), pre + '.fc2')
        x = g.op('Add', [x, h], pre + '.residual2')

    x = g.op('Gather', [x, g.const('i', np.array(0, np.int64))], 'class_token', axis=1)  # (B, D)
    x = g.layer_norm(x, W('post_layernorm.weight'), W('post_layernorm.bias'), eps, 'post_layernorm')
    x = g.linear(x, proj, None, 'visual_projection')
    g.nodes.append(helper.make_node('Identity', [x], ['image_features']))

    graph = helper.make_graph(
        g.nodes, 'clip_vision',
        [helper.make_tensor_value_info('pixel_values', TensorProto.FLOAT, ['batch', 3, side, side])],
        [helper.make_tensor_value_info('image_features', TensorProto.FLOAT, ['batch', proj.shape[0]])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], producer_name='dama export_onnx.py')
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    return model


def export(model_dir, out, full_last_layer=False):
    with open(os.path.join(model_dir, 'config.json')) as f:
        config = json.load(f)
    model = vision_graph(read_safetensors(os.path.join(model_dir, 'model.safetensors')), config, full_last_layer)
    onnx.checker.check_model(model)  # in memory: fine below 2 GB
    onnx.save(model, out)
    return config


def check(model_dir, onnx_path, config, bench_prefix=None):
    """onnxruntime on the graph against dama's CLIP on the same pixel values; exits on a mismatch."""
    import onnxruntime as ort
    side = config['vision_config']['image_size']
    # Values in the range CLIP's normalisation gives ((0..1 − mean) / std ≈ −1.8..2.1), seeded.
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1.8, 2.1, size=(2, 3, side, side)).astype(np.float32)
    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    ours = session.run(['image_features'], {'pixel_values': pixels})[0]
    with tempfile.TemporaryDirectory() as tmp:
        px, emb = os.path.join(tmp, 'pixels.f32'), os.path.join(tmp, 'features.f32')
        pixels.astype('<f4').tofile(px)
        cmd = ['cargo', 'run', '-q', '-p', 'dama-clip', '--example', 'embed_pixels', '--', model_dir, px, emb]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        ref = np.fromfile(emb, '<f4').reshape(ours.shape)
    diff = np.abs(ours - ref).max()
    rel = diff / np.abs(ref).max()
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    verdict = 'agree' if rel <= TOLERANCE else 'DISAGREE'
    print(f'  {model_dir}: onnxruntime {ort.__version__} vs dama-clip, 2 images, features {ours.shape}: '
          f'max |diff| {diff:.2e}, relative to max |feature| {rel:.2e}, min cosine {cos.min():.8f}: {verdict}')
    if rel > TOLERANCE:
        raise SystemExit(f'the ONNX export disagrees with dama-clip ({rel:.2e} > {TOLERANCE:g}): not timing it')
    if bench_prefix:  # the bench's input and dama's features for it, to check the browser's output
        pixels[:1].astype('<f4').tofile(bench_prefix + '.pixels.f32')
        ref[:1].astype('<f4').tofile(bench_prefix + '.features.f32')


def random_tiny_model(dir):
    """dama-clip's tiny test CLIP with every 1-D tensor (biases, norms, class token) re-drawn."""
    fixture = os.path.join(ROOT, 'crates', 'dama-clip', 'tests', 'fixtures', 'tiny-clip')
    rng = np.random.default_rng(1)
    tensors = read_safetensors(os.path.join(fixture, 'model.safetensors'))
    for name, a in tensors.items():
        if a.ndim == 1:
            centre = 1.0 if 'norm' in name and name.endswith('.weight') else 0.0  # norm scales around 1
            tensors[name] = (centre + rng.normal(0, 0.3, a.shape)).astype(np.float32)
        elif a.ndim:
            tensors[name] = (a + rng.normal(0, 0.05, a.shape)).astype(np.float32)
    write_safetensors(os.path.join(dir, 'model.safetensors'), tensors)
    with open(os.path.join(fixture, 'config.json')) as f, open(os.path.join(dir, 'config.json'), 'w') as g:
        g.write(f.read())


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    flags = {a for a in sys.argv[1:] if a.startswith('--')}
    if len(args) != 2 or flags - {'--no-check', '--full-last-layer'}:
        raise SystemExit(__doc__)
    model_dir, out = (os.path.abspath(a) for a in args)
    full = '--full-last-layer' in flags
    config = export(model_dir, out, full)
    print(f'wrote {out} ({os.path.getsize(out) / 1e6:.0f} MB, opset 17, '
          f'{"every token" if full else "class token only"} in the last layer)')
    if '--no-check' in flags:
        return
    with tempfile.TemporaryDirectory() as tmp:
        random_tiny_model(tmp)
        tiny = os.path.join(tmp, 'clip.onnx')
        check(tmp, tiny, export(tmp, tiny, full))
    check(model_dir, out, config, bench_prefix=out)


if __name__ == '__main__':
    main()

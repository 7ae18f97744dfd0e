"""CLIP's two towers as ONNX graphs, written with numpy and the `onnx` package alone (no torch),
so that scripts/bench-web.sh can time onnxruntime-web on the very weights candle runs in the
worker. Usage:

    python export_onnx.py MODEL_DIR PREFIX [--no-check]

MODEL_DIR is a Hugging Face CLIP folder (config.json + model.safetensors, as make_bench_model.py
writes). PREFIX-vision.onnx maps `pixel_values` (batch, 3, S, S) f32 to `image_features` (batch,
P), transformers' `CLIPModel.get_image_features` (patch conv, class token, position embedding,
pre_layrnorm, pre-LN encoder layers, post_layernorm of the class token, visual_projection);
PREFIX-text.onnx maps unpadded `input_ids` (batch, length) int64 to `text_features`,
`get_text_features`. Opset 17's standard ops, the weights as f32 initialisers (one file each:
ViT-B/32's image tower is ~350 MB, far from protobuf's 2 GB limit). The last encoder layer is
computed for the pooled row alone (its keys and values still from every token), as dama's towers
compute it: the output is the same, and both sides then do the same work.

Unless `--no-check`, the export is then checked before anyone times it: onnxruntime (the python
package) runs each graph natively on seeded inputs (pixel values; 77-token ids), and dama's own
CLIP (crates/dama-clip, itself tested against transformers) embeds the same inputs
(`cargo run -p dama-clip --example embed_pixels` / `embed_ids`); the two must agree to 1e-4 of
the features' largest magnitude, or the script exits with status 1. Because the bench model's
biases are all zero and its norms all one, which would hide a wrongly wired bias or norm, the
same check also runs on a tiny CLIP with every tensor random (dama-clip's test fixture, its 1-D
tensors re-drawn; its text tower uses exact gelu). For web/e2e/bench_ort.mjs the check keeps one
input and dama's features for it next to each graph (`.pixels.f32` or `.ids.i64`, and
`.features.f32`).
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


def activation(g, h, act):
    if act == 'quick_gelu':  # x · sigmoid(1.702 x)
        return g.op('Mul', [h, g.op('Sigmoid', [g.op('Mul', [h, g.const('c', np.array(1.702, np.float32))])])])
    if act == 'gelu':  # exact: x · (1 + erf(x / √2)) / 2
        e = g.op('Erf', [g.op('Mul', [h, g.const('c', np.array(0.5 ** 0.5, np.float32))])])
        return g.op('Mul', [g.op('Mul', [h, g.const('c', np.array(0.5, np.float32))]),
                            g.op('Add', [e, g.const('c', np.array(1.0, np.float32))])])
    raise SystemExit(f'hidden_act {act}: only quick_gelu and gelu are exported')


def encoder_layer(g, x, L, pre, d, heads, eps, act, mask=None, pick=None):
    """One pre-LN CLIP encoder layer on x (B, T, D). `pick` keeps only some rows (B, T', D) as
    queries and outputs (the pooled ones, in the last layer); `mask` is added to the scores."""
    i64 = lambda *xs: np.array(xs, np.int64)
    hd = d // heads
    h = g.layer_norm(x, L('layer_norm1.weight'), L('layer_norm1.bias'), eps, pre + '.layer_norm1')
    hq = pick(h) if pick else h
    q = g.linear(hq, L('self_attn.q_proj.weight'), L('self_attn.q_proj.bias'), pre + '.q_proj')
    q = g.op('Mul', [q, g.const('scale', np.array(hd ** -0.5, np.float32))])
    k = g.linear(h, L('self_attn.k_proj.weight'), L('self_attn.k_proj.bias'), pre + '.k_proj')
    val = g.linear(h, L('self_attn.v_proj.weight'), L('self_attn.v_proj.bias'), pre + '.v_proj')
    split = lambda t, perm: g.op('Transpose', [g.op('Reshape', [t, g.const('shape', i64(0, 0, heads, hd))])], perm=perm)
    q, k, val = split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1]), split(val, [0, 2, 1, 3])
    scores = g.op('MatMul', [q, k], pre + '.scores')
    if mask is not None:
        scores = g.op('Add', [scores, mask])
    a = g.op('MatMul', [g.op('Softmax', [scores], axis=-1), val], pre + '.context')
    a = g.op('Reshape', [g.op('Transpose', [a], perm=[0, 2, 1, 3]), g.const('shape', i64(0, 0, d))])
    a = g.linear(a, L('self_attn.out_proj.weight'), L('self_attn.out_proj.bias'), pre + '.out_proj')
    x = g.op('Add', [pick(x) if pick else x, a], pre + '.residual1')
    h = g.layer_norm(x, L('layer_norm2.weight'), L('layer_norm2.bias'), eps, pre + '.layer_norm2')
    h = activation(g, g.linear(h, L('mlp.fc1.weight'), L('mlp.fc1.bias'), pre + '.fc1'), act)
    h = g.linear(h, L('mlp.fc2.weight'), L('mlp.fc2.bias'), pre + '.fc2')
    return g.op('Add', [x, h], pre + '.residual2')


def finish(g, inputs, outputs, name):
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], producer_name='dama export_onnx.py')
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    return model


def vision_graph(weights, config):
    v = config['vision_config']
    d, heads, layers = v['hidden_size'], v['num_attention_heads'], v['num_hidden_layers']
    p, side, eps = v['patch_size'], v['image_size'], v.get('layer_norm_eps', 1e-5)
    act = v.get('hidden_act', 'quick_gelu')
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

    # In the last layer only the class token's output is used: its query alone.
    first = lambda t: g.op('Slice', [t, g.const('i', i64(0)), g.const('i', i64(1)), g.const('i', i64(1))])
    for i in range(layers):
        pooled = i == layers - 1
        x = encoder_layer(g, x, lambda k: W(f'encoder.layers.{i}.{k}'), f'layers.{i}', d, heads, eps, act,
                          pick=first if pooled else None)

    x = g.op('Gather', [x, g.const('i', np.array(0, np.int64))], 'class_token', axis=1)  # (B, D)
    x = g.layer_norm(x, W('post_layernorm.weight'), W('post_layernorm.bias'), eps, 'post_layernorm')
    x = g.linear(x, proj, None, 'visual_projection')
    g.nodes.append(helper.make_node('Identity', [x], ['image_features']))

    return finish(g, [helper.make_tensor_value_info('pixel_values', TensorProto.FLOAT, ['batch', 3, side, side])],
                  [helper.make_tensor_value_info('image_features', TensorProto.FLOAT, ['batch', proj.shape[0]])],
                  'clip_vision')


def text_graph(weights, config):
    """`input_ids` (B, T) int64 → `text_features` (B, P): transformers' `get_text_features` for
    unpadded ids (token and position embedding, causally masked pre-LN layers, final_layer_norm,
    the row of the first eos_token_id, or with the legacy eos_token_id 2 of the argmax id;
    text_projection). The last layer runs at that row alone, as in dama."""
    t = config['text_config']
    d, heads, layers, eps = t['hidden_size'], t['num_attention_heads'], t['num_hidden_layers'], t.get('layer_norm_eps', 1e-5)
    act, eos, n_pos = t.get('hidden_act', 'quick_gelu'), t.get('eos_token_id', 2), t.get('max_position_embeddings', 77)
    W = lambda k: weights['text_model.' + k]
    proj = weights['text_projection.weight']
    g = Graph()
    i64 = lambda *xs: np.array(xs, np.int64)
    ids = 'input_ids'
    T = g.op('Shape', [ids], 'length', start=1, end=2)  # (1,)
    x = g.op('Gather', [g.const('token_embedding', W('embeddings.token_embedding.weight')), ids], axis=0)
    pos = g.op('Slice', [g.const('position_embedding', W('embeddings.position_embedding.weight')), g.const('i', i64(0)), T, g.const('i', i64(0))])
    x = g.op('Add', [x, pos])
    causal = np.triu(np.full((n_pos, n_pos), -np.inf, np.float32), 1)  # −∞ where key > query
    causal = g.op('Slice', [g.const('causal', causal), g.const('i', i64(0, 0)), g.op('Concat', [T, T], axis=0), g.const('i', i64(0, 1))])
    # The pooled row of each sequence, (B,), and what picks it: (B, 1, D) indices, its mask row.
    hit = g.op('Cast', [ids], to=TensorProto.INT32) if eos == 2 else \
        g.op('Cast', [g.op('Equal', [ids, g.const('eos', np.array(eos, np.int64))])], to=TensorProto.INT32)
    row = g.op('ArgMax', [hit], 'pooled_row', axis=1, keepdims=0)  # first maximum: torch's argmax
    batch = g.op('Shape', [ids], 'batch', start=0, end=1)
    rows = g.op('Expand', [g.op('Unsqueeze', [row, g.const('i', i64(1, 2))]), g.op('Concat', [batch, g.const('shape', i64(1, d))], axis=0)])
    pick = lambda t_: g.op('GatherElements', [t_, rows], axis=1)
    row_mask = g.op('Unsqueeze', [g.op('Gather', [causal, row], axis=0), g.const('i', i64(1, 2))])  # (B, 1, 1, T)
    for i in range(layers):
        pooled = i == layers - 1
        x = encoder_layer(g, x, lambda k: W(f'encoder.layers.{i}.{k}'), f'layers.{i}', d, heads, eps, act,
                          mask=row_mask if pooled else causal, pick=pick if pooled else None)
    x = g.layer_norm(x, W('final_layer_norm.weight'), W('final_layer_norm.bias'), eps, 'final_layer_norm')
    x = g.linear(g.op('Squeeze', [x, g.const('i', i64(1))]), proj, None, 'text_projection')
    g.nodes.append(helper.make_node('Identity', [x], ['text_features']))
    return finish(g, [helper.make_tensor_value_info(ids, TensorProto.INT64, ['batch', 'length'])],
                  [helper.make_tensor_value_info('text_features', TensorProto.FLOAT, ['batch', proj.shape[0]])],
                  'clip_text')


def export(model_dir, prefix):
    """PREFIX-vision.onnx and PREFIX-text.onnx for a model folder; returns its config."""
    with open(os.path.join(model_dir, 'config.json')) as f:
        config = json.load(f)
    weights = read_safetensors(os.path.join(model_dir, 'model.safetensors'))
    for tower, make in (('vision', vision_graph), ('text', text_graph)):
        model = make(weights, config)
        onnx.checker.check_model(model)  # in memory: fine below 2 GB
        onnx.save(model, f'{prefix}-{tower}.onnx')
    return config


def check(model_dir, prefix, config, bench=False):
    """onnxruntime on both graphs against dama's CLIP on the same inputs; exits on a mismatch.
    With `bench`, keeps one input and dama's features for it next to each graph."""
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    side, t = config['vision_config']['image_size'], config['text_config']
    # Pixel values in the range CLIP's normalisation gives ((0..1 − mean) / std ≈ −1.8..2.1);
    # 77-token ids: start, 75 ordinary tokens, end (the pooled row), as the tokenizer gives.
    pixels = rng.uniform(-1.8, 2.1, size=(2, 3, side, side)).astype(np.float32)
    ids = np.concatenate([np.full((2, 1), t['bos_token_id']), rng.integers(0, t['bos_token_id'], (2, 75)),
                          np.full((2, 1), t['eos_token_id'])], axis=1).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        for tower, name, x, example in (('vision', 'pixel_values', pixels, 'embed_pixels'),
                                        ('text', 'input_ids', ids, 'embed_ids')):
            graph = f'{prefix}-{tower}.onnx'
            session = ort.InferenceSession(graph, providers=['CPUExecutionProvider'])
            ours = session.run(None, {name: x})[0]
            given, emb = os.path.join(tmp, 'input'), os.path.join(tmp, 'features.f32')
            if tower == 'vision':
                x.astype('<f4').tofile(given)
            else:
                with open(given, 'w') as f:
                    f.write(''.join(' '.join(map(str, row)) + '\n' for row in x))
            cmd = ['cargo', 'run', '-q', '-p', 'dama-clip', '--example', example, '--', model_dir, given, emb]
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            ref = np.fromfile(emb, '<f4').reshape(ours.shape)
            diff = np.abs(ours - ref).max()
            rel = diff / np.abs(ref).max()
            cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
            verdict = 'agree' if rel <= TOLERANCE else 'DISAGREE'
            print(f'  {model_dir}, {tower}: onnxruntime {ort.__version__} vs dama-clip, 2 inputs, features {ours.shape}: '
                  f'max |diff| {diff:.2e}, relative to max |feature| {rel:.2e}, min cosine {cos.min():.8f}: {verdict}')
            if rel > TOLERANCE:
                raise SystemExit(f'the ONNX export of the {tower} tower disagrees with dama-clip '
                                 f'({rel:.2e} > {TOLERANCE:g}): not timing it')
            if bench:  # the browser bench's input, and dama's features to check its output against
                x[:1].astype('<f4' if tower == 'vision' else '<i8').tofile(graph + ('.pixels.f32' if tower == 'vision' else '.ids.i64'))
                ref[:1].astype('<f4').tofile(graph + '.features.f32')


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
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ['--no-check']):
        raise SystemExit(__doc__)
    model_dir, prefix = (os.path.abspath(a) for a in sys.argv[1:3])
    config = export(model_dir, prefix)
    for tower in ('vision', 'text'):
        print(f'wrote {prefix}-{tower}.onnx ({os.path.getsize(f"{prefix}-{tower}.onnx") / 1e6:.0f} MB, opset 17)')
    if '--no-check' in sys.argv:
        return
    with tempfile.TemporaryDirectory() as tmp:
        random_tiny_model(tmp)
        tiny = os.path.join(tmp, 'clip')
        check(tmp, tiny, export(tmp, tiny))
    check(model_dir, prefix, config, bench=True)


if __name__ == '__main__':
    main()

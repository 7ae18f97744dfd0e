"""A random-weight CLIP in the Hugging Face layout with the shapes of openai/clip-vit-base-patch32
(ViT-B/32 image tower, 12-layer 512-wide text tower, 512-d projection), for scripts/bench-web.sh.
Nothing is downloaded: the tokenizer is dama-clip's fixture copy of the real CLIP tokenizer and the
preprocessor config is the fixture's, resized to 224. Usage: python make_bench_model.py OUT_DIR

With torch and transformers, `CLIPModel(config).save_pretrained` writes it. Without them, numpy
writes the same tensor names and shapes (normal(0, 0.02) weights, unit norms, zero biases) into a
safetensors file laid out by hand (8-byte header length, JSON header, raw little-endian f32):
timing does not depend on which random weights a model has."""
import json, os, shutil, sys

out = sys.argv[1]
fixture = os.path.join(os.path.dirname(__file__), '..', '..', 'crates', 'dama-clip', 'tests', 'fixtures', 'tiny-clip')
os.makedirs(out, exist_ok=True)
TEXT = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=8, max_position_embeddings=77, hidden_act='quick_gelu',
            projection_dim=512, bos_token_id=49406, eos_token_id=49407, pad_token_id=1, layer_norm_eps=1e-5)
VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              image_size=224, patch_size=32, hidden_act='quick_gelu', projection_dim=512, num_channels=3,
              layer_norm_eps=1e-5)


def with_torch():
    import torch
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(0)
    config = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=512)
    CLIPModel(config).eval().save_pretrained(out, safe_serialization=True)


def with_numpy():
    import numpy as np
    rng = np.random.default_rng(0)
    tensors = {}

    def normal(name, *shape):
        tensors[name] = rng.normal(0.0, 0.02, size=shape).astype('<f4')

    def norm(name, d):
        tensors[name + '.weight'] = np.ones(d, '<f4')
        tensors[name + '.bias'] = np.zeros(d, '<f4')

    def tower(prefix, d, ff, layers):
        for i in range(layers):
            p = f'{prefix}.encoder.layers.{i}'
            for proj in ('q_proj', 'k_proj', 'v_proj', 'out_proj'):
                normal(f'{p}.self_attn.{proj}.weight', d, d)
                tensors[f'{p}.self_attn.{proj}.bias'] = np.zeros(d, '<f4')
            norm(f'{p}.layer_norm1', d)
            normal(f'{p}.mlp.fc1.weight', ff, d)
            tensors[f'{p}.mlp.fc1.bias'] = np.zeros(ff, '<f4')
            normal(f'{p}.mlp.fc2.weight', d, ff)
            tensors[f'{p}.mlp.fc2.bias'] = np.zeros(d, '<f4')
            norm(f'{p}.layer_norm2', d)

    t, v = TEXT, VISION
    normal('text_model.embeddings.token_embedding.weight', t['vocab_size'], t['hidden_size'])
    normal('text_model.embeddings.position_embedding.weight', t['max_position_embeddings'], t['hidden_size'])
    tower('text_model', t['hidden_size'], t['intermediate_size'], t['num_hidden_layers'])
    norm('text_model.final_layer_norm', t['hidden_size'])
    d, p = v['hidden_size'], v['patch_size']
    normal('vision_model.embeddings.class_embedding', d)
    normal('vision_model.embeddings.patch_embedding.weight', d, 3, p, p)
    normal('vision_model.embeddings.position_embedding.weight', (v['image_size'] // p) ** 2 + 1, d)
    norm('vision_model.pre_layrnorm', d)
    tower('vision_model', d, v['intermediate_size'], v['num_hidden_layers'])
    norm('vision_model.post_layernorm', d)
    normal('visual_projection.weight', 512, d)
    normal('text_projection.weight', 512, t['hidden_size'])
    tensors['logit_scale'] = np.array(4.605170185988092, '<f4')

    header, offset = {}, 0
    for name, a in tensors.items():
        header[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(',', ':')).encode()
    blob += b' ' * (-len(blob) % 8)
    with open(os.path.join(out, 'model.safetensors'), 'wb') as f:
        f.write(len(blob).to_bytes(8, 'little'))
        f.write(blob)
        for a in tensors.values():
            f.write(a.tobytes())
    config = {'architectures': ['CLIPModel'], 'model_type': 'clip', 'projection_dim': 512,
              'logit_scale_init_value': 4.605170185988092,
              'text_config': dict(TEXT, model_type='clip_text_model'),
              'vision_config': dict(VISION, model_type='clip_vision_model')}
    with open(os.path.join(out, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)


try:
    import torch, transformers  # noqa: F401
    with_torch()
except ImportError:
    with_numpy()
shutil.copy(os.path.join(fixture, 'tokenizer.json'), out)
with open(os.path.join(fixture, 'preprocessor_config.json')) as f:
    pre = json.load(f)
pre['crop_size'] = {'height': 224, 'width': 224}
pre['size'] = {'shortest_edge': 224}
with open(os.path.join(out, 'preprocessor_config.json'), 'w') as f:
    json.dump(pre, f, indent=2)
print('wrote', sorted(os.listdir(out)))

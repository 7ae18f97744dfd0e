"""A random-weight CLIP in the Hugging Face layout with the shapes of openai/clip-vit-base-patch32
(ViT-B/32 image tower, 12-layer 512-wide text tower, 512-d projection), for scripts/bench-web.sh.
Nothing is downloaded: the tokenizer is dama-clip's fixture copy of the real CLIP tokenizer and the
preprocessor config is the fixture's, resized to 224. Usage: python make_bench_model.py OUT_DIR"""
import json, os, shutil, sys

import torch
from transformers import CLIPConfig, CLIPModel

out = sys.argv[1]
fixture = os.path.join(os.path.dirname(__file__), '..', '..', 'crates', 'dama-clip', 'tests', 'fixtures', 'tiny-clip')
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
config = CLIPConfig(
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act='quick_gelu',
                     projection_dim=512, bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act='quick_gelu', projection_dim=512),
    projection_dim=512,
)
CLIPModel(config).eval().save_pretrained(out, safe_serialization=True)
shutil.copy(os.path.join(fixture, 'tokenizer.json'), out)
with open(os.path.join(fixture, 'preprocessor_config.json')) as f:
    pre = json.load(f)
pre['crop_size'] = {'height': 224, 'width': 224}
pre['size'] = {'shortest_edge': 224}
with open(os.path.join(out, 'preprocessor_config.json'), 'w') as f:
    json.dump(pre, f, indent=2)
print('wrote', sorted(os.listdir(out)))

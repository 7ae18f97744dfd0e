#!/usr/bin/env python3
"""A standalone transformers anchor for hardness scoring: CLIP pairs/s with random weights.

    python3 torch_clip_cpu.py

A pair is what `dama-native score` scores: 1 image and 4 chosen + 4 rejected sub-sentences of
16 tokens (`<|startoftext|>` … `<|endoftext|>`); its 8 scores are
`logit_scale.exp() · cos(image embedding, text embedding)` (Eq. 3, `logits_per_image`). One
call scores CLIP_PAIRS pairs (default 8) in one batch: all images through the vision tower,
all 8·pairs texts through the text tower, inference mode, fp32. Prints the median of 5 calls
after one warm-up as pairs/s.

Which comparison this is: a quick number that needs nothing prepared, for the machine at hand
(CPU here; CLIP_DEVICE=cuda with CLIP_SHAPE=vitl14-336 on the GPU machine, the shape of
`score`'s default model). It is not side by side with dama by itself. The like-for-like CPU
comparison is `scripts/bench_clip.sh`: transformers (scripts/bench_clip_torch.py) and
dama-clip (`bench_score`) score the same pairs with the same weights and the same real
tokenizer and image processor, and it reports the ratio and the score differences.

Environment: CLIP_DEVICE=cpu|cuda (default cpu), CLIP_SHAPE=vitb32|vitl14-336 (default vitb32:
ViT-B/32 at 224 px with the 512-wide text tower; vitl14-336: ViT-L/14 at 336 px with the
768-wide text tower), CLIP_PAIRS (default 8), torch's own thread settings (OMP_NUM_THREADS).
Fields: anchor (`torch_clip_cpu_vitb32` for the defaults), threads, pairs, sec (one call),
pairs_per_s, torch, device, shape.
"""
import json
import os
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel

SHAPES = {
    "vitb32": dict(text=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8),
                   vision=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                               image_size=224, patch_size=32, num_hidden_layers=12),
               projection_dim=512),
    "vitl14-336": dict(text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
                       vision=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                   image_size=336, patch_size=14, num_hidden_layers=24),
                       projection_dim=768),
}
dev = os.environ.get("CLIP_DEVICE", "cpu")
shape = os.environ.get("CLIP_SHAPE", "vitb32")
pairs = int(os.environ.get("CLIP_PAIRS", "8"))
s = SHAPES[shape]
torch.manual_seed(0)
cfg = CLIPConfig(
    text_config=dict(vocab_size=49408, num_hidden_layers=12, max_position_embeddings=77,
                     projection_dim=s["projection_dim"], **s["text"]),
    vision_config=dict(projection_dim=s["projection_dim"], **s["vision"]),
    projection_dim=s["projection_dim"])
model = CLIPModel(cfg).eval().to(dev)
size = s["vision"]["image_size"]
pix = torch.randn(pairs, 3, size, size, device=dev)
ids = torch.randint(1, 49000, (pairs * 8, 16), device=dev)
ids[:, 0], ids[:, -1] = 49406, 49407


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def score():
    with torch.inference_mode():
        img = model.get_image_features(pixel_values=pix)
        txt = model.get_text_features(input_ids=ids)
        img = getattr(img, "pooler_output", img)  # transformers 5 may return an output object
        txt = getattr(txt, "pooler_output", txt)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        out = model.logit_scale.exp() * (img.repeat_interleave(8, 0) * txt).sum(-1)
    sync()
    return out


score()
times = []
for _ in range(5):
    t0 = time.perf_counter()
    score()
    times.append(time.perf_counter() - t0)
sec = statistics.median(times)
print(json.dumps(dict(anchor=f"torch_clip_{dev}_{shape}", threads=torch.get_num_threads(),
                      pairs=pairs, sec=round(sec, 3), pairs_per_s=round(pairs / sec, 2),
                      torch=torch.__version__, device=dev, shape=shape)))

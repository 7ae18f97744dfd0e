#!/usr/bin/env python3
"""Generation speed of transformers' `generate` on the CPU, against which
`dama-bench`'s `bench_generate` is compared (`scripts/bench-generate.sh` runs both).

    generate.py prepare WORK            # models, prompts and pixel values both sides read
    generate.py run WORK [--threads 2] [--repeat 2] [--only tiny|100m]

Two shapes, random weights (speed does not depend on them):

  tiny   the test fixture `crates/dama-llava/tests/fixtures/llava-tiny` (2 layers of width 32,
         vocabulary 1024, 16 image tokens), 64 new tokens per answer;
  100m   LLaMA-shaped, 12 layers of width 640, SwiGLU 1728, vocabulary 32064, untied head, and
         LLaVA-1.5's 576 image tokens from a small stand-in vision tower (336 px, patch 14),
         32 new tokens per answer.

Each runs greedy and 3-beam search, batches of 1 and 8 questions (different prompt lengths, so
the batch is left-padded). Every answer runs to exactly its new-token budget on both sides
(here `min_new_tokens` = `max_new_tokens`; dama's bench gives no end token), so both do the
same work; tokens/s = answers × new tokens / wall time of the `generate` call (image tower,
prefill and decoding), the fastest of --repeat runs. transformers runs its fastest CPU setting
found here: SDPA attention with the dynamic cache, or the static cache where that is faster
(both are timed; the faster is reported, with which it was).

Prints one JSON object per measurement, prefixed `RESULT `.
"""

import argparse
import json
import pathlib
import shutil
import sys
import time

import torch
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "crates/dama-llava/tests/fixtures/llava-tiny"

SHAPES = {
    "tiny": {"new_tokens": 64, "image_size": 56, "image_tokens": 16},
    "100m": {"new_tokens": 32, "image_size": 336, "image_tokens": 576},
}
CONFIGS = [("greedy", 1, 1), ("greedy", 8, 1), ("beam3", 1, 3), ("beam3", 8, 3)]


def prompts(image_tokens, n=8):
    """`<s>`, a system-prompt-like run of text ids, the image, a question of 4 + 3i ids."""
    out = []
    for i in range(n):
        head = [1] + [100 + (j * 7) % 800 for j in range(40)]
        tail = [200 + (j * 13 + i) % 700 for j in range(4 + 3 * i)] + [300, 301, 302]
        out.append(head + [1000] * image_tokens + tail)
    return out


def make_100m(dst):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, image_size=336, patch_size=14)
    text = LlamaConfig(hidden_size=640, intermediate_size=1728, num_hidden_layers=12,
                       num_attention_heads=10, num_key_value_heads=10, vocab_size=32064,
                       rms_norm_eps=1e-5, max_position_embeddings=2048, bos_token_id=1,
                       eos_token_id=2, pad_token_id=1001)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=1000,
                         image_seq_length=576, pad_token_id=1001)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.to(torch.bfloat16).save_pretrained(dst)


def prepare(work):
    work = pathlib.Path(work)
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(TINY, work / "tiny", dirs_exist_ok=True)
    make_100m(work / "100m")
    torch.manual_seed(1)
    for shape, s in SHAPES.items():
        px = torch.randn(8, 3, s["image_size"], s["image_size"])
        save_file({"pixel_values": px.contiguous()}, work / shape / "bench_pixels.safetensors")
        (work / shape / "bench_prompts.json").write_text(json.dumps(prompts(s["image_tokens"])))
    print(f"prepared {work}")


def timed(model, ids, pixels, new_tokens, beams, cache, repeat):
    batch = len(ids)
    length = max(len(x) for x in ids)
    input_ids = torch.full((batch, length), 1001, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, length - len(x):] = torch.tensor(x)
        mask[i, length - len(x):] = 1
    kwargs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels[:batch],
                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  num_beams=beams, pad_token_id=1001)
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**kwargs)
        dt = time.perf_counter() - t
        assert out.shape[1] - length == new_tokens, (out.shape, length)
        best = dt if best is None else min(best, dt)
    return best


def run(work, threads, repeat, only):
    from transformers import LlavaForConditionalGeneration
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    work = pathlib.Path(work)
    for shape, s in SHAPES.items():
        if only and shape != only:
            continue
        d = work / shape
        model = LlavaForConditionalGeneration.from_pretrained(
            d, dtype=torch.float32, attn_implementation="sdpa").eval()
        ids = json.loads((d / "bench_prompts.json").read_text())
        pixels = load_file(d / "bench_pixels.safetensors")["pixel_values"]
        for name, batch, beams in CONFIGS:
            times = {}
            for cache in ("dynamic", "static"):
                try:
                    times[cache] = timed(model, ids[:batch], pixels, s["new_tokens"], beams, cache, repeat)
                except Exception as e:  # a setting this version cannot run
                    print(f"{shape} {name} b{batch} {cache} cache: {type(e).__name__}: {e}", file=sys.stderr)
            cache, secs = min(times.items(), key=lambda kv: kv[1])
            tokens = batch * s["new_tokens"]
            print("RESULT " + json.dumps({
                "side": "transformers", "shape": shape, "strategy": name, "batch": batch,
                "new_tokens": s["new_tokens"], "seconds": secs, "tokens_per_s": tokens / secs,
                "setting": f"sdpa, {cache} cache",
                "all": {k: tokens / v for k, v in times.items()},
            }), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["prepare", "run"])
    p.add_argument("work")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--only", choices=list(SHAPES))
    a = p.parse_args()
    if a.cmd == "prepare":
        prepare(a.work)
    else:
        run(a.work, a.threads, a.repeat, a.only)


if __name__ == "__main__":
    main()

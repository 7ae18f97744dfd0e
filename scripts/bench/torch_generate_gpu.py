#!/usr/bin/env python3
"""transformers' side of the GPU generation comparison (`gpu_bench generate`, stage
`generate_torch` of `scripts/gpu-bench.sh`).

    torch_generate_gpu.py [7b|1b|tiny] [--new-tokens 128] [--repeat 2]

The same work as `gpu_bench generate --model 7b`: LlavaForConditionalGeneration of the
llava-1.5 shape (`torch_dpo_step.config`, SDPA attention) with random bf16 weights on CUDA; the
prompts dama's bench builds (`<s>`, 40 text ids, the 576 image tokens, a question of 4 + 3i
ids, left-padded in a batch); greedy and 3-beam search, batches of 1 and 8; every answer runs
to exactly --new-tokens (`min_new_tokens` = `max_new_tokens`; dama's bench gives no end token).
tokens/s = answers x new tokens / wall time of one `generate` call (vision tower, prefill and
decoding), the fastest of --repeat runs after one warm-up run. ANCHOR_DEVICE=cpu runs it on the
CPU (to try the script; the comparison is the GPU's).

transformers runs in its fastest setting found: the dynamic cache and the static cache are both
timed and the faster reported, with which it was. GEN_COMPILE=1 adds the static cache with
`torch.compile` of the forward (transformers' documented fast path; its compile time, minutes
for 7b, is excluded from the timing but not from the stage's limit).

Prints one JSON object a line per measurement (gpu-bench.sh keeps the lines that start with `{`).
"""

import argparse
import json
import os
import pathlib
import sys
import time

import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from torch_dpo_step import DEV, config, sync  # noqa: E402

PAD = 0  # <unk>: never a prompt id here


def prompts(image_token, image_tokens, n=8):
    """The ids of `gpu_bench generate`'s prompts (crates/dama-bench/src/bin/gpu_bench/generate.rs)."""
    out = []
    for i in range(n):
        ids = [1] + [100 + (j * 7) % 800 for j in range(40)] + [image_token] * image_tokens
        ids += [200 + (j * 13 + i) % 700 for j in range(4 + 3 * i)]
        out.append(ids)
    return out


def batch_inputs(ids, pixels):
    batch, length = len(ids), max(len(x) for x in ids)
    input_ids = torch.full((batch, length), PAD, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, length - len(x):] = torch.tensor(x)
        mask[i, length - len(x):] = 1
    return dict(input_ids=input_ids.to(DEV), attention_mask=mask.to(DEV), pixel_values=pixels[:batch])


def timed(model, inputs, new_tokens, beams, cache, repeat):
    kwargs = dict(inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  num_beams=beams, pad_token_id=PAD)
    if cache != "dynamic":
        kwargs["cache_implementation"] = "static"
    length = inputs["input_ids"].shape[1]
    best = None
    for r in range(repeat + 1):  # the first run warms up (allocator, kernels, compile)
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**kwargs)
        sync()
        dt = time.perf_counter() - t
        assert out.shape[1] - length == new_tokens, (out.shape, length)
        if r > 0:
            best = dt if best is None else min(best, dt)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="7b", choices=["7b", "1b", "tiny"])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    from transformers import LlavaForConditionalGeneration

    cfg = config(a.model)
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(DEV):
        model = LlavaForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(torch.float32)
    print(f"llava-{a.model}: random weights in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ids = prompts(cfg.image_token_index, cfg.image_seq_length)
    g = torch.Generator(device=DEV).manual_seed(0)
    pixels = torch.randn(8, 3, 336, 336, device=DEV, generator=g, dtype=torch.bfloat16)
    caches = ["dynamic", "static"]
    if os.environ.get("GEN_COMPILE") == "1":
        caches.append("static+compile")
    for name, beams in (("greedy", 1), ("beam3", 3)):
        for batch in (1, 8):
            inputs = batch_inputs(ids[:batch], pixels)
            times = {}
            for cache in caches:
                if cache == "static+compile":
                    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
                try:
                    times[cache] = timed(model, inputs, a.new_tokens, beams, cache, a.repeat)
                except Exception as e:  # a setting this version cannot run (or out of memory)
                    print(f"{name} b{batch} {cache}: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
                    if DEV == "cuda":
                        torch.cuda.empty_cache()
                finally:
                    if cache == "static+compile":
                        model.forward = type(model).forward.__get__(model)
            if not times:
                print(json.dumps({"side": "transformers", "generate": a.model, "strategy": name,
                                              "batch": batch, "error": "every setting failed"}), flush=True)
                continue
            cache, secs = min(times.items(), key=lambda kv: kv[1])
            tokens = batch * a.new_tokens
            print(json.dumps({
                "side": "transformers", "generate": a.model, "strategy": name, "batch": batch,
                "new_tokens": a.new_tokens, "seconds": secs, "tokens_per_s": tokens / secs,
                "setting": f"sdpa, bf16, {cache} cache", "all": {k: tokens / v for k, v in times.items()},
                "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEV == "cuda" else None,
                "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__,
                "transformers": transformers.__version__}), flush=True)


if __name__ == "__main__":
    main()

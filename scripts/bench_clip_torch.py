#!/usr/bin/env python3
"""PyTorch side of the CLIP scoring benchmark (run by scripts/bench_clip.sh).

    bench_clip_torch.py prepare OUT [--pairs N] [--image-size S] [--seed K]
    bench_clip_torch.py run OUT [--threads T]

`prepare` writes into OUT a random-weight CLIPModel of ViT-B/32 shape in the HF layout (with the
real CLIP BPE tokenizer and the 224 processor) and N preference pairs: one PNG image each and
3-5 chosen + 3-5 rejected sub-sentences (pairs.json). `run` scores every pair with transformers
on the CPU (fp32, no_grad, torch.set_num_threads(T)) and writes torch.json: the scores of each
pair and pairs/s of three ways to call it:

  per_pair_pil    per pair: the slow PIL processor (what the Rust side reproduces) + tokenizer
                  (padding=True) + CLIPModel forward; logits_per_image of the one image
  per_pair_fast   the same with transformers 5.x's default torchvision processor
  batched_8       8 pairs per forward: 8 images and all their texts, the diagonal blocks kept
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fixtures.clip import make_tokenizer, processor  # noqa: E402

WORDS = {
    "adj": "red blue green small large wooden old young bright dark striped shiny empty crowded tall".split(),
    "noun": "cat dog man woman car tree table chair window bicycle boat street house cup plate".split(),
    "verb": "sits stands lies rests waits leans".split(),
}
PREPS = ["on", "under", "next to", "behind", "in front of", "near", "beside", "above"]


def sentence(rng):
    a = lambda k: WORDS[k][rng.integers(len(WORDS[k]))]  # noqa: E731
    p = PREPS[rng.integers(len(PREPS))]
    forms = [
        f"There is a {a('adj')} {a('noun')}.",
        f"A {a('adj')} {a('noun')} {a('verb')} {p} the {a('noun')}.",
        f"The {a('noun')} {p} the {a('adj')} {a('noun')} is {a('adj')}.",
        f"In the background, a {a('adj')} {a('noun')} {a('verb')} {p} a {a('adj')} {a('noun')} and a {a('noun')}.",
        f"The image shows a {a('adj')} {a('noun')} and a {a('adj')} {a('noun')} {p} a {a('adj')} {a('noun')}, "
        f"with a {a('noun')} {a('verb')} {p} the {a('noun')}.",
    ]
    return forms[rng.integers(len(forms))]


def prepare(out, pairs, size, seed):
    from transformers import CLIPConfig, CLIPModel

    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
        vision_config=dict(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            image_size=224, patch_size=32,
        ),
        projection_dim=512,
        logit_scale_init_value=float(np.log(100.0)),
    )
    CLIPModel(cfg).eval().save_pretrained(model_dir)
    make_tokenizer(model_dir)
    processor(224).save_pretrained(model_dir)
    rng = np.random.default_rng(seed)
    records = []
    (out / "images").mkdir(exist_ok=True)
    for i in range(pairs):
        h, w = size
        noise = Image.fromarray((rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8))
        im = noise.resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
        path = out / "images" / f"{i:04d}.png"
        im.save(path)
        chosen = [sentence(rng) for _ in range(rng.integers(3, 6))]
        rejected = [sentence(rng) for _ in range(rng.integers(3, 6))]
        records.append({"image": str(path), "chosen": chosen, "rejected": rejected})
    (out / "pairs.json").write_text(json.dumps(records, indent=1))
    n_texts = sum(len(r["chosen"]) + len(r["rejected"]) for r in records)
    print(f"prepared {pairs} pairs ({n_texts} sub-sentences, {w}x{h} images) in {out}")


def run(out, threads, repeat):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPImageProcessorPil, CLIPModel

    torch.set_num_threads(threads)
    model_dir = out / "model"
    model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    slow = CLIPImageProcessorPil.from_pretrained(model_dir)
    fast = CLIPImageProcessor.from_pretrained(model_dir)
    records = json.loads((out / "pairs.json").read_text())
    images = []
    for r in records:
        im = Image.open(r["image"])
        im.load()
        images.append(im)

    def per_pair(proc):
        scores = []
        for im, r in zip(images, records):
            texts = r["chosen"] + r["rejected"]
            pv = proc(images=im, return_tensors="pt")["pixel_values"]
            enc = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pv)
            row = logits.logits_per_image[0].tolist()
            scores.append({"chosen": row[: len(r["chosen"])], "rejected": row[len(r["chosen"]) :]})
        return scores

    def batched(proc, k=8):
        scores = []
        for start in range(0, len(records), k):
            recs, ims = records[start : start + k], images[start : start + k]
            texts, spans = [], []
            for r in recs:
                spans.append((len(texts), len(r["chosen"]), len(r["rejected"])))
                texts += r["chosen"] + r["rejected"]
            pv = proc(images=ims, return_tensors="pt")["pixel_values"]
            enc = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pv)
            for i, (s, c, j) in enumerate(spans):
                row = logits.logits_per_image[i, s : s + c + j].tolist()
                scores.append({"chosen": row[:c], "rejected": row[c:]})
        return scores

    results = {}
    with torch.inference_mode():
        # Warm-up: first calls allocate and pick kernels.
        for im, r in zip(images[:2], records[:2]):
            enc = tok(r["chosen"], padding=True, return_tensors="pt")
            model(input_ids=enc["input_ids"], pixel_values=slow(images=im, return_tensors="pt")["pixel_values"])
        for name, fn in [
            ("per_pair_pil", lambda: per_pair(slow)),
            ("per_pair_fast", lambda: per_pair(fast)),
            ("batched_8", lambda: batched(fast)),
        ]:
            best = None
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                scores = fn()
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                print(f"  torch {name}: wall {dt:.2f} s, cpu {cpu:.2f} s", flush=True)
                best = dt if best is None else min(best, dt)
            results[name] = {"seconds": best, "pairs_per_s": len(records) / best}
            if name == "per_pair_pil":
                results["scores"] = scores
            print(f"torch {name:14s} {len(records) / best:7.2f} pairs/s ({best:.2f} s)", flush=True)
    results["threads"] = threads
    results["torch"] = torch.__version__
    (out / "torch.json").write_text(json.dumps(results))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prepare", "run"])
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--image-size", default="224x224", help="WxH of the pairs' images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="time each variant this often, keep the fastest")
    args = ap.parse_args()
    if args.cmd == "prepare":
        w, h = (int(v) for v in args.image_size.split("x"))
        prepare(args.out, args.pairs, (h, w), args.seed)
    else:
        run(args.out, args.threads, args.repeat)


if __name__ == "__main__":
    main()

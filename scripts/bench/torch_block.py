#!/usr/bin/env python3
"""PyTorch side of the block probe (`gpu_bench block`): equal work, kernel against kernel.

    python3 torch_block.py

One LLaMA-1B-shaped decoder block and its answer head, bf16, forward + backward of the summed
negative log-probs, with every weight trained: the embedding gather of b=8 sequences of t=736
tokens (ids (i·7919) mod 32000), RMSNorm, q/k/v/o projections d=2048 → 16 heads of 128,
rotate-half RoPE, causal attention, residual, RMSNorm, SwiGLU MLP (ffn 5632), residual, and the
vocabulary head (the embedding matrix, tied, 32064 rows) on the last 80 positions of each
sequence with an f32 log-softmax. Twice: attention composed of eager ops (`eager`: scores,
additive mask, softmax, P·V) and `F.scaled_dot_product_attention(is_causal=True)` (`sdpa`,
flash attention on a GPU).

The other side is `gpu_bench block` (crates/dama-bench/src/bin/gpu_bench/block.rs): the same
shapes, ids, weights' layout and loss with dama's fused ops, with the compositions of candle ops
they replace, and as a `dama_llava` decoder layer. It is the project's own version of the
candle block probe once kept outside the repository. Unlike the training-step comparison there
is nothing to align: both sides run exactly this work, so the ratio of the times is the
equal-work ratio. Both time each iteration synchronised, skip 3 warm-up iterations and report
the median of the next BLOCK_ITERS (default 5).

`tflops` is a nominal rate, the same formula on both sides (block.rs): 6·(4d² + 3d·ffn)·b·t
for the projections plus 12·b·t²·d for attention, i.e. full t×t scores (twice the causal
pairs) and no head; compare times, not this figure, with other benchmarks.

Environment: BLOCK_DEVICE=cuda|cpu (default cuda), BLOCK_SHAPE=probe|small (default probe;
small is block.rs's CPU stand-in b=2, t=64, d=256, 4 heads, ffn 512, vocabulary 1000, 16 scored
positions), BLOCK_ITERS.
Prints one line: {"probe": "torch_llama_block_fwd_bwd_bf16", "device", "shape", "eager":
{"step_ms", "tflops"}, "sdpa": {"step_ms", "tflops"}, "torch"}.
"""
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = {
    "probe": dict(b=8, t=736, d=2048, h=16, ff=5632, v=32064, scored=80),
    "small": dict(b=2, t=64, d=256, h=4, ff=512, v=1000, scored=16),
}
dev = os.environ.get("BLOCK_DEVICE", "cuda")
shape_name = os.environ.get("BLOCK_SHAPE", "probe")
iters = int(os.environ.get("BLOCK_ITERS", "5"))
z = SHAPES[shape_name]
b, t, d, h, ff, v, scored = (z[k] for k in ("b", "t", "d", "h", "ff", "v", "scored"))
hd, dt = d // h, torch.bfloat16
torch.manual_seed(0)


def param(*shape):
    return torch.nn.Parameter(torch.randn(*shape, device=dev, dtype=dt) * 0.02)


wq, wk, wv, wo = param(d, d), param(d, d), param(d, d), param(d, d)
w1, w3, w2 = param(d, ff), param(d, ff), param(ff, d)
norm = torch.nn.Parameter(torch.ones(d, device=dev, dtype=dt))
emb = param(v, d)
params = [wq, wk, wv, wo, w1, w2, w3, norm, emb]
ids = (torch.arange(b * t, device=dev) * 7919 % 32000 % v).reshape(b, t)
cos = torch.randn(t, hd // 2, device=dev, dtype=dt)
sin = torch.randn(t, hd // 2, device=dev, dtype=dt)
causal = torch.full((t, t), float("-inf"), device=dev).triu(1).to(dt)


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def rms(x):
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * norm


def rope(x):
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def block(sdpa):
    x = emb[ids]
    xn = rms(x)
    split = lambda y: y.view(b, t, h, hd).transpose(1, 2)  # noqa: E731
    q, k, val = rope(split(xn @ wq)), rope(split(xn @ wk)), split(xn @ wv)
    if sdpa:
        y = F.scaled_dot_product_attention(q, k, val, is_causal=True)
    else:
        y = ((q @ k.transpose(-1, -2)) / hd ** 0.5 + causal).softmax(-1) @ val
    x = x + y.transpose(1, 2).reshape(b, t, d) @ wo
    xn = rms(x)
    x = x + (F.silu(xn @ w1) * (xn @ w3)) @ w2
    logits = (x[:, t - scored:] @ emb.t()).float()
    return -F.log_softmax(logits, -1).gather(2, ids[:, t - scored:].unsqueeze(2)).sum()


nominal_flops = 6.0 * (4 * d * d + 3 * d * ff) * b * t + 12.0 * b * h * t * t * hd
res = {}
for name, use_sdpa in [("eager", False), ("sdpa", True)]:
    times = []
    for i in range(3 + iters):
        sync()
        t0 = time.perf_counter()
        block(use_sdpa).backward()
        for p in params:
            p.grad = None
        sync()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    res[name] = dict(step_ms=round(ms, 2), tflops=round(nominal_flops / (ms / 1e3) / 1e12, 1))
print(json.dumps(dict(probe="torch_llama_block_fwd_bwd_bf16",
                      device=torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                      shape=shape_name, **res, torch=torch.__version__)))

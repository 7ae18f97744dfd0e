#!/usr/bin/env python3
"""Independent numpy reference of bitsandbytes' block-wise dynamic 8-bit quantisation and of the
8-bit AdamW step built on it; writes the golden values dama-kernels' tests reproduce bit for bit.

Writes crates/dama-kernels/tests/fixtures/quant8.json and crates/dama-kernels/kernels/qmap8.cuh
(the two maps as f32 bit patterns, for the CUDA kernel). Run from the repository root:

    python3 scripts/golden_quant8.py

Written from bitsandbytes' description of its 8-bit optimizers (Dettmers et al., "8-bit
Optimizers via Block-wise Quantization", ICLR 2022) and the behaviour of its functions
(`create_dynamic_map`, `quantize_blockwise`, the block-wise 8-bit Adam kernel); bitsandbytes
itself needs torch, which this machine lacks, so this is a reimplementation in numpy, checked
against the properties bitsandbytes documents (256 distinct sorted values, 0 and 1 included,
range [-0.993, 1] signed and [0, 1] unsigned, 7 decades of exponent).

The dynamic map ("dynamic tree" data type): for each exponent e = 0..6, the midpoints of a
linear grid on [0.1, 1] (2^e + 1 points signed, 2^(e+1) + 1 unsigned) scaled by 10^(e-6), the
signed map with their negatives too; then 0 and 1. The grid is torch.linspace's in float32:
step = (1 - 0.1) / (points - 1), point k = 0.1 + step*k for k < points/2, else
1 - step*(points-1-k) (torch's CPU kernel may vectorise with fused multiply-adds, which can move
a value by one ulp; this reference fixes the unfused order, which dama uses).

Quantising a block of 2048 values: absmax = max |x| over the block, x / absmax (float32; 0 when
absmax is 0), the nearest map value (ties to the lower code). Dequantising: map[code] * absmax.
Tensors under 4096 values keep 32-bit states (bitsandbytes' `min_8bit_size`).

The 8-bit AdamW step (per element, float32, in the order of dama_kernels::adamw::AdamWStep):
m = dq(m)*b1 + g*(1-b1); v = dq(v)*b2 + (g*g)*(1-b2); the weight update reads these unquantised
values; then each block's new absmax and codes are stored (m with the signed map, v unsigned).
"""

import base64
import json
import os
import sys

import numpy as np

F32 = np.float32
BLOCK = 2048


def linspace_f32(start, end, points):
    start, end = F32(start), F32(end)
    step = F32((end - start) / F32(points - 1))
    half = points // 2
    out = np.empty(points, dtype=F32)
    for k in range(points):
        out[k] = F32(start + F32(step * F32(k))) if k < half else F32(end - F32(step * F32(points - 1 - k)))
    return out


def dynamic_map(signed):
    values = []
    for e in range(7):
        points = 2 ** e + 1 if signed else 2 ** (e + 1) + 1
        grid = linspace_f32(0.1, 1.0, points)
        means = ((grid[:-1] + grid[1:]) / F32(2.0)).astype(F32)
        scale = F32(10.0 ** (e - 6))
        values += list((means * scale).astype(F32))
        if signed:
            values += list((means * (-scale)).astype(F32))
    values += [F32(0.0), F32(1.0)]
    assert len(values) == 256, len(values)
    out = np.array(sorted(values), dtype=F32)
    assert len(set(out.tolist())) == 256, "distinct values"
    return out


def nearest(code, x):
    """Index of the map value nearest to each x (ties to the lower), by searchsorted."""
    j = np.searchsorted(code, x, side="right") - 1
    j = np.clip(j, 0, 255)
    up = np.minimum(j + 1, 255)
    take_up = (j < 255) & ((code[up] - x).astype(F32) < (x - code[j]).astype(F32))
    return np.where(take_up, up, j).astype(np.uint8)


def quantize(code, x):
    n = len(x)
    blocks = (n + BLOCK - 1) // BLOCK
    absmax = np.zeros(blocks, dtype=F32)
    codes = np.zeros(n, dtype=np.uint8)
    for b in range(blocks):
        xs = x[b * BLOCK:(b + 1) * BLOCK]
        a = F32(np.max(np.abs(xs)))
        absmax[b] = a
        normed = (xs / a).astype(F32) if a > 0 else np.zeros_like(xs)
        codes[b * BLOCK:(b + 1) * BLOCK] = nearest(code, normed)
    return codes, absmax


def dequantize(code, codes, absmax):
    scale = np.repeat(absmax, BLOCK)[: len(codes)]
    return (code[codes] * scale).astype(F32)


def b64f(a):
    """float32 values as base64 of their little-endian bytes (exact, compact)."""
    return base64.b64encode(np.asarray(a, dtype="<f4").tobytes()).decode()


def b64u8(a):
    return base64.b64encode(np.asarray(a, dtype=np.uint8).tobytes()).decode()


def round_trip_cases(signed_map, unsigned_map, rng):
    cases = []

    def add(name, signed, x):
        code = signed_map if signed else unsigned_map
        x = np.asarray(x, dtype=F32)
        codes, absmax = quantize(code, x)
        cases.append({
            "name": name, "signed": signed, "n": len(x), "x": b64f(x), "codes": b64u8(codes),
            "absmax": b64f(absmax), "dequantized": b64f(dequantize(code, codes, absmax)),
        })

    add("normal, one block", True, rng.standard_normal(BLOCK))
    mags = 10.0 ** rng.uniform(-9, 0, 4300)
    add("log-uniform magnitudes 1e-9..1, random signs, 3 blocks (last partial)", True,
        mags * rng.choice([-1.0, 1.0], 4300))
    add("second-moment-like 1e-12..1e-2, 3 blocks (last partial)", False, 10.0 ** rng.uniform(-12, -2, 4200))
    add("uniform [0, 3), one block", False, rng.uniform(0, 3, BLOCK))
    # map values and the midpoints between them times a power-of-two absmax (exact in f32), a
    # zero block, -absmax and +absmax, values below the smallest code
    for signed, code in ((True, signed_map), (False, unsigned_map)):
        mids = ((code[:-1] + code[1:]) / F32(2)).astype(F32)
        edge = np.concatenate([code, mids, code[:1] * F32(2), [F32(0)] * 10, [F32(-1)] if signed else []])
        x = np.zeros(2 * BLOCK + 300, dtype=F32)
        x[: len(edge)] = edge * F32(4.0)
        x[len(edge)] = F32(4.0)  # the block's absmax: codes exactly
        # block 1 stays zero (absmax 0); block 2: tiny values against one large one
        x[2 * BLOCK: 2 * BLOCK + 299] = (10.0 ** rng.uniform(-10, -6, 299)).astype(F32)
        x[2 * BLOCK + 299] = F32(3.0)
        add(f"map values and midpoints, a zero block, tiny values ({'signed' if signed else 'unsigned'})",
            signed, x)
    return cases


def adamw8_case(signed_map, unsigned_map, rng):
    """Three steps of 8-bit AdamW on an f32 variable of 4500 values (blocks 2048, 2048, 404),
    weight decay, a gradient scale on step 3, gradients spanning several decades."""
    n, steps = 4500, 3
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
    p = rng.standard_normal(n).astype(F32)
    p0 = p.copy()
    cm = np.full(n, 127, dtype=np.uint8)  # the signed map's 0
    am = np.zeros((n + BLOCK - 1) // BLOCK, dtype=F32)
    cv = np.zeros(n, dtype=np.uint8)      # the unsigned map's 0
    av = am.copy()
    assert signed_map[127] == 0 and unsigned_map[0] == 0
    record = []
    grads = []
    for t in range(1, steps + 1):
        g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, -1, n)).astype(F32)
        grads.append(b64f(g))
        scale = 0.37 if t == 3 else None
        # the constants, rounded once from f64 (AdamWStep::new)
        decay = F32(1.0 - lr * wd)
        step_size = F32(lr / (1.0 - b1 ** t))
        inv_bc2 = F32(1.0 / np.sqrt(1.0 - b2 ** t))
        gs = (g * F32(scale)).astype(F32) if scale is not None else g
        m = dequantize(signed_map, cm, am)
        v = dequantize(unsigned_map, cv, av)
        p = (p * decay).astype(F32)
        m = ((m * F32(b1)).astype(F32) + (gs * F32(1 - b1)).astype(F32)).astype(F32)
        v = ((v * F32(b2)).astype(F32) + ((gs * gs).astype(F32) * F32(1 - b2)).astype(F32)).astype(F32)
        denom = (np.sqrt(v).astype(F32) * inv_bc2 + F32(eps)).astype(F32)
        p = (p - ((m / denom).astype(F32) * step_size).astype(F32)).astype(F32)
        cm, am = quantize(signed_map, m)
        cv, av = quantize(unsigned_map, v)
        record.append({"scale": scale, "p": b64f(p), "m_codes": b64u8(cm), "m_absmax": b64f(am),
                       "v_codes": b64u8(cv), "v_absmax": b64f(av)})
    return {"n": n, "lr": lr, "beta1": b1, "beta2": b2, "eps": eps, "weight_decay": wd,
            "p0": b64f(p0), "grads": grads, "steps": record}


def cuda_header(signed_map, unsigned_map):
    def rows(code):
        bits = code.view(np.uint32)
        return ",\n".join("    " + ", ".join(f"0x{b:08x}u" for b in bits[i:i + 8]) for i in range(0, 256, 8))
    return (
        "// Generated by scripts/golden_quant8.py: bitsandbytes' dynamic 8-bit maps as f32 bit patterns\n"
        "// (signed for the first moment, unsigned for the second), sorted ascending. Do not edit;\n"
        "// dama-kernels' tests check that these equal quant8::{SIGNED, UNSIGNED}.\n"
        "#pragma once\n"
        "#ifdef DAMA_EMU\n#define QMAP8_SPACE\n#else\n#define QMAP8_SPACE __constant__\n#endif\n"
        f"static QMAP8_SPACE const unsigned int QMAP8_SIGNED_BITS[256] = {{\n{rows(signed_map)}\n}};\n"
        f"static QMAP8_SPACE const unsigned int QMAP8_UNSIGNED_BITS[256] = {{\n{rows(unsigned_map)}\n}};\n"
    )


def main(root):
    signed_map, unsigned_map = dynamic_map(True), dynamic_map(False)
    assert signed_map[0] < -0.99 and signed_map[-1] == 1.0 and unsigned_map[0] == 0.0
    rng = np.random.default_rng(20261215)
    out = {
        "block": BLOCK,
        "signed_map": b64f(signed_map),
        "unsigned_map": b64f(unsigned_map),
        "round_trips": round_trip_cases(signed_map, unsigned_map, rng),
        "adamw8": adamw8_case(signed_map, unsigned_map, rng),
    }
    path = os.path.join(root, "crates/dama-kernels/tests/fixtures/quant8.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f)
        f.write("\n")
    header = os.path.join(root, "crates/dama-kernels/kernels/qmap8.cuh")
    with open(header, "w") as f:
        f.write(cuda_header(signed_map, unsigned_map))
    print(f"wrote {path} ({os.path.getsize(path)} bytes) and {header}")
    print("signed map ends", signed_map[:2], signed_map[126:130], signed_map[-2:])
    print("unsigned map ends", unsigned_map[:3], unsigned_map[-2:])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

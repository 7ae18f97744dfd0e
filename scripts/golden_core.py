#!/usr/bin/env python3
"""Independent float64 reference of the DAMA loss maths (docs/SPEC.md) and golden-fixture generator.

Writes, under crates/dama-core/tests/golden/:
  explain_in.jsonl   one batch step per line (inputs)
  explain_out.jsonl  the expected answer for the same line number
  rng_seed0.json     SplitMix64 + xoshiro256** self-check values for seed 0

Run from the repository root:  python3 scripts/golden_core.py
The output is deterministic (fixed seeds, no dependence on time or environment).

Numerical conventions (to stay as close as possible to a straightforward Rust implementation):
  * all sums are plain left-to-right float64 sums (no pairwise / compensated summation);
  * transcendental functions (exp, log, log1p) come from the C libm through Python's `math`
    (the same libm Rust's std uses on linux-gnu), not numpy's SIMD kernels;
  * std is the population std, two-pass: sqrt(sum((x - mean)^2) / N).
numpy (seeded Generator) is used to draw the case inputs and for float64 array storage.
"""

import json
import math
import os
import sys

import numpy as np

MASK64 = (1 << 64) - 1
CLAMP_MIN = 1e-3
PAPER_EPS = 1e-6

# --------------------------------------------------------------------------------------------
# PRNG: SplitMix64 seeding + xoshiro256**, Lemire's unbiased below(n), open01 in (0, 1].
# --------------------------------------------------------------------------------------------


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK64


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & MASK64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


class Xoshiro256ss:
    def __init__(self, seed=None, state=None):
        if state is not None:
            self.s = [x & MASK64 for x in state]
        else:
            sm = SplitMix64(seed)
            self.s = [sm.next() for _ in range(4)]

    def next_u64(self):
        s = self.s
        result = (_rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def open01(self):
        return float((self.next_u64() >> 11) + 1) * (2.0 ** -53)

    def below(self, n):
        assert 1 <= n <= MASK64
        x = self.next_u64()
        m = x * n
        low = m & MASK64
        if low < n:
            t = ((1 << 64) - n) % n
            while low < t:
                x = self.next_u64()
                m = x * n
                low = m & MASK64
        return m >> 64


def _rng_self_test():
    # SplitMix64(0) reference outputs (Vigna's splitmix64.c).
    sm = SplitMix64(0)
    assert [sm.next() for _ in range(4)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    # xoshiro256** from state [1, 2, 3, 4] (test vector of the rand_xoshiro crate).
    r = Xoshiro256ss(state=[1, 2, 3, 4])
    assert [r.next_u64() for _ in range(10)] == [
        11520, 0, 1509978240, 1215971899390074240, 1216172134540287360,
        607988272756665600, 16172922978634559625, 8476171486693032832,
        10595114339597558777, 2904607092377533576]


# --------------------------------------------------------------------------------------------
# Scalar maths
# --------------------------------------------------------------------------------------------


def sigmoid(x):
    x = float(x)
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def log_sigmoid(x):
    x = float(x)
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


def seq_sum(xs):
    acc = 0.0
    for x in xs:
        acc += float(x)
    return acc


def seq_mean(xs):
    xs = list(xs)
    return seq_sum(xs) / len(xs)


def summary(xs):
    xs = [float(x) for x in xs]
    if min(xs) == max(xs):
        # constant (e.g. beta_m, or beta_c in dpo): the exact answer, not a rounded mean
        return {"mean": xs[0], "std": 0.0, "min": xs[0], "max": xs[0]}
    m = seq_mean(xs)
    var = seq_sum([(x - m) * (x - m) for x in xs]) / len(xs)
    return {"mean": m, "std": math.sqrt(var), "min": min(xs), "max": max(xs)}


# --------------------------------------------------------------------------------------------
# Data-aware part
# --------------------------------------------------------------------------------------------


def hardness(chosen, rejected, estimator):
    """Per-pair delta and edge label from sub-sentence CLIP scores."""
    p, q = len(chosen), len(rejected)
    if p == 0 and q == 0:
        return 0.0, "no_subsentences"
    if p == 0:
        return -1.0, "no_chosen"
    if q == 0:
        return 1.0, "no_rejected"
    if estimator == "probs":
        allc = [float(c) for c in chosen] + [float(c) for c in rejected]
        mx = max(allc)
        e = [math.exp(c - mx) for c in allc]
        z = seq_sum(e)
        probs = [v / z for v in e]
        return seq_sum(probs[:p]) - seq_sum(probs[p:]), "none"
    if estimator == "raw_ratio":
        return seq_sum(chosen) / seq_sum(rejected), "none"
    raise ValueError(estimator)


# --------------------------------------------------------------------------------------------
# Model-aware part
# --------------------------------------------------------------------------------------------


def default_keep(n):
    return max(1, (4 * n) // 5)


def select_deterministic(g, k, filt):
    n = len(g)
    idx = list(range(n))
    if filt == "none":
        return idx
    if filt == "bottom":      # keep the K largest gaps
        order = sorted(idx, key=lambda i: (-g[i], i))
    elif filt == "top":       # keep the K smallest gaps
        order = sorted(idx, key=lambda i: (g[i], i))
    else:
        raise ValueError(filt)
    return sorted(order[:k])


def official_weighted(a, gbar, k, rng):
    """Official 'both' rule. Returns (drawn list, sampling kind)."""
    n = len(a)
    w = [math.exp(-0.5 * (float(ai) - gbar) ** 2) for ai in a]
    total = seq_sum(w)
    if not (total > 0.0) or not math.isfinite(total) or not all(math.isfinite(x) for x in w):
        drawn = [rng.below(n) for _ in range(k)]
        return drawn, "uniform_with_replacement"
    u = [rng.open01() for _ in range(n)]
    group1, group2 = [], []
    for i in range(n):
        if w[i] > 0.0:
            with np.errstate(over="ignore", divide="ignore"):
                key = float(np.float64(math.log(u[i])) / np.float64(w[i]))
            if key == -math.inf:
                group2.append(i)
            else:
                group1.append((key, i))
        else:
            group2.append(i)
    order = [i for _, i in sorted(group1, key=lambda t: (-t[0], t[1]))]
    order += sorted(group2, key=lambda i: (-u[i], i))
    return order[:k], "weighted"


def model_aware(h, beta, gbar, gamma, preset, filt, k, mask, seed):
    """Returns dict with sel_mask, drawn, sampling, alpha_m, gbar_after."""
    n = len(h)
    if preset == "official":
        a = [float(x) for x in h]
        gap = a
    elif preset == "paper":
        r = [beta * float(x) for x in h]
        gap = r if abs(gbar) < PAPER_EPS else [ri / gbar for ri in r]
    else:
        raise ValueError(preset)

    if mask is not None:
        drawn = [i for i in range(n) if mask[i]]
        sampling = "forced"
    elif filt == "both":
        if preset == "official":
            drawn, sampling = official_weighted(a, gbar, k, Xoshiro256ss(seed))
        else:
            d = [(gi - gbar) ** 2 for gi in gap]
            order = sorted(range(n), key=lambda i: (d[i], i))
            drawn = sorted(order[:k])
            sampling = "deterministic"
    else:
        drawn = select_deterministic(gap, k, filt)
        sampling = "deterministic"

    sel = [False] * n
    for i in drawn:
        sel[i] = True

    if preset == "official":
        alpha_m = seq_mean([sigmoid(a[i]) for i in drawn]) / sigmoid(gbar)
        gbar_after = gamma * gbar + (1.0 - gamma) * seq_mean(a)
    else:
        kept = [i for i in range(n) if sel[i]]
        rbar_b = seq_mean([gap[i] for i in kept])
        alpha_m = sigmoid(rbar_b) / sigmoid(gbar)
        gbar_after = gamma * gbar + (1.0 - gamma) * rbar_b
    return {"sel": sel, "drawn": drawn, "sampling": sampling,
            "alpha_m": alpha_m, "gbar_after": gbar_after}


# --------------------------------------------------------------------------------------------
# One batch step
# --------------------------------------------------------------------------------------------


def compute(inp):
    mode, preset, filt = inp["mode"], inp["preset"], inp["filter"]
    beta, gamma, gbar = float(inp["beta"]), float(inp["gamma"]), float(inp["ema_gap"])
    pw = np.array(inp["policy_chosen"], dtype=np.float64)
    pl = np.array(inp["policy_rejected"], dtype=np.float64)
    rw = np.array(inp["ref_chosen"], dtype=np.float64)
    rl = np.array(inp["ref_rejected"], dtype=np.float64)
    n = len(pw)
    assert n >= 1 and len(pl) == len(rw) == len(rl) == n
    k = default_keep(n) if inp.get("keep") is None else int(inp["keep"])
    assert 1 <= k <= n

    h = (pw - rw) - (pl - rl)

    # data-aware
    delta, edges = None, None
    if "delta" in inp:
        delta = [float(x) for x in inp["delta"]]
    elif "scores" in inp:
        delta, edges = [], []
        for sc in inp["scores"]:
            d, e = hardness(sc["chosen"], sc["rejected"], inp["estimator"])
            delta.append(d)
            edges.append(e)
    if delta is not None:
        assert len(delta) == n
        sdm = sigmoid(float(inp["delta_mean"]))
        alpha_d = [sigmoid(d) / sdm for d in delta]
    else:
        assert mode in ("dpo", "mdpo")
        alpha_d = [1.0] * n

    mask_in = inp.get("mask")
    if mask_in is not None:
        assert len(mask_in) == n and any(mask_in)
    ma = model_aware(h, beta, gbar, gamma, preset, filt, k, mask_in, int(inp["seed"]))
    alpha_m = ma["alpha_m"]

    comb = inp["combine"]
    if mode == "dpo":
        raw = [beta] * n
        betas = raw
        loss_mask = [True] * n
    elif mode == "d2po":
        raw = [beta * ad for ad in alpha_d]
        loss_mask = [True] * n
    elif mode == "mdpo":
        raw = [beta * alpha_m] * n
        loss_mask = ma["sel"]
    elif mode == "dama":
        if comb == "product":
            alpha = [ad * alpha_m for ad in alpha_d]
        else:
            rho = float(comb["weighted_sum"])
            alpha = [(1.0 - rho) * alpha_m + rho * ad for ad in alpha_d]
        raw = [beta * al for al in alpha]
        loss_mask = ma["sel"]
    else:
        raise ValueError(mode)
    if mode == "dpo":
        clamped = 0
    else:
        betas = [max(x, CLAMP_MIN) for x in raw]
        clamped = sum(1 for x in raw if x < CLAMP_MIN)

    kept = sum(1 for m in loss_mask if m)
    denom = float(max(kept, 1))
    terms = [-log_sigmoid(betas[i] * float(h[i])) if loss_mask[i] else 0.0 for i in range(n)]
    loss = seq_sum([terms[i] for i in range(n) if loss_mask[i]]) / denom
    grad = [(-betas[i] * sigmoid(-betas[i] * float(h[i])) / denom) if loss_mask[i] else 0.0
            for i in range(n)]

    rc = [beta * float(x) for x in (pw - rw)]
    rr = [beta * float(x) for x in (pl - rl)]
    rcm, rrm = seq_mean(rc), seq_mean(rr)
    stats = {
        "beta_d": summary([beta * ad for ad in alpha_d]),
        "beta_m": summary([beta * alpha_m] * n),
        "beta_c": summary(betas),
        "rewards_chosen": rcm,
        "rewards_rejected": rrm,
        "rewards_margins": rcm - rrm,
        "rewards_accuracy": sum(1 for i in range(n) if rc[i] > rr[i]) / n,
    }
    out = {
        "margins": [float(x) for x in h],
        "delta": delta,
        "delta_edge": edges,
        "alpha_d": alpha_d,
        "alpha_m": alpha_m,
        "beta": [float(b) for b in betas],
        "mask": loss_mask,
        "drawn": ma["drawn"],
        "sampling": ma["sampling"],
        "loss": loss,
        "grad_margins": [float(g) + 0.0 for g in grad],
        "ema_gap_before": gbar,
        "ema_gap": ma["gbar_after"],
        "kept": kept,
        "clamped": clamped,
        "stats": stats,
    }
    _check_finite(out)
    return out


def _check_finite(obj):
    if isinstance(obj, float):
        assert math.isfinite(obj), obj
    elif isinstance(obj, dict):
        for v in obj.values():
            _check_finite(v)
    elif isinstance(obj, list):
        for v in obj:
            _check_finite(v)


# --------------------------------------------------------------------------------------------
# Case construction
# --------------------------------------------------------------------------------------------

MODES = ["dpo", "d2po", "mdpo", "dama"]
PRESETS = ["official", "paper"]
FILTERS = ["none", "bottom", "top", "both"]
AUTHORS_DELTA_MEAN = 0.0482190464911681


def q64(x):
    """Round to a multiple of 1/64 (exact in f32 and f64 for our magnitudes)."""
    return float(np.round(np.float64(x) * 64.0) / 64.0)


def logprobs_for_margins(rng, margins, scale=300.0):
    """Log-prob sums (multiples of 1/64, negative) with exactly the given margins."""
    pw, pl, rw, rl = [], [], [], []
    for hm in margins:
        hm = q64(hm)
        r_w = -q64(rng.uniform(20.0, scale))
        p_l = -q64(rng.uniform(20.0, scale))
        r_l = -q64(rng.uniform(20.0, scale))
        p_w = r_w + (p_l - r_l) + hm
        if p_w >= -1.0:
            shift = float(math.ceil(p_w) + 64)
            r_w -= shift
            p_w -= shift
        assert (p_w - r_w) - (p_l - r_l) == hm
        pw.append(p_w); pl.append(p_l); rw.append(r_w); rl.append(r_l)
    return {"policy_chosen": pw, "policy_rejected": pl, "ref_chosen": rw, "ref_rejected": rl}


def clip_scores(rng, p, q):
    def one():
        return float(np.round(rng.uniform(15.0, 35.0) * 256.0) / 256.0)
    return {"chosen": [one() for _ in range(p)], "rejected": [one() for _ in range(q)]}


def base_case(mode, preset, filt, beta=0.1, gamma=0.9, keep=None, ema_gap=0.0,
              combine="product", seed=0):
    return {"mode": mode, "preset": preset, "filter": filt, "combine": combine,
            "beta": beta, "gamma": gamma, "keep": keep, "ema_gap": ema_gap}


def finish(case, lp, seed, delta=None, scores=None, estimator=None, delta_mean=None,
           mask=None):
    case.update(lp)
    if delta is not None:
        case["delta"] = [float(x) for x in delta]
        case["delta_mean"] = float(delta_mean)
    elif scores is not None:
        case["scores"] = scores
        case["estimator"] = estimator
        case["delta_mean"] = float(delta_mean)
    if mask is not None:
        case["mask"] = [bool(m) for m in mask]
    case["seed"] = int(seed)
    case["dtype"] = "f64"
    return case


def random_delta_source(rng, mode, n, forced=None):
    """Pick 'none' | 'delta' | 'probs' | 'raw_ratio' and build the fields."""
    choices = ["delta", "probs", "raw_ratio"] + (["none"] if mode in ("dpo", "mdpo") else [])
    src = forced or choices[int(rng.integers(len(choices)))]
    dm = [AUTHORS_DELTA_MEAN, 0.0, -0.125, 0.3][int(rng.integers(4))]
    if src == "none":
        return {}
    if src == "delta":
        return {"delta": [float(np.round(x * 4096) / 4096) for x in rng.uniform(-1, 1, n)],
                "delta_mean": dm}
    scores = []
    for _ in range(n):
        p = int(rng.integers(0, 5))
        qq = int(rng.integers(0, 5))
        if rng.uniform() < 0.8:  # mostly non-empty
            p, qq = max(p, 1), max(qq, 1)
        scores.append(clip_scores(rng, p, qq))
    return {"scores": scores, "estimator": src, "delta_mean": dm}


def gen_cases():
    rng = np.random.Generator(np.random.PCG64(20250601))
    cases = []
    seeds = [0, 1, 42, 7, 123456789, 0xDEADBEEFCAFEBABE, MASK64, 2024, 99, 31337]

    # ---- 1. sweep: every mode x preset x filter, twice, with randomised parameters ----
    sweep_ns = [1, 2, 3, 5, 16, 17, 64]
    c = 0
    for rep in range(2):
        for mode in MODES:
            for preset in PRESETS:
                for filt in FILTERS:
                    n = sweep_ns[(c * 3 + rep) % len(sweep_ns)]
                    kc = c % 4
                    keep = None if kc == 0 else (n if kc == 1 else (1 if kc == 2 else
                                                                    int(rng.integers(1, n + 1))))
                    if preset == "official":
                        gbar = [0.0, 0.03125, -0.5, 1.25, 0.75][c % 5]
                        margins = gbar + rng.normal(0.0, 1.5, n)
                    else:
                        gbar = [0.0, 0.03125, -0.5, 2.5, 5e-7, 0.0625][c % 6]
                        margins = rng.normal(1.0, 8.0, n)
                    beta = [0.1, 0.1, 0.5, 0.25, 0.1, 1.0][c % 6]
                    gamma = [0.9, 0.9, 0.5, 0.99, 0.0][c % 5]
                    combine = "product" if c % 3 != 2 else {"weighted_sum": [0.25, 0.5, 0.8][c % 3]}
                    case = base_case(mode, preset, filt, beta=beta, gamma=gamma, keep=keep,
                                     ema_gap=gbar, combine=combine)
                    ds = random_delta_source(rng, mode, n)
                    mask = None
                    if c % 7 == 3 and n >= 2:
                        mask = list(rng.uniform(size=n) < 0.5)
                        if not any(mask):
                            mask[int(rng.integers(n))] = True
                    finish(case, logprobs_for_margins(rng, margins), seeds[c % len(seeds)],
                           mask=mask, **ds)
                    cases.append(case)
                    c += 1

    # ---- 2. official 'both': weighted sampling across seeds and sizes ----
    for j, (n, keep, gbar) in enumerate([(16, None, 0.0), (16, 12, 0.5), (17, None, -0.25),
                                         (64, None, 0.125), (64, 40, 1.0), (5, 5, 0.0),
                                         (3, 1, 0.0), (2, None, -1.0), (1, None, 0.0)]):
        mode = MODES[j % 4]
        margins = gbar + rng.normal(0.0, 1.0, n)
        case = base_case(mode, "official", "both", keep=keep, ema_gap=gbar)
        ds = random_delta_source(rng, mode, n, forced=None if mode in ("dpo", "mdpo") else "delta")
        finish(case, logprobs_for_margins(rng, margins), seeds[(j + 3) % len(seeds)], **ds)
        cases.append(case)
    # same batch, different seeds
    margins = rng.normal(0.0, 1.0, 16)
    lp = logprobs_for_margins(rng, margins)
    for s in [0, 1, 2, MASK64]:
        case = base_case("dama", "official", "both")
        finish(case, dict(lp), s, delta=[q64(x) / 64 for x in rng.uniform(-64, 64, 16)],
               delta_mean=AUTHORS_DELTA_MEAN)
        cases.append(case)

    # ---- 3. fallback: every weight underflows to 0 -> uniform with replacement ----
    for j, (n, keep, gbar, mode) in enumerate([(5, 4, 0.0, "dama"), (64, None, 0.5, "mdpo"),
                                               (1, None, 0.0, "mdpo"), (16, 16, -2.0, "dpo"),
                                               (3, 3, 0.0, "d2po")]):
        margins = [gbar + (50.0 if (i % 2 == 0) else -50.0) + q64(rng.uniform(-3, 3))
                   for i in range(n)]
        case = base_case(mode, "official", "both", keep=keep, ema_gap=gbar)
        ds = {} if mode in ("dpo", "mdpo") else random_delta_source(rng, mode, n, "probs")
        finish(case, logprobs_for_margins(rng, margins), seeds[j], **ds)
        cases.append(case)

    # ---- 4. partial underflow: fewer than K positive weights -> group 2 used ----
    case = base_case("dama", "official", "both", keep=4, ema_gap=0.0)
    finish(case, logprobs_for_margins(rng, [0.25, 60.0, -0.5, -55.0, 48.0]), 11,
           delta=[0.5, -0.25, 0.125, 0.0, 1.0], delta_mean=AUTHORS_DELTA_MEAN)
    cases.append(case)
    case = base_case("mdpo", "official", "both", keep=None, ema_gap=1.0)
    m = [1.0 + (q64(rng.normal()) if i < 5 else (45.0 + i)) for i in range(16)]
    finish(case, logprobs_for_margins(rng, m), 12)
    cases.append(case)
    # subnormal weight (|A - g| = 38.5 -> exp(-741.125)) gives key = -inf -> group 2,
    # a tiny normal weight (|A - g| = 37.5 -> exp(-703.125)) stays in group 1.
    case = base_case("mdpo", "official", "both", keep=4, ema_gap=0.0)
    finish(case, logprobs_for_margins(rng, [38.5, 0.0, -37.5, 60.0, -38.5]), 13)
    cases.append(case)
    case = base_case("dama", "official", "both", keep=3, ema_gap=0.0)
    finish(case, logprobs_for_margins(rng, [37.5, -37.5, 38.5, 0.5, 100.0]), 14,
           delta=[0.25, 0.5, 0.75, -0.5, 0.0], delta_mean=0.0)
    cases.append(case)

    # ---- 5. clamp bites ----
    n = 16
    for mode in ["d2po", "mdpo", "dama"]:
        case = base_case(mode, "official", "both", beta=5e-4, ema_gap=0.0)
        finish(case, logprobs_for_margins(rng, rng.normal(0, 1, n)), 21,
               delta=list(rng.uniform(-1, 1, n)), delta_mean=AUTHORS_DELTA_MEAN)
        cases.append(case)
    # tiny alpha_D from extreme deltas (only some pairs clamp)
    case = base_case("d2po", "paper", "none", beta=0.1, ema_gap=0.5)
    finish(case, logprobs_for_margins(rng, rng.normal(0, 3, 5)), 22,
           delta=[-20.0, 0.5, -8.0, 1.0, -4.5], delta_mean=0.0)
    cases.append(case)
    case = base_case("dama", "paper", "top", beta=0.1, ema_gap=0.5, keep=3)
    finish(case, logprobs_for_margins(rng, rng.normal(0, 3, 5)), 22,
           delta=[-20.0, 0.5, -8.0, 1.0, -4.5], delta_mean=0.0)
    cases.append(case)
    # tiny alpha_M (official, deterministic filter, margins far below the EMA gap)
    case = base_case("mdpo", "official", "bottom", beta=0.1, ema_gap=5.0, keep=3)
    finish(case, logprobs_for_margins(rng, [-20.0, -21.5, -19.25, -22.0, -30.0]), 23)
    cases.append(case)
    case = base_case("dama", "official", "top", beta=0.1, ema_gap=5.0, keep=3,
                     combine={"weighted_sum": 0.5})
    finish(case, logprobs_for_margins(rng, [-20.0, -21.5, -19.25, -22.0, -30.0]), 23,
           delta=[0.0, 0.25, -0.25, 0.5, 1.0], delta_mean=AUTHORS_DELTA_MEAN)
    cases.append(case)
    # tiny alpha_M (paper, |g| < 1e-6 so R~ = R)
    case = base_case("mdpo", "paper", "both", beta=0.5, ema_gap=1e-7)
    finish(case, logprobs_for_margins(rng, [-40.0, -41.0, -39.5, -40.25, -44.0]), 24)
    cases.append(case)
    case = base_case("dama", "paper", "bottom", beta=0.5, ema_gap=1e-7, keep=4)
    finish(case, logprobs_for_margins(rng, [-40.0, -41.0, -39.5, -40.25, -44.0]), 24,
           scores=[clip_scores(rng, 2, 3) for _ in range(5)], estimator="probs",
           delta_mean=AUTHORS_DELTA_MEAN)
    cases.append(case)

    # ---- 6. ties in the gaps (deterministic filters) ----
    tied = [0.5, -1.25, 0.5, 2.0, -1.25, 0.5, 2.0, 0.0]
    for preset in PRESETS:
        for filt in ["bottom", "top", "none"]:
            case = base_case("mdpo", preset, filt, beta=0.25, ema_gap=0.5, keep=5)
            finish(case, logprobs_for_margins(rng, tied), 31)
            cases.append(case)
    # paper 'both' with exact ties in d_i: R~ symmetric around g (beta, g dyadic)
    # beta=0.5, g=0.5: h=2 -> R~=2 (d=2.25), h=-1 -> R~=-1 (d=2.25), h=1 -> R~=1 (d=0.25),
    # h=0 -> R~=0 (d=0.25)
    case = base_case("dama", "paper", "both", beta=0.5, ema_gap=0.5, keep=3)
    finish(case, logprobs_for_margins(rng, [2.0, -1.0, 1.0, 0.0, 2.0, -1.0]), 32,
           delta=[0.0, 0.5, -0.5, 0.25, -0.25, 1.0], delta_mean=0.0)
    cases.append(case)
    # same with |g| < 1e-6 (R~ = R): beta=0.25, h=4 -> 1, h=-4 -> -1 (equal d)
    case = base_case("mdpo", "paper", "both", beta=0.25, ema_gap=0.0, keep=2)
    finish(case, logprobs_for_margins(rng, [4.0, -4.0, 8.0, -4.0, 4.0]), 33)
    cases.append(case)
    # official bottom/top with all margins equal
    for filt in ["bottom", "top"]:
        case = base_case("dama", "official", filt, ema_gap=0.0, keep=2)
        finish(case, logprobs_for_margins(rng, [1.5] * 4), 34,
               delta=[0.1, 0.2, 0.3, 0.4], delta_mean=0.1)
        cases.append(case)

    # ---- 7. margins of magnitude 1e4 ----
    big = [10000.0, -10000.0, 9999.5, -9999.984375, 10000.015625]
    for mode, preset, filt, gbar in [("dpo", "official", "none", 0.0),
                                     ("dama", "official", "both", 0.0),       # -> fallback
                                     ("dama", "paper", "both", 0.0),
                                     ("mdpo", "paper", "bottom", 2.0),
                                     ("d2po", "official", "top", -3.0)]:
        case = base_case(mode, preset, filt, ema_gap=gbar)
        ds = {} if mode in ("dpo", "mdpo") else {
            "delta": [0.5, -0.5, 0.0, 1.0, -1.0], "delta_mean": AUTHORS_DELTA_MEAN}
        finish(case, logprobs_for_margins(rng, big, scale=20000.0), 41, **ds)
        cases.append(case)
    # weighted sampling around a large EMA gap
    case = base_case("dama", "official", "both", ema_gap=10000.25, keep=3)
    finish(case, logprobs_for_margins(rng, [10000.0, 10001.5, 9999.0, 10000.25, 9998.75],
                                       scale=20000.0), 42,
           delta=[0.0, 0.25, 0.5, 0.75, 1.0], delta_mean=0.5)
    cases.append(case)

    # ---- 8. paper preset, |g| < 1e-6 and its boundary ----
    for gbar, mode in [(0.0, "dama"), (5e-7, "mdpo"), (-9.5e-7, "dama"), (1e-6, "mdpo"),
                       (-1e-6, "dama"), (0.001, "mdpo")]:
        case = base_case(mode, "paper", "both", ema_gap=gbar)
        ds = {} if mode == "mdpo" else random_delta_source(rng, mode, 16, "raw_ratio")
        finish(case, logprobs_for_margins(rng, rng.normal(0.5, 4.0, 16)), 51, **ds)
        cases.append(case)

    # ---- 9. scores edge cases, both estimators ----
    def edge_scores():
        return [clip_scores(rng, 3, 2), {"chosen": [], "rejected": [22.5, 30.25]},
                {"chosen": [18.0, 27.75, 31.5], "rejected": []},
                {"chosen": [], "rejected": []}, clip_scores(rng, 1, 1),
                {"chosen": [25.0], "rejected": [25.0]}]
    for est in ["probs", "raw_ratio"]:
        for mode, preset, filt in [("d2po", "official", "none"), ("dama", "paper", "both"),
                                   ("dama", "official", "both"), ("mdpo", "paper", "top")]:
            case = base_case(mode, preset, filt, ema_gap=0.25)
            finish(case, logprobs_for_margins(rng, rng.normal(0.25, 1.0, 6)), 61,
                   scores=edge_scores(), estimator=est,
                   delta_mean=AUTHORS_DELTA_MEAN if est == "probs" else 1.0)
            cases.append(case)
    # all pairs without sub-sentences
    case = base_case("d2po", "official", "both", ema_gap=0.0)
    finish(case, logprobs_for_margins(rng, [0.5, -0.5, 1.0]), 62,
           scores=[{"chosen": [], "rejected": []}] * 3, estimator="probs", delta_mean=0.0)
    cases.append(case)
    # large CLIP spread (softmax max-subtraction matters)
    case = base_case("dama", "official", "both", ema_gap=0.0, keep=2)
    finish(case, logprobs_for_margins(rng, [0.5, -0.5, 1.0]), 63,
           scores=[{"chosen": [900.0, 15.0], "rejected": [899.5]},
                   {"chosen": [15.0], "rejected": [35.0, 34.0, 33.0, 32.0]},
                   {"chosen": [1000.0], "rejected": [1000.0]}],
           estimator="probs", delta_mean=AUTHORS_DELTA_MEAN)
    cases.append(case)

    # ---- 10. forced masks ----
    fm = [(m, p, f) for m in MODES for p in PRESETS for f in ["both", "none"]]
    for j, (mode, preset, filt) in enumerate(fm[::2] + [("dama", "paper", "bottom"),
                                                       ("mdpo", "official", "top")]):
        n = [5, 16, 3, 17][j % 4]
        mask = list(rng.uniform(size=n) < 0.6)
        if j % 5 == 0:
            mask = [False] * n
            mask[n - 1] = True          # a single kept pair
        elif j % 5 == 1:
            mask = [True] * n           # everything kept
        if not any(mask):
            mask[0] = True
        gbar = [0.0, 0.5, -0.25, 1e-7][j % 4]
        case = base_case(mode, preset, filt, ema_gap=gbar, keep=[None, 2, n][j % 3],
                         combine="product" if j % 2 else {"weighted_sum": 0.3})
        margins = (gbar + rng.normal(0.0, 1.0, n)) if preset == "official" else rng.normal(1, 5, n)
        ds = random_delta_source(rng, mode, n)
        finish(case, logprobs_for_margins(rng, margins), seeds[j % len(seeds)], mask=mask, **ds)
        cases.append(case)

    # ---- 11. weighted_sum with rho at the ends, gamma at the ends ----
    for rho, gamma in [(0.0, 0.0), (1.0, 1.0), (0.5, 0.9)]:
        case = base_case("dama", "official", "both", ema_gap=0.25, gamma=gamma,
                         combine={"weighted_sum": rho})
        finish(case, logprobs_for_margins(rng, rng.normal(0.25, 1.0, 17)), 71,
               delta=list(np.round(rng.uniform(-1, 1, 17) * 1024) / 1024),
               delta_mean=AUTHORS_DELTA_MEAN)
        cases.append(case)

    # ---- 12. N = 1 through all filters, K = N = 1 ----
    for preset in PRESETS:
        for filt in FILTERS:
            case = base_case("dama", preset, filt, ema_gap=0.5 if preset == "paper" else 0.0,
                             keep=1 if filt != "none" else None)
            finish(case, logprobs_for_margins(rng, [0.75]), 81, delta=[0.25],
                   delta_mean=AUTHORS_DELTA_MEAN)
            cases.append(case)

    # ---- 13. dpo with delta given (alpha_d reported but unused), beta > 1 ----
    case = base_case("dpo", "official", "both", beta=2.0, ema_gap=-0.75)
    finish(case, logprobs_for_margins(rng, rng.normal(-0.75, 1.0, 16)), 91,
           scores=[clip_scores(rng, 2, 2) for _ in range(16)], estimator="raw_ratio",
           delta_mean=1.0)
    cases.append(case)
    return cases


def main():
    _rng_self_test()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gdir = os.path.join(root, "crates", "dama-core", "tests", "golden")
    os.makedirs(gdir, exist_ok=True)

    r = Xoshiro256ss(0)
    nxt = [r.next_u64() for _ in range(3)]
    r = Xoshiro256ss(0)
    o01 = [r.open01() for _ in range(3)]
    r = Xoshiro256ss(0)
    b10 = [r.below(10) for _ in range(5)]
    print("seed 0 next_u64:", nxt)
    print("seed 0 open01:  ", o01)
    print("seed 0 below(10):", b10)
    with open(os.path.join(gdir, "rng_seed0.json"), "w") as f:
        f.write(json.dumps({"seed": 0, "next_u64": nxt, "open01": o01, "below_10": b10}) + "\n")

    cases = gen_cases()
    outs = [compute(c) for c in cases]
    dump = lambda o: json.dumps(o, separators=(",", ":"), allow_nan=False)
    with open(os.path.join(gdir, "explain_in.jsonl"), "w") as f:
        for c in cases:
            f.write(dump(c) + "\n")
    with open(os.path.join(gdir, "explain_out.jsonl"), "w") as f:
        for o in outs:
            f.write(dump(o) + "\n")

    # summary
    kinds = {}
    for o in outs:
        kinds[o["sampling"]] = kinds.get(o["sampling"], 0) + 1
    combos = {(c["mode"], c["preset"], c["filter"]) for c in cases}
    print(f"cases: {len(cases)}")
    print("per sampling kind:", dict(sorted(kinds.items())))
    print(f"mode x preset x filter combinations covered: {len(combos)}/32")
    print("N values:", sorted({len(c["policy_chosen"]) for c in cases}))
    print("cases with clamp > 0:", sum(1 for o in outs if o["clamped"] > 0))
    print("weighted cases that reach group 2 (zero or subnormal weight drawn):",
          sum(1 for c, o in zip(cases, outs) if o["sampling"] == "weighted"
              and any(math.exp(-0.5 * (o["margins"][i] - c["ema_gap"]) ** 2)
                      < 2.2250738585072014e-308 for i in o["drawn"])))
    edges = {}
    for o in outs:
        for e in (o["delta_edge"] or []):
            edges[e] = edges.get(e, 0) + 1
    print("delta_edge counts:", dict(sorted(edges.items())))
    print("written to", gdir)


if __name__ == "__main__":
    sys.exit(main())

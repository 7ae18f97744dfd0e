#!/usr/bin/env python3
"""README's "Speed on one GPU" tables, recomputed from the committed GPU results.

    python3 scripts/gpu_table.py            prints the two tables (markdown)
    python3 scripts/gpu_table.py --check    exits 1 unless README.md contains them verbatim

Reads crates/dama-kernels/results/*.jsonl (the lines `scripts/gpu-bench.sh` and the hand runs
of 2026-11-26 wrote) and takes from them only what they record: step times, pairs per step,
optimizer setting and state size, peak memory and how it was measured. The MFU of each side
is that side's executed FLOPs (scripts/bench/flops.py: the same counting rules for both; dama
shares the prefix, encodes each image once and runs the head on the scored rows only) per
second, over the 989.4 TFLOP/s dense bf16 peak. Facts the results do not record are written
"not recorded". Standard library only.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
import flops  # noqa: E402

RESULTS = ROOT / "crates" / "dama-kernels" / "results"


def find(name, **match):
    """The first line of results file `name` with every `match` field equal (and a result)."""
    for line in open(RESULTS / name):
        r = json.loads(line) if line.strip() else {}
        if all(r.get(k) == v for k, v in match.items()) and (
                "pairs_per_s" in r or "step_ms" in r or "sdpa" in r):
            return r
    sys.exit(f"gpu_table: no line {match} in {name}")


RUN2, RUN4, RUN5, RUN6 = (f"h200-2026-11-26-{r}.jsonl" for r in ("run2", "run4", "run5", "run6-batches"))
# (model, pairs, dama's line, PyTorch's line, whether both ran in the same call)
STEPS = [
    ("1b", 8, (RUN4, dict(stage="step1b_candle")), (RUN2, dict(stage="step1b_torch")),
     "no: dama run 4, PyTorch run 2"),
    ("7b", 4, (RUN5, dict(stage="step7b_candle")), (RUN2, dict(stage="step7b_torch")),
     "no: dama run 5, PyTorch run 2"),
    ("7b", 8, (RUN6, dict(side="candle", config="llava-7b")), (RUN6, dict(side="torch", config="llava-7b")),
     "yes (run 6), two processes"),
    ("1b", 16, (RUN6, dict(side="candle", config="llava-1b")), (RUN6, dict(side="torch", config="llava-1b")),
     "yes (run 6), two processes"),
]
OPTIM = {"fused": "fp32 master", "fused-sr": "bf16-sr master"}


def gib(mib):
    return f"{mib / 1024:.1f} GiB"


def dama_memory(r):
    if r.get("peak_mem_mib") is not None:
        return f"{gib(r['peak_mem_mib'])} (nvidia-smi peak)"
    return (f"{r['device_mem_used_gib_max_after_step']:.1f} GiB in use after a step "
            "(peak not recorded)")


def torch_memory(r):
    allocated = f"{r['peak_mem_gib']:.1f} GiB allocated"
    if r.get("peak_mem_mib") is not None:
        return f"{gib(r['peak_mem_mib'])} (nvidia-smi peak; {allocated})"
    return f"{allocated} (nvidia-smi peak not recorded)"


def tables():
    out = ["| shape, pairs per step | dama pairs/s | PyTorch pairs/s | ratio | dama MFU | "
           "PyTorch MFU | equal-work ratio (MFU) | dama memory | PyTorch memory | same call |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    work = []
    for lm, pairs, (dfile, dsel), (tfile, tsel), same in STEPS:
        d, t = find(dfile, **dsel), find(tfile, **tsel)
        assert d["pairs_per_step"] == pairs == t["pairs_per_step"], (d, t)
        fd, ft = flops.dama_step_flops(lm, pairs), flops.torch_step_flops(lm, pairs, vision_once=False)
        md, mt = flops.mfu(fd["total"], d["step_s"]), flops.mfu(ft["total"], t["step_s"])
        out.append(f"| llava-{lm}, {pairs}, {OPTIM[d['optim']]} ({d['optim_state_gib']:.1f} GiB state) "
                   f"| {d['pairs_per_s']:.2f} | {t['pairs_per_s']:.2f} | {d['pairs_per_s'] / t['pairs_per_s']:.2f}× "
                   f"| {md:.3f} | {mt:.3f} | {md / mt:.2f}× | {dama_memory(d)} | {torch_memory(t)} | {same} |")
        work.append((lm, pairs, fd["total"], ft["total"]))
    fused = find(RUN2, stage="block_candle", probe="dama_block_fused_bf16")
    torch = find(RUN2, stage="block_torch")["sdpa"]
    f = flops.block_flops()
    out.append(f"| LLaMA-1B block fwd+bwd (equal work) | {fused['step_ms']:.2f} ms | {torch['step_ms']:.2f} ms (SDPA) "
               f"| {torch['step_ms'] / fused['step_ms']:.2f}× | {flops.mfu(f, fused['step_ms'] / 1e3):.3f} "
               f"| {flops.mfu(f, torch['step_ms'] / 1e3):.3f} | {torch['step_ms'] / fused['step_ms']:.2f}× "
               f"| {gib(fused['peak_mem_mib'])} (nvidia-smi peak) "
               f"| {gib(find(RUN2, stage='block_torch')['peak_mem_mib'])} (nvidia-smi peak) | yes (run 2) |")
    out += ["", "| executed TFLOP per step | dama | PyTorch |", "| --- | --- | --- |"]
    for lm, pairs, fd, ft in work:
        out.append(f"| llava-{lm}, {pairs} pairs | {fd / 1e12:.1f} | {ft / 1e12:.1f} |")
    out.append(f"| LLaMA-1B block | {f / 1e12:.2f} | {f / 1e12:.2f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = tables()
    if sys.argv[1:] == ["--check"]:
        if text not in (ROOT / "README.md").read_text():
            sys.exit("gpu_table: README.md's GPU tables differ from the results; paste:\n\n" + text)
        print("gpu_table: README.md's GPU tables match the results")
    else:
        sys.stdout.write(text)

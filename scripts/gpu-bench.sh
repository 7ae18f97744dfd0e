#!/usr/bin/env bash
# GPU checks and benchmarks of crates/dama-kernels (the fused ops of issue 7), for the GPU
# machine, which has no cargo and no internet: the bench binary is built here and carried.
#
# Here (CPU machine), once:
#   source ../shared/cuda/setup-cuda13.sh
#   cargo build --release -p dama-kernels --features cuda --example gpu_bench
#   scripts/gpu-bench.sh --prepare        # strips + gzips the binary and copies ../shared/bench
#                                         # into .gpu/ (ignored through .git/info/exclude)
# There (device tool), in the repository root, carrying .gpu:
#   run(command="scripts/gpu-bench.sh", carry=[".gpu"], timeout_s=600)
#   STAGES="check block" scripts/gpu-bench.sh        # a subset (default: all, in this order)
#
# Stages, in order of value; each has its own time limit, a failed one does not stop the rest:
#   check   CUDA vs CPU outputs and gradients of every op, f32 and bf16 (exit 1 on a mismatch),
#           attention on the plain-FMA kernels (DAMA_CUDA_ATTN=fma)
#   check_mma  the attention checks again on the tensor-core kernels (DAMA_CUDA_ATTN=mma; bf16
#           with d in 32/64/80/96/128, the rest falls back to FMA), in a process of its own so
#           that a crash there cannot hide the other results. If it passes, the later stages
#           run with DAMA_CUDA_ATTN=mma, else with fma (ATTN=fma|mma forces one).
#   block   the LLaMA-1B-shaped block probe, fused and composed candle, vs torch_block.py
#           (goal: fused within 1.2x of PyTorch SDPA's 5.7 ms on an H200)
#   block_fma  the block probe's candle part with the FMA attention (for the before/after)
#   ops     fused vs composed forward+backward of each op at the block's shapes (seeded with
#           an all-ones output gradient), plus the fused forward alone, plus the attention
#           once per kernel family (fma, then mma)
#   step1b  one full DAMA step, llava-1b shape, 8 pairs, vs torch_dpo_step.py 1b:8
#   step7b  the same, llava-7b shape, 4 pairs, vs torch_dpo_step.py 7b:4 (goal: >= 2x the
#           anchor's pairs/s); needs about 80 GB: use nvidia-h200
# TORCH=0 skips the PyTorch anchors (their earlier numbers are in ../shared/NOTES.md).
#
# Output: results.jsonl (every JSON line, tagged with its stage, exit status and the peak
# device memory sampled by nvidia-smi), log.txt (everything printed), summary.txt (the
# ratios); under $OUT when set (the device tool), else .gpu/out.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
gpu="$root/.gpu"

if [ "${1:-}" = "--prepare" ]; then
    bin="${2:-$root/target/release/examples/gpu_bench}"
    [ -x "$bin" ] || bin="$root/target/debug/examples/gpu_bench"
    [ -x "$bin" ] || { echo "gpu-bench: build the gpu_bench example with --features cuda first" >&2; exit 1; }
    mkdir -p "$gpu/bench"
    tmp=$(mktemp)
    cp "$bin" "$tmp"
    command -v strip >/dev/null && strip "$tmp"
    gzip -9 -c "$tmp" > "$gpu/gpu_bench.gz"
    rm -f "$tmp"
    cp -f "$root/../shared/bench/"*.py "$gpu/bench/"
    exclude="$root/.git/info/exclude"
    grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
    ls -la "$gpu" "$gpu/bench"
    echo "gpu-bench: ready; on the device: run(command=\"scripts/gpu-bench.sh\", carry=[\".gpu\"], timeout_s=600)"
    exit 0
fi

out="${OUT:-$gpu/out}"
mkdir -p "$out"
results="$out/results.jsonl"
log="$out/log.txt"
: > "$results"
: > "$log"
work=$(mktemp -d)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

[ -f "$gpu/gpu_bench.gz" ] || { echo "gpu-bench: no .gpu/gpu_bench.gz (run --prepare here and carry .gpu)" | tee -a "$log"; exit 1; }
gunzip -c "$gpu/gpu_bench.gz" > "$work/gpu_bench" && chmod +x "$work/gpu_bench"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

# stage NAME LIMIT_S CMD...: runs CMD with a time limit, samples device memory, appends its
# JSON lines to results.jsonl tagged with the stage, its exit status and the peak memory.
stage() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*" | tee -a "$log"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$work/mem_$name" 2>/dev/null &
    local smi=$!
    local t0=$SECONDS
    timeout "$limit" "$@" > "$work/$name.out" 2> "$work/$name.err"
    local rc=$?
    kill "$smi" 2>/dev/null
    wait "$smi" 2>/dev/null
    local peak
    peak=$(sort -n "$work/mem_$name" 2>/dev/null | tail -1)
    cat "$work/$name.out" "$work/$name.err" >> "$log"
    grep '^{' "$work/$name.out" | sed "s/^{/{\"stage\":\"$name\",\"rc\":$rc,\"peak_mem_mib\":${peak:-null},\"gpu\":\"$device\",/" >> "$results"
    echo "=== $name: exit $rc, $((SECONDS - t0)) s, peak device memory ${peak:-?} MiB" | tee -a "$log"
    [ "$name" = check ] && check_rc=$rc
    [ "$name" = check_mma ] && mma_rc=$rc
}
check_rc=0
mma_rc=unset

# the attention kernels of the stages after the checks: mma once check_mma has passed
attn() {
    if [ -n "${ATTN:-}" ]; then echo "$ATTN"
    elif [ "$mma_rc" = 0 ]; then echo mma
    else echo fma; fi
}

torch=${TORCH:-1}
for s in ${STAGES:-check check_mma block ops step1b step7b}; do
    case "$s" in
        check) stage check 120 env DAMA_CUDA_ATTN=fma "$work/gpu_bench" check ;;
        check_mma) stage check_mma 90 env DAMA_CUDA_ATTN=mma "$work/gpu_bench" check --only attention ;;
        block)
            stage block_candle 90 env DAMA_CUDA_ATTN="$(attn)" "$work/gpu_bench" block --iters 5
            [ "$torch" = 1 ] && stage block_torch 90 python3 "$gpu/bench/torch_block.py"
            ;;
        block_fma) stage block_fma 90 env DAMA_CUDA_ATTN=fma "$work/gpu_bench" block --iters 5 ;;
        ops) stage ops 90 env DAMA_CUDA_ATTN="$(attn)" "$work/gpu_bench" ops --iters 5 ;;
        step1b)
            stage step1b_candle 120 env DAMA_CUDA_ATTN="$(attn)" "$work/gpu_bench" step --model 1b --pairs 8 --steps 3
            [ "$torch" = 1 ] && stage step1b_torch 120 env -u OUT python3 "$gpu/bench/torch_dpo_step.py" 1b:8
            ;;
        step7b)
            stage step7b_candle 200 env DAMA_CUDA_ATTN="$(attn)" "$work/gpu_bench" step --model 7b --pairs 4 --steps 3
            [ "$torch" = 1 ] && stage step7b_torch 200 env -u OUT python3 "$gpu/bench/torch_dpo_step.py" 7b:4
            ;;
        *) echo "gpu-bench: unknown stage $s" | tee -a "$log" ;;
    esac
done

# The ratios the issue asks for, from whatever stages ran.
python3 - "$results" <<'PY' | tee "$out/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = lambda stage: [r for r in rows if r["stage"] == stage]
kernel = lambda stage: next((r["attn_kernel"] for r in by(stage) if "attn_kernel" in r), "?")
for st in ("check", "check_mma"):
    checks = [r for r in by(st) if "check" in r and r["check"] != "all"]
    if checks:
        bad = [r for r in checks if not r.get("ok")]
        kinds = sorted({r.get("kernel", "-") for r in checks})
        print(f"{st}: {len(checks) - len(bad)}/{len(checks)} passed (attention kernels: {', '.join(kinds)})")
        for r in bad:
            print(f"  FAILED {r['check']} {r['dtype']} [{r.get('kernel', '-')}]: out {r['out_err']:.2e}, "
                  f"grads {r['grad_errs']}, tol {r['tol']} {r.get('error', '')}")
    elif by(st):
        print(f"{st}: no check line (exit {by(st)[0]['rc']}; crashed? see log.txt)")
torch = next(iter(by("block_torch")), None)
for st in ("block_candle", "block_fma"):
    cand = {r["probe"]: r for r in by(st) if "probe" in r}
    f = cand.get("dama_block_fused_bf16")
    if f:
        line = (f"block probe [{st}, attention {kernel(st)}]: candle fused {f['step_ms']:.2f} ms "
                f"(fwd {f['fwd_ms']:.2f}, bwd {f['bwd_ms']:.2f})")
        c = cand.get("dama_block_composed_bf16")
        if c:
            line += f", composed {c['step_ms']:.2f} ms ({c['step_ms'] / f['step_ms']:.2f}x)"
        if torch and "sdpa" in torch:
            line += (f"; torch sdpa {torch['sdpa']['step_ms']} ms, eager {torch['eager']['step_ms']} ms;"
                     f" fused / sdpa = {f['step_ms'] / torch['sdpa']['step_ms']:.2f} (goal <= 1.2)")
        print(line)
if by("ops"):
    print(f"ops (attention {kernel('ops')}):")
for r in by("ops"):
    if "op" in r:
        print(f"op {r['op']:<24} fused {r['fused_ms']:8.2f} ms (fwd {r.get('fused_fwd_ms', float('nan')):6.2f})"
              f"  composed {r['composed_ms']:8.2f} ms  {r['speedup']:.2f}x")
for m in ("1b", "7b"):
    c = next((r for r in by(f"step{m}_candle") if "pairs_per_s" in r), None)
    t = next((r for r in by(f"step{m}_torch") if "pairs_per_s" in r), None)
    if c:
        line = (f"llava-{m} step [attention {kernel(f'step{m}_candle')}]: candle {c['pairs_per_s']:.2f} pairs/s ({c['step_s']:.3f} s/step, "
                f"MFU {c['mfu_vs_989_anchor_flops']:.3f} with the anchor's FLOPs, peak {c['peak_mem_mib']} MiB)")
        if t:
            line += (f"; torch {t['pairs_per_s']} pairs/s (MFU {t['mfu_vs_989']}, {t['peak_mem_gib']} GiB);"
                     f" ratio {c['pairs_per_s'] / t['pairs_per_s']:.2f}x" + (" (goal >= 2)" if m == "7b" else ""))
        print(line)
    elif any(r.get("rc") for r in by(f"step{m}_candle")):
        print(f"llava-{m} step: candle run failed (see log.txt)")
PY
rm -rf "$work"
# a failed or crashed CUDA-vs-CPU check fails the run
[ "$check_rc" = 0 ] || exit 1
[ "$mma_rc" = unset ] || [ "$mma_rc" = 0 ] || exit 1
exit 0

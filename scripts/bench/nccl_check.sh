#!/usr/bin/env bash
# Issue 14's GPU proof, run by scripts/gpu-bench.sh's stage nccl (after stage demo, whose SFT
# model and scored preference pairs it trains on): the NCCL engine with 2 ranks on the one GPU
# (NCCL >= 2.30 with NCCL_MULTI_RANK_GPU_ENABLE=1) gives the 1-rank run's weights, with the
# gradients' sum started inside the backward (the default), after it (--no-overlap-grads),
# and under ZeRO-2. f32 weights, MDPO, one epoch of batches of 8 in micro-batches of 2, lr
# 1e-3, buckets of 50,000 elements (several per step on the demo model).
# Prints one JSON line per comparison (the stage collects them) and exits 1 when a run fails or
# its weights differ from the 1-rank run's by more than 1e-4.
#
# Usage: nccl_check.sh DAMA_NATIVE DEMO_DIR WORK_DIR
# NCCL_CHECK_DEVICE=cpu NCCL_CHECK_ENGINE=mpi runs the same comparison on the CPU over MPI (with
# a dama-native built with --features mpi), which is how the script itself is tried without a GPU.
set -u
bin=$1 demo=$2 work=$3
device=${NCCL_CHECK_DEVICE:-cuda} engine=${NCCL_CHECK_ENGINE:-nccl}
mkdir -p "$work"

run_json=$(find "$demo" -path '*runs/dama/run.json' | head -1)
[ -n "$run_json" ] || { echo "nccl_check: no runs/dama/run.json under $demo (stage demo must run first)"; exit 1; }
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$run_json" "$1"; }
model=$(field model) data=$(field data)

# libnccl.so.2: the system's, else a python wheel's (torch's nvidia-nccl-*), found by name.
nccl_version=none
if [ "$engine" = nccl ]; then
if ! ldconfig -p 2>/dev/null | grep -q 'libnccl.so.2'; then
    lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
    [ -n "$lib" ] && [ -e "$lib/libnccl.so.2" ] || lib=$(dirname "$(find / -name 'libnccl.so.2' -not -path '/proc/*' 2>/dev/null | head -1)" 2>/dev/null)
    [ -n "$lib" ] && [ -e "$lib/libnccl.so.2" ] || { echo "nccl_check: no libnccl.so.2 on this machine"; exit 1; }
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "nccl_check: libnccl.so.2 from $lib"
fi
[ -e "${lib:-}/libnccl.so.2" ] && ln -sf libnccl.so.2 "$work/libnccl.so" 2>/dev/null
export LD_LIBRARY_PATH="$work:${LD_LIBRARY_PATH:-}"
nccl_version=$(python3 -c 'import ctypes; v = ctypes.c_int(); ctypes.CDLL("libnccl.so.2").ncclGetVersion(ctypes.byref(v)); print(v.value)' 2>/dev/null || echo unknown)
echo "nccl_check: NCCL version code $nccl_version (2.30.0 is 23000)"
fi

common=(train --device "$device" --precision f32 --mode mdpo --batch-size 8 --micro-batch 2
        --epochs 1 --lr 1e-3 --warmup-ratio 0 --seed 3 --save-every 0 --dist-timeout 120
        --bucket-size 50000
        --model "$model" --data "$data")
failed=0
train() {
    local name=$1
    shift
    local t0=$SECONDS
    if NCCL_MULTI_RANK_GPU_ENABLE=1 "$bin" "${common[@]}" --out "$work/$name" "$@" \
        > "$work/$name.log" 2>&1; then
        echo "nccl_check: $name done in $((SECONDS - t0)) s"
    else
        echo "nccl_check: $name failed (exit $?); its last lines:"
        tail -20 "$work/$name.log"
        failed=1
    fi
}
train one
train two --nproc 2 --dist-engine "$engine"
train two_after --nproc 2 --dist-engine "$engine" --no-overlap-grads
train two_zero2 --nproc 2 --dist-engine "$engine" --zero 2

python3 - "$work" "$nccl_version" "$model" "$engine" <<'PY' || failed=1
import glob, json, os, sys
import numpy as np

work, version, model, engine = sys.argv[1:5]


def weights(folder):
    """name -> f32 array, from the folder's *.safetensors (8-byte header length, JSON header,
    raw little-endian data)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            data = f.read()
        for name, t in header.items():
            if name == "__metadata__":
                continue
            a, b = t["data_offsets"]
            raw = np.frombuffer(data[a:b], dtype=np.uint8)
            if t["dtype"] == "F32":
                x = raw.view("<f4")
            elif t["dtype"] == "BF16":
                x = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                x = raw.view("<f2").astype(np.float32)
            out[name] = x.astype(np.float32)
    return out


def overlap(run):
    lines = [json.loads(l) for l in open(os.path.join(work, run, "metrics.jsonl")) if l.strip()]
    return sum(l.get("dist/buckets_in_backward", 0) for l in lines), sum(l.get("dist/buckets", 0) for l in lines)


base = weights(os.path.join(work, "one", "final"))
start = weights(model)
bad = not base
# the 1-rank run moved the weights: equal weights below are not two untouched models
moved = max((float(np.max(np.abs(base[k] - start[k]))) for k in base if k in start), default=0.0)
print(json.dumps({"nccl": "one", "ranks": 1, "max_abs_change_of_training": moved}))
bad |= not moved > 1e-4
for run in ["two", "two_after", "two_zero2"]:
    w = weights(os.path.join(work, run, "final"))
    if not base or set(w) != set(base):
        print(json.dumps({"nccl": run, "error": "no weights, or other tensors than the 1-rank run's"}))
        bad = True
        continue
    diff = max(float(np.max(np.abs(w[k] - base[k]))) for k in base)
    inside, buckets = overlap(run)
    print(json.dumps({"nccl": run, "ranks": 2, "engine": engine, "nccl_version": version, "max_abs_diff_vs_1_rank": diff,
                      "buckets_in_backward": inside, "buckets": buckets, "tensors": len(base)}))
    bad |= not diff <= 1e-4
sys.exit(1 if bad else 0)
PY
exit $failed

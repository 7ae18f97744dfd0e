#!/usr/bin/env bash
# CLIP scoring benchmark: dama-clip against PyTorch transformers on the same random
# ViT-B/32-shaped weights, the same pairs (3-5 + 3-5 sub-sentences and one image each), on this
# CPU. Prints pairs/s of each, the ratios, where our time goes, and how far our Γ scores are from
# transformers'. Ours is built twice: default features, and `avx512` (gemm's AVX-512 kernels).
#
#   scripts/bench_clip.sh [PAIRS] [WxH]        (default: 64 pairs, 224x224 images)
#
# THREADS (default 2) threads on both sides; REPEAT (default 2) runs of each variant, the fastest
# kept (the machine may be shared). VARIANTS (default "default avx512"): which builds of ours.
# PYTHON: a Python with torch, transformers, open_clip_torch
# (default /work/pyenv/bin/python, else python3). Writes ~650 MB of weights to a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS="${1:-64}"
SIZE="${2:-224x224}"
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-2}"
VARIANTS="${VARIANTS:-default avx512}"
PYTHON="${PYTHON:-$( [ -x /work/pyenv/bin/python ] && echo /work/pyenv/bin/python || echo python3 )}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
for build in $VARIANTS; do
  case "$build" in
    default) cargo build --release -p dama-clip --example bench_score ;;
    avx512) cargo build --release -p dama-clip --example bench_score --features avx512 ;;
    *) echo "bench_clip: unknown variant $build (default, avx512)" >&2; exit 2 ;;
  esac
  cp "$TARGET_DIR/release/examples/bench_score" "$WORK/bench_$build"
done

"$PYTHON" scripts/bench_clip_torch.py prepare "$WORK" --pairs "$PAIRS" --image-size "$SIZE"
"$PYTHON" scripts/bench_clip_torch.py run "$WORK" --threads "$THREADS" --repeat "$REPEAT"
for build in $VARIANTS; do
  echo
  echo "=== dama-clip, $build build"
  RAYON_NUM_THREADS="$THREADS" "$WORK/bench_$build" "$WORK" --repeat "$REPEAT"
done

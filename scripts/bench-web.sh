#!/usr/bin/env bash
# Performance of the hardness explorer (web/) in headless Chromium; a benchmark, not a test, and
# not part of CI. Builds the app once with `trunk build --release` into target/bench-web/dist
# (what users get; web/dist, which scripts/test-web.sh builds in debug, is left alone), makes a
# random-weight CLIP of openai/clip-vit-base-patch32's shapes in target/bench-web/vit-b32 (once;
# needs python with torch and transformers: $PYTHON, default /work/pyenv/bin/python, else
# python3), then runs web/e2e/bench.mjs: wasm sizes raw and gzipped, time to first render, and
# ViT-B/32 image and text encoding per call in the worker, with where the image's time goes;
# then web/e2e/bench_scale.mjs: load, sort, filter, export and reload at 2k/20k/83k pairs
# (generated, deleted after) and scoring throughput with 1, 2 and 4 workers.
# Needs the tools scripts/test-web.sh installs (run it once first). Without torch and
# transformers the model is written with numpy; without numpy either, the ViT-B/32 parts are
# skipped (said so) and the rest runs.
# Environment: BENCH_REPEATS (default 7), BENCH_LOADS (fresh page loads, default 5),
# BENCH_SIZES (default 2000,20000,83132), BENCH_WORKERS (default 1,2,4),
# BENCH_DEBUG=1 to measure the debug build in web/dist instead (no release build).
# The numbers also go to web/e2e/out/bench.json and bench-scale.json.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
out=target/bench-web
mkdir -p "$out"

if [ "${BENCH_DEBUG:-0}" = 1 ]; then
  dist=web/dist
  step "trunk build (debug, web/dist)"
  trunk build
else
  dist=$out/dist
  step "trunk build --release ($dist)"
  start=$(date +%s)
  trunk build --release --dist "$dist"
  echo "built in $(( $(date +%s) - start )) s"
fi

if [ ! -f "$out/vit-b32/model.safetensors" ]; then
  py=${PYTHON:-/work/pyenv/bin/python}
  [ -x "$py" ] || py=python3
  if "$py" -c 'import numpy' 2>/dev/null; then
    step "random-weight ViT-B/32 CLIP ($out/vit-b32, 605 MB; transformers when installed, else numpy)"
    "$py" web/e2e/make_bench_model.py "$out/vit-b32"
  else
    step "skipping the ViT-B/32 timings: $py has neither numpy nor torch to make the model"
  fi
fi

if [ -f "$out/vit-b32/model.safetensors" ]; then
  step "bench in headless Chromium (web/e2e/bench.mjs)"
  BENCH_DIST="$dist" BENCH_MODEL="$out/vit-b32" node web/e2e/bench.mjs
fi

step "the explorer at RLAIF-V's size, and scoring in several workers (web/e2e/bench_scale.mjs)"
cargo build -q -p dama-web --example make_scale
E2E_DIST="$dist" BENCH_MODEL="$out/vit-b32" node web/e2e/bench_scale.mjs

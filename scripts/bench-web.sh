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
# Against onnxruntime-web on the same graphs and weights: web/e2e/export_onnx.py writes the
# model's image and text towers as ONNX (numpy and the onnx package, no torch; python's onnx and
# onnxruntime are pip-installed into $PYTHON when missing) and checks it against dama-clip (the
# bench stops if they disagree); npm's onnxruntime-web ($ORT_VERSION, default 1.31.1) is
# installed into target/bench-web/ort when missing; web/e2e/bench_ort.mjs times it in the same
# Chromium with 1 and 2 threads (and the image in 2 workers); bench.mjs prints both side by side.
# Needs the tools scripts/test-web.sh installs (run it once first). Without torch and
# transformers the model is written with numpy; without numpy either, the ViT-B/32 parts are
# skipped (said so) and the rest runs.
# Environment: BENCH_REPEATS (default 7), BENCH_LOADS (fresh page loads, default 5),
# BENCH_SIZES (default 2000,20000,83132), BENCH_WORKERS (default 1,2,4),
# BENCH_DEBUG=1 to measure the debug build in web/dist instead (no release build),
# BENCH_PARALLEL (candle pages at once, default 2), BENCH_ORT_THREADS (default 1,2),
# BENCH_ORT_SESSIONS (ORT workers at once, default 2), BENCH_ORT=0 to skip onnxruntime-web.
# The numbers also go to web/e2e/out/bench.json, bench-ort.json and bench-scale.json.
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

py=${PYTHON:-/work/pyenv/bin/python}
[ -x "$py" ] || py=python3
if [ ! -f "$out/vit-b32/model.safetensors" ]; then
  if "$py" -c 'import numpy' 2>/dev/null; then
    step "random-weight ViT-B/32 CLIP ($out/vit-b32, 605 MB; transformers when installed, else numpy)"
    "$py" web/e2e/make_bench_model.py "$out/vit-b32"
  else
    step "skipping the ViT-B/32 timings: $py has neither numpy nor torch to make the model"
  fi
fi

rm -f web/e2e/out/bench-ort.json  # bench.mjs compares with it: never a stale one
if [ -f "$out/vit-b32/model.safetensors" ] && [ "${BENCH_ORT:-1}" = 1 ]; then
  step "CLIP's towers as ONNX, checked against dama-clip (web/e2e/export_onnx.py)"
  if ! "$py" -c 'import onnx, onnxruntime' 2>/dev/null; then
    "$py" -m pip install -q onnx onnxruntime
  fi
  # Written again every run (seconds): the graph always holds the weights candle is timed on.
  "$py" web/e2e/export_onnx.py "$out/vit-b32" "$out/vit-b32"
  ort_version=${ORT_VERSION:-1.31.1}
  ort_pkg=$out/ort/node_modules/onnxruntime-web/package.json
  if ! grep -q "\"version\": \"$ort_version\"" "$ort_pkg" 2>/dev/null; then
    step "npm install onnxruntime-web@$ort_version ($out/ort, not web/e2e: CI does not need it)"
    mkdir -p "$out/ort"
    [ -f "$out/ort/package.json" ] || echo '{ "private": true }' > "$out/ort/package.json"
    npm install --prefix "$out/ort" --no-audit --no-fund "onnxruntime-web@$ort_version"
  fi
  step "onnxruntime-web $ort_version on the same graphs, same Chromium (web/e2e/bench_ort.mjs)"
  ORT_PREFIX="$out/vit-b32" node web/e2e/bench_ort.mjs
fi

if [ -f "$out/vit-b32/model.safetensors" ]; then
  step "bench in headless Chromium (web/e2e/bench.mjs)"
  BENCH_DIST="$dist" BENCH_MODEL="$out/vit-b32" node web/e2e/bench.mjs
fi

step "the explorer at RLAIF-V's size, and scoring in several workers (web/e2e/bench_scale.mjs)"
cargo build -q -p dama-web --example make_scale
E2E_DIST="$dist" BENCH_MODEL="$out/vit-b32" node web/e2e/bench_scale.mjs

#!/usr/bin/env bash
# The browser explorer's bundled demo, from the native demo (seed 0): the preference pairs its
# SFT model sampled (web/demo/demo.jsonl, images inline, unscored) and the CLIP it trained on
# its world (web/demo/clip/), then the scores that CLIP gives the first pairs
# (web/tests/demo_scores.json, checked natively and in the browser).
#
#   scripts/make-web-demo.sh          # OUT=target/web-demo by default
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/web-demo}"
cargo run -p dama-native --release -- demo --seed 0 --out "$out"
cp "$out/web/demo.jsonl" web/demo/demo.jsonl
mkdir -p web/demo/clip
cp "$out"/web/clip/{config.json,model.safetensors,tokenizer.json,preprocessor_config.json} web/demo/clip/
cargo run -p dama-web --example record_demo_scores
echo "make-web-demo: web/demo/ and web/tests/demo_scores.json from $out (seed 0)"

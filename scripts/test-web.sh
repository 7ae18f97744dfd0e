#!/usr/bin/env bash
# The hardness explorer's tests (web/): installs only what is missing (the wasm32 target, trunk,
# wasm-bindgen-cli, Debian's chromium and chromedriver, playwright-core), then builds the app once
# with trunk, runs its wasm-bindgen tests in headless Chromium and the end-to-end test.
# The plain-Rust tests of web/ run with the workspace's `cargo test`.
# Screenshots, timings and the exported file land in $E2E_OUT (default web/e2e/out); datasets the
# end-to-end test generates (up to RLAIF-V's 83,132 pairs, ~71 MB) are deleted after it.
# E2E_ONLY=demo,scored,quota,scale runs some of the end-to-end scenarios (all by default).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/install-test-deps.sh
# scripts/test.sh has installed these already
[ "${DAMA_DEPS_READY:-0}" = 1 ] || { need_rust_parts; need_browser_tools; }

# --- the checks -----------------------------------------------------------------------------
step "cargo clippy for wasm32 (the UI, the worker and the browser glue only compile there)"
cargo clippy -p dama-web --all-targets --target wasm32-unknown-unknown -- -D warnings

step "trunk build (web/dist)"
start=$(date +%s)
trunk build
echo "built in $(( $(date +%s) - start )) s"
for f in dama-web_bg.wasm worker_bg.wasm; do
  printf '%-18s %9d bytes raw, %9d gzipped\n' "$f" "$(stat -c %s "web/dist/$f")" "$(gzip -9c "web/dist/$f" | wc -c)"
done

step "wasm-bindgen tests in headless Chromium"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
CHROMEDRIVER="$(command -v chromedriver)" \
  cargo test -p dama-web --lib --target wasm32-unknown-unknown

step "end-to-end test in headless Chromium (web/e2e/e2e.mjs${E2E_ONLY:+, only $E2E_ONLY})"
cargo build -q -p dama-web --example check_export --example make_scale
node web/e2e/e2e.mjs

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

step() { printf '\n==> %s\n' "$*"; }
TRUNK_VERSION=0.21.14
BINDGEN_VERSION=0.2.130

# --- what the tests need (each only when missing) ------------------------------------------
# Tools are built with a light release profile (opt-level 1, no LTO, parallel codegen): on 2
# cores trunk then installs in ~4.5 min instead of 10–18 and wasm-bindgen-cli in ~2, and
# neither is measurably slower at what the tests ask of it.
light_install() {
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false cargo install "$@"
}
rustup target list --installed | grep -qx wasm32-unknown-unknown \
  || { step "rustup target add wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown; }
command -v trunk >/dev/null 2>&1 \
  || { step "cargo install trunk $TRUNK_VERSION"; light_install trunk --version "$TRUNK_VERSION" --locked; }
# trunk uses the wasm-bindgen on PATH only when it matches the crate's version exactly.
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$BINDGEN_VERSION" ]; then
  step "cargo install wasm-bindgen-cli $BINDGEN_VERSION"
  # Not --locked: its lockfile wants a crate version this registry index lacks.
  light_install wasm-bindgen-cli --version "$BINDGEN_VERSION"
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  step "apt-get install chromium chromium-driver"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
if [ ! -d web/e2e/node_modules/playwright-core ]; then
  step "npm install playwright-core (web/e2e/node_modules, ignored)"
  (cd web/e2e && npm ci --no-audit --no-fund)
fi

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

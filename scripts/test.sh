#!/usr/bin/env bash
# Every test of the workspace, from a fresh machine: installs what the tests need only when it
# is missing, then runs formatting, lints, the tests and the no_std/wasm32 builds.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- what the tests need ------------------------------------------------------------------
installed_targets=$(rustup target list --installed)
for target in wasm32-unknown-unknown wasm32v1-none; do
  grep -qx "$target" <<<"$installed_targets" || { step "rustup target add $target"; rustup target add "$target"; }
done
installed_components=$(rustup component list --installed)
for component in rustfmt clippy; do
  grep -q "^$component" <<<"$installed_components" || { step "rustup component add $component"; rustup component add "$component"; }
done

# --- the checks ---------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo test"
cargo test --workspace
step "the browser's crates for wasm32, and dama-core for a target without std"
cargo build -p dama-core --target wasm32-unknown-unknown
cargo build -p dama-core --target wasm32v1-none
cargo build -p dama-data --no-default-features --target wasm32-unknown-unknown
cargo build -p dama-clip --target wasm32-unknown-unknown
if command -v nvcc >/dev/null 2>&1; then
  step "the CUDA feature builds (nvcc found)"
  cargo check -p dama-native --features cuda
  step "the CUDA kernels in CPU emulation: tensor-core attention and AdamW (kernels/emu)"
  CUDA_PATH="${CUDA_PATH:-$(dirname "$(dirname "$(command -v nvcc)")")}" crates/dama-kernels/kernels/emu/run.sh
else
  step "nvcc not found: skipping the CUDA build check"
fi
scripts/test-web.sh  # the browser explorer: wasm-bindgen tests and the end-to-end test
step "all tests passed"

#!/usr/bin/env bash
# Every test of the workspace, from a fresh machine: installs what the tests need only when it
# is missing, then runs formatting, lints, the tests and the no_std/wasm32 builds.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/install-test-deps.sh

# --- what the tests need ------------------------------------------------------------------
need_rust_parts
need_browser_tools
need_mpi || true

# --- the checks ---------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets "${cargo_features[@]}" -- -D warnings
step "cargo test${cargo_features[*]:+ ${cargo_features[*]}}"
cargo test --workspace "${cargo_features[@]}"
step "the browser's crates for wasm32, and dama-core for a target without std"
cargo build -p dama-core --target wasm32-unknown-unknown
cargo build -p dama-core --target wasm32v1-none
cargo build -p dama-data --no-default-features --target wasm32-unknown-unknown
cargo build -p dama-clip --target wasm32-unknown-unknown
if command -v nvcc >/dev/null 2>&1; then
  step "the CUDA feature builds (nvcc found)"
  cargo check -p dama-native --features cuda
else
  skipped+=("cargo check --features cuda: needs nvcc (source scripts/setup-cuda13.sh, or a CUDA toolkit)")
fi
if [ "${DAMA_SKIP_EMU:-0}" = 1 ]; then
  skipped+=("the CUDA kernels' CPU emulation: DAMA_SKIP_EMU=1")
elif need_cuda_headers; then
  step "the CUDA kernels in CPU emulation: tensor-core attention and AdamW (kernels/emu)"
  CUDA_INCLUDE="$cuda_headers" crates/dama-kernels/kernels/emu/run.sh
fi
step "the browser explorer: scripts/test-web.sh (its own steps below)"
DAMA_DEPS_READY=1 scripts/test-web.sh  # the browser explorer: wasm-bindgen tests and end-to-end
step "all tests passed"
print_times
print_skipped

#!/usr/bin/env bash
# What the tests need, each installed only when missing; sourced by scripts/test.sh and
# scripts/test-web.sh. A fresh Debian machine with only rustup gets here: the wasm targets,
# rustfmt and clippy (rustup); Node.js and npm, Chromium and ChromeDriver (Debian's packages);
# OpenMPI and libclang (Debian's packages, for the data-parallel tests); trunk and
# wasm-bindgen-cli (cargo install, pinned); playwright-core (npm, pinned by
# web/e2e/package-lock.json); the CUDA headers the kernels' CPU emulation compiles against
# (PyPI wheels, no nvcc). Each step says what it installs; `skipped` collects what could not be
# had and why, for the summary at the end.
#
# Set DAMA_TOOLS_PREFIX to install cargo tools and the CUDA headers somewhere else, and
# DAMA_CUDA_HEADER_ROOTS to replace the folders searched for CUDA's headers:
# scripts/check-installs.sh exercises every step that way, with the machine's own tools hidden.

TRUNK_VERSION=0.21.14
BINDGEN_VERSION=0.2.130
CUDA_HEADERS_VERSION=13.0
tools_prefix="${DAMA_TOOLS_PREFIX:-$HOME/.cargo}"
cache_prefix="${DAMA_TOOLS_PREFIX:-$HOME/.cache/dama}"
skipped=()

# Each step prints its name; `print_times` lists how long each took (SECONDS: bash's clock),
# so that a run from scratch says where its time went.
step_names=()
step_starts=()
step() {
  step_names+=("$*")
  step_starts+=("$SECONDS")
  printf '\n==> %s\n' "$*"
}
print_times() {
  local i n=${#step_names[@]} end
  echo "time per step (s):"
  for ((i = 0; i < n; i++)); do
    if ((i + 1 < n)); then end=${step_starts[i + 1]}; else end=$SECONDS; fi
    printf '  %6d  %s\n' "$((end - step_starts[i]))" "${step_names[i]}"
  done
  printf '  %6d  in all\n' "$SECONDS"
}

apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install $* yourself" >&2
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Tools are built with a light release profile (opt-level 1, no LTO, parallel codegen): on 2
# cores trunk then installs in ~4.5 min instead of 10–18 and wasm-bindgen-cli in ~2, and
# neither is measurably slower at what the tests ask of it.
light_install() {
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false cargo install --root "$tools_prefix" "$@"
}
case ":$PATH:" in *":$tools_prefix/bin:"*) ;; *) export PATH="$tools_prefix/bin:$PATH" ;; esac

need_rust_parts() {
  local installed
  installed=$(rustup target list --installed)
  for target in wasm32-unknown-unknown wasm32v1-none; do
    grep -qx "$target" <<<"$installed" || { step "rustup target add $target"; rustup target add "$target"; }
  done
  installed=$(rustup component list --installed)
  for component in rustfmt clippy; do
    grep -q "^$component" <<<"$installed" || { step "rustup component add $component"; rustup component add "$component"; }
  done
}

need_browser_tools() {
  if ! command -v node >/dev/null 2>&1; then
    step "apt-get install nodejs"
    apt_install nodejs
  fi
  # Debian's nodejs comes without npm; NodeSource's bundles it (and conflicts with Debian's npm).
  if ! command -v npm >/dev/null 2>&1; then
    step "apt-get install npm"
    apt_install npm
  fi
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    step "apt-get install chromium chromium-driver"
    apt_install chromium chromium-driver
  fi
  command -v trunk >/dev/null 2>&1 \
    || { step "cargo install trunk $TRUNK_VERSION"; light_install trunk --version "$TRUNK_VERSION" --locked; }
  # trunk uses the wasm-bindgen on PATH only when it matches the crate's version exactly.
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$BINDGEN_VERSION" ]; then
    step "cargo install wasm-bindgen-cli $BINDGEN_VERSION"
    # Not --locked: its lockfile wants a crate version this registry index lacks.
    light_install wasm-bindgen-cli --version "$BINDGEN_VERSION"
  fi
  if [ ! -d web/e2e/node_modules/playwright-core ]; then
    step "npm ci: playwright-core (web/e2e/node_modules, ignored; no browser download)"
    (cd web/e2e && npm ci --no-audit --no-fund)
  fi
}

# Data-parallel training's tests run ranks over MPI (dama-train's `mpi` feature): OpenMPI's
# mpirun and mpicc, and libclang for the bindings the `mpi` crate generates at build time.
# Sets cargo_features to the feature flag when they are there, or adds to `skipped`.
need_mpi() {
  cargo_features=()
  if ! command -v mpicc >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1 \
    || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    step "apt-get install openmpi-bin libopenmpi-dev libclang-dev (data-parallel tests over MPI)"
    apt_install openmpi-bin libopenmpi-dev libclang-dev pkg-config \
      || { skipped+=("the data-parallel tests over MPI (native/tests/dist.rs): OpenMPI or libclang could not be installed"); return 1; }
  fi
  cargo_features=(--features dama-native/mpi)
}

# The CPU emulation of the CUDA kernels needs a C++20 compiler and CUDA's headers (cuda_bf16.h
# and what it includes), not nvcc: three PyPI wheels, 5.5 MB, unpacked into the cache. Sets
# cuda_headers to the include folder, or adds to `skipped` and returns 1.
need_cuda_headers() {
  cuda_headers=""
  for root in ${DAMA_CUDA_HEADER_ROOTS:-"${CUDA_PATH:-}" /usr/local/cuda /opt/dama-cuda13/nvidia/cu13} \
    "$cache_prefix/cuda-headers/nvidia/cu13"; do
    if [ -n "$root" ] && [ -f "$root/include/cuda_bf16.h" ] && [ -f "$root/include/crt/host_defines.h" ] \
      && [ -d "$root/include/nv" ]; then
      cuda_headers="$root/include"
      break
    fi
  done
  if ! command -v g++ >/dev/null 2>&1; then
    step "apt-get install g++ (the CUDA kernels' CPU emulation)"
    apt_install g++ || { skipped+=("the CUDA kernels' CPU emulation: no C++ compiler"); return 1; }
  fi
  if [ -z "$cuda_headers" ]; then
    step "pip install CUDA $CUDA_HEADERS_VERSION headers (runtime, crt, cccl wheels) into $cache_prefix/cuda-headers"
    rm -rf "$cache_prefix/cuda-headers"
    if python3 -m pip install -q --disable-pip-version-check --no-deps --target "$cache_prefix/cuda-headers" \
      "nvidia-cuda-runtime==$CUDA_HEADERS_VERSION.*" "nvidia-cuda-crt==$CUDA_HEADERS_VERSION.*" \
      "nvidia-cuda-cccl==$CUDA_HEADERS_VERSION.*" 2>&1 | grep -v "Running pip as the 'root' user"; then :; fi
    if [ -f "$cache_prefix/cuda-headers/nvidia/cu13/include/cuda_bf16.h" ]; then
      cuda_headers="$cache_prefix/cuda-headers/nvidia/cu13/include"
    else
      skipped+=("the CUDA kernels' CPU emulation: could not install CUDA's headers with pip")
      return 1
    fi
  fi
}

print_skipped() {
  if [ "${#skipped[@]}" -eq 0 ]; then
    echo "nothing skipped"
  else
    echo "skipped:"
    printf '  - %s\n' "${skipped[@]}"
  fi
}

#!/usr/bin/env bash
# Assemble a CUDA 13.0 toolkit from PyPI wheels, matching the GPU machines we benchmark on
# (driver 580, CUDA 13.0, libcublas.so.13 in /usr/local/cuda there), so that a binary built on
# this CPU-only machine with candle's `cuda` feature runs there unchanged.
#
#   source scripts/setup-cuda13.sh        # installs once into $DAMA_CUDA_PREFIX, then exports
#   cargo build --release -p dama-native --features cuda
#
# It exports CUDA_PATH, PATH (nvcc), CUDARC_CUDA_VERSION=13000 and CUDA_COMPUTE_CAP (default 90).
# PTX made by nvcc 13.0 is what driver 580 can JIT; a newer nvcc would make PTX it rejects.
prefix="${DAMA_CUDA_PREFIX:-/opt/dama-cuda13}"
root="$prefix/nvidia/cu13"
if [ ! -x "$root/bin/nvcc" ]; then
  python3 -m pip install -q --no-deps --target "$prefix" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cublas==13.1.0.3" "nvidia-curand==10.4.0.*" "nvidia-nccl-cu13" \
    || { echo "setup-cuda13: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
  # nccl ships in its own tree; put everything the linker needs in one lib folder
  mkdir -p "$root/lib"
  for f in "$prefix"/nvidia/nccl/lib/*.so*; do [ -e "$f" ] && ln -sf "$f" "$root/lib/"; done
  ( cd "$root/lib" && for so in *.so.*; do base="${so%%.so.*}.so"; [ -e "$base" ] || ln -s "$so" "$base"; done )
  [ -e "$root/lib64" ] || ln -s lib "$root/lib64"
  [ -e "$root/include/nccl.h" ] || ln -sf "$prefix"/nvidia/nccl/include/nccl.h "$root/include/" 2>/dev/null
fi
# Linking needs the driver library libcuda.so (the GPU machine brings its own at run time).
# PyPI ships none; Debian's non-free libcuda1 gives one.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so '; then
  # enable Debian's contrib and non-free components next to the configured main one
  for src in /etc/apt/sources.list.d/*.sources; do
    case "$src" in *-nonfree.sources) continue ;; esac
    out="${src%.sources}-nonfree.sources"
    [ -f "$out" ] || sed -e 's/^Components:.*/Components: contrib non-free/' "$src" > "$out"
  done
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcuda1; } >/dev/null 2>&1 \
    || echo "setup-cuda13: could not install libcuda1; linking a cuda build will fail" >&2
  [ -e /usr/lib/x86_64-linux-gnu/libcuda.so ] || ln -s libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so 2>/dev/null
fi
export CUDA_PATH="$root" CUDA_ROOT="$root" CUDA_TOOLKIT_ROOT_DIR="$root"
export PATH="$root/bin:$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LIBRARY_PATH="$root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
echo "setup-cuda13: nvcc $("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_PATH=$root, compute cap $CUDA_COMPUTE_CAP"

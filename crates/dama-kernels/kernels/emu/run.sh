#!/usr/bin/env bash
# Builds and runs the CPU emulation tests of the tensor-core attention kernels (see
# attention_mma.cpp) and of the fused AdamW kernel (adamw.cpp). It needs g++ (C++20) and CUDA's
# headers, not nvcc: $CUDA_INCLUDE, else $CUDA_PATH/include (scripts/test.sh installs the
# headers from PyPI when missing).
# ASAN=1 adds AddressSanitizer + UBSan (catches out-of-bounds reads a GPU would fault on).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
inc="${CUDA_INCLUDE:-${CUDA_PATH:-/opt/dama-cuda13/nvidia/cu13}/include}"
out=$(mktemp -d)
flags="-std=c++20 -O1 -pthread"
[ "${ASAN:-0}" = 1 ] && flags="$flags -g -fsanitize=address,undefined"
g++ $flags -I"$inc" -o "$out/attention_mma_emu" "$here/attention_mma.cpp"
g++ $flags -ffp-contract=off -I"$inc" -o "$out/adamw_emu" "$here/adamw.cpp"
rc=0
"$out/adamw_emu" || rc=1
"$out/attention_mma_emu" || rc=1
rm -rf "$out"
exit $rc

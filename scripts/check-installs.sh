#!/usr/bin/env bash
# Exercises every install step of scripts/install-test-deps.sh with its tool out of reach, never
# uninstalling what the machine has: the machine's tools are hidden from PATH (a folder of links
# to everything else), cargo tools and CUDA's headers go into a scratch prefix, playwright-core
# into a scratch copy of web/e2e, and the Debian packages (nodejs, npm, chromium,
# chromium-driver, g++, and OpenMPI with libclang through need_mpi) into a fresh Debian made
# by debootstrap (skip with CHECK_APT=0).
#
#   scripts/check-installs.sh [SCRATCH]      # default: a new temporary folder, removed after
#   CHECK_ONLY=apt scripts/check-installs.sh # one step only: trunk, bindgen, cuda, npm or apt
#
# Ends with one line per step: installed and found afterwards, or FAILED.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch="${1:-$(mktemp -d)}"
mkdir -p "$scratch"
results=()
record() { results+=("$(printf '%-44s %s' "$1" "$2")"); }
# whether step $1 runs (all of them unless CHECK_ONLY names one)
wanted() { [ -z "${CHECK_ONLY:-}" ] || [ "$CHECK_ONLY" = "$1" ]; }

# PATH without the tools under test: links to every other program of each PATH folder
hidden="trunk wasm-bindgen wasm-bindgen-test-runner node npm npx chromium chromedriver"
farm="$scratch/path"
mkdir -p "$farm"
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    name=$(basename "$f")
    case " $hidden " in *" $name "*) continue ;; esac
    [ -e "$farm/$name" ] || ln -s "$f" "$farm/$name"
  done
done
export PATH="$farm"
for t in $hidden; do
  command -v "$t" >/dev/null 2>&1 && { echo "check-installs: $t still on PATH" >&2; exit 2; }
done

cd "$repo"
export DAMA_TOOLS_PREFIX="$scratch/prefix" DAMA_CUDA_HEADER_ROOTS="/nonexistent"
# shellcheck source=install-test-deps.sh
source scripts/install-test-deps.sh
apt_install() { echo "(apt-get install $* is exercised in the debootstrap step)"; }

if wanted trunk; then
  start=$(date +%s)
  ( light_install trunk --version "$TRUNK_VERSION" --locked ) \
    && [ -x "$DAMA_TOOLS_PREFIX/bin/trunk" ] && record "cargo install trunk $TRUNK_VERSION" "ok ($(( $(date +%s) - start )) s)" \
    || record "cargo install trunk" FAILED
fi
if wanted bindgen; then
  start=$(date +%s)
  ( light_install wasm-bindgen-cli --version "$BINDGEN_VERSION" ) \
    && [ "$("$DAMA_TOOLS_PREFIX/bin/wasm-bindgen" --version | awk '{print $2}')" = "$BINDGEN_VERSION" ] \
    && record "cargo install wasm-bindgen-cli $BINDGEN_VERSION" "ok ($(( $(date +%s) - start )) s)" \
    || record "cargo install wasm-bindgen-cli" FAILED
fi
if wanted cuda; then
  start=$(date +%s)
  if need_cuda_headers && [ "$cuda_headers" = "$DAMA_TOOLS_PREFIX/cuda-headers/nvidia/cu13/include" ] \
    && g++ -std=c++20 -fsyntax-only -I"$cuda_headers" crates/dama-kernels/kernels/emu/adamw.cpp; then
    record "pip install CUDA headers (emulation compiles)" "ok ($(( $(date +%s) - start )) s)"
  else
    record "pip install CUDA headers" FAILED
  fi
fi
# npm ci in a scratch copy of web/e2e, with the machine's node and npm (hidden above only so that
# the apt step's detection is exercised)
if wanted npm; then
  start=$(date +%s)
  mkdir -p "$scratch/e2e" && cp web/e2e/package.json web/e2e/package-lock.json "$scratch/e2e/"
  if (cd "$scratch/e2e" && PATH="/usr/bin:$PATH" npm ci --no-audit --no-fund >/dev/null) \
    && [ -d "$scratch/e2e/node_modules/playwright-core" ]; then
    record "npm ci (playwright-core)" "ok ($(( $(date +%s) - start )) s)"
  else
    record "npm ci (playwright-core)" FAILED
  fi
fi

if wanted apt && [ "${CHECK_APT:-1}" = 1 ]; then
  start=$(date +%s)
  root="$scratch/debian"
  # looked up outside the PATH farm, which was made before it could be installed
  sys_path=/usr/sbin:/usr/bin:/sbin:/bin
  if ! PATH=$sys_path command -v debootstrap >/dev/null 2>&1; then
    PATH=$sys_path DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  if PATH=$sys_path debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian > "$scratch/debootstrap.log" 2>&1; then
    cp scripts/install-test-deps.sh "$root/root/"
    # Chromium reads /proc/cpuinfo before it prints its version: the chroot gets the host's /proc
    mount -t proc proc "$root/proc"
    # the real apt_install, in a Debian that has none of the tools
    if chroot "$root" /bin/bash -c '
        export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
        source /root/install-test-deps.sh
        for t in node npm chromium chromedriver g++ mpirun mpicc; do command -v $t >/dev/null && { echo "$t present"; exit 1; }; done
        apt_install nodejs && apt_install npm && apt_install chromium chromium-driver && apt_install g++ &&
        need_mpi && [ "${cargo_features[*]}" = "--features dama-native/mpi" ] && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null &&
        node --version && npm --version && chromium --version && chromedriver --version && g++ --version | head -1 &&
        mpirun --version | head -1' \
        > "$scratch/apt.log" 2>&1; then
      record "apt-get install nodejs npm chromium chromium-driver g++ openmpi libclang" "ok ($(( $(date +%s) - start )) s): $(grep -E '^v[0-9]|^[0-9]+\.[0-9]+\.[0-9]+$|^Chromium|^ChromeDriver|^g\+\+|^mpirun' "$scratch/apt.log" | cut -c1-40 | tr '\n' ' ')"
    else
      record "apt-get install (debootstrap chroot)" "FAILED (see $scratch/apt.log)"
    fi
    umount "$root/proc"
  else
    record "debootstrap bookworm" "FAILED (see $scratch/debootstrap.log)"
  fi
fi

printf '\ncheck-installs:\n'
printf '  %s\n' "${results[@]}"
[ -z "${1:-}" ] && [ "${KEEP:-0}" != 1 ] && rm -rf "$scratch"
printf '%s\n' "${results[@]}" | grep -q FAILED && exit 1 || exit 0

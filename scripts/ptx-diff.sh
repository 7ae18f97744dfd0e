#!/usr/bin/env bash
# Compiles dama-kernels' CUDA sources to PTX at two git revisions, with the flags of
# crates/dama-kernels/build.rs, and compares them kernel by kernel (entry point by entry point).
# This is the evidence behind every "identical PTX" / "same instructions" claim in the
# repository: a refactor of a kernel that has run on a GPU keeps that GPU run valid only if its
# PTX is identical (or, weaker, has the same instructions in another order).
#
#   scripts/ptx-diff.sh OLD [NEW] [-k attention_mma,adamw] [--show NAME] [--strict]
#                       [--ptxas sm_90]
#
#   OLD, NEW   git revisions; NEW defaults to the working tree (also spelt `worktree`)
#   -k LIST    the sources (kernels/LIST.cu) to compare; default: every kernels/*.cu at NEW
#   --show N   also print the unified diff of entry point N's PTX
#   --strict   exit 1 unless every entry point present at both revisions is identical
#   --ptxas A  also assemble both revisions' PTX for GPU architecture A (sm_80, sm_90) and
#              print each entry point's registers, spill bytes and static shared memory
#
# nvcc: `$CUDA_PATH/bin/nvcc`, else `nvcc` on PATH; without a CUDA toolkit,
# `source scripts/setup-cuda13.sh` first (nvcc 13.0 from PyPI wheels; no GPU needed).
# Architecture: compute_$CUDA_COMPUTE_CAP (digits only), default 80 as in build.rs; the
# set-up script exports 90, what the H200 runs used.
#
# For each entry point it prints one of:
#   identical          the normalised PTX text is the same (comments and blank lines dropped,
#                      function-local shared arrays named by their own name, not the mangled
#                      template signature of the function that declares them)
#   same instructions  the same instructions (opcode and operands, register and label
#                      numbers ignored), in the same order (other register numbers only) or
#                      in another order
#   same opcodes       the same count of every opcode, operands differ (e.g. other registers,
#                      offsets or constants)
#   different          opcode counts differ; the opcodes whose count changed are listed
#   only at OLD / only at NEW
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kdir=crates/dama-kernels/kernels

old= new= kernels= show= strict=0 ptxas_arch=
while [ $# -gt 0 ]; do
    case "$1" in
        -k) kernels=$(echo "$2" | tr ',' ' '); shift 2 ;;
        --show) show=$2; shift 2 ;;
        --strict) strict=1; shift ;;
        --ptxas) ptxas_arch=$2; shift 2 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) if [ -z "$old" ]; then old=$1; elif [ -z "$new" ]; then new=$1; else
               echo "ptx-diff: unexpected argument $1" >&2; exit 2; fi; shift ;;
    esac
done
[ -n "$old" ] || { echo "ptx-diff: give a revision to compare with (see --help)" >&2; exit 2; }
new=${new:-worktree}

nvcc=nvcc
for v in CUDA_PATH CUDA_ROOT CUDA_TOOLKIT_ROOT_DIR; do
    r=${!v:-}
    if [ -n "$r" ] && [ -x "$r/bin/nvcc" ]; then nvcc="$r/bin/nvcc"; break; fi
done
command -v "$nvcc" >/dev/null || {
    echo "ptx-diff: no nvcc (set CUDA_PATH, or: source scripts/setup-cuda13.sh)" >&2; exit 2; }
cap=$(echo "${CUDA_COMPUTE_CAP:-80}" | tr -cd '0-9'); cap=${cap:-80}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# sources of revision $1 into $work/$2/
checkout() {
    mkdir -p "$work/$2"
    if [ "$1" = worktree ]; then
        cp -r "$root/$kdir/." "$work/$2/"
    else
        git -C "$root" rev-parse --verify -q "$1^{commit}" >/dev/null ||
            { echo "ptx-diff: unknown revision $1" >&2; exit 2; }
        git -C "$root" archive "$1" "$kdir" | tar -x -C "$work/$2" --strip-components=3
    fi
}
checkout "$old" old
checkout "$new" new
[ -n "$kernels" ] || kernels=$(cd "$work/new" && ls *.cu | sed 's/\.cu$//')

describe() { [ "$1" = worktree ] && echo "the working tree" || git -C "$root" log -1 --format='%h (%ad, %s)' --date=format:'%Y-%m-%d %H:%M' "$1" | cut -c1-100; }
echo "old: $(describe "$old")"
echo "new: $(describe "$new")"
echo "nvcc: $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\), V\([0-9.]*\).*/\2/p'), compute_$cap, flags of build.rs"

status=0
for k in $kernels; do
    for side in old new; do
        if [ -f "$work/$side/$k.cu" ]; then
            (cd "$work/$side" && "$nvcc" --ptx -O3 -std=c++17 --expt-relaxed-constexpr \
                --gpu-architecture=compute_"$cap" -o "$k.ptx" "$k.cu")
            if [ -n "$ptxas_arch" ]; then
                "$(dirname "$(command -v "$nvcc")")/ptxas" -arch="$ptxas_arch" -v "$work/$side/$k.ptx" \
                    -o /dev/null > "$work/$side/$k.ptxas" 2>&1 || {
                    echo "ptx-diff: ptxas -arch=$ptxas_arch failed on $k.cu (PTX for compute_$cap;" \
                        "CUDA_COMPUTE_CAP must not exceed the architecture):" >&2
                    tail -3 "$work/$side/$k.ptxas" >&2; exit 2; }
            fi
        fi
    done
    echo
    echo "== $k.cu"
    python3 - "$work/old/$k.ptx" "$work/new/$k.ptx" "$show" "$ptxas_arch" <<'PY' || status=1
import collections, difflib, os, re, sys

def functions(path):
    """entry/func name -> normalised body lines (comments, blank lines dropped)."""
    if not os.path.exists(path):
        return None
    funcs, name = {}, None
    for line in open(path):
        line = line.split("//")[0].rstrip()
        if not line.strip():
            continue
        m = re.match(r"^\.(?:visible |weak |extern )*\.?(?:entry|func)\s+(?:\([^)]*\)\s*)?(\w+)", line)
        if m:
            name = m.group(1)
            funcs[name] = []
        if name:
            funcs[name].append(local_statics(line.strip()))
            if line == "}":
                name = None
    return funcs

def instructions(body):
    """instruction lines with every register and label number dropped (%r12 -> %r,
    $L__BB0_7 -> $L__BB): equal multisets mean the same instructions up to register
    allocation and order."""
    out = []
    for line in body:
        if line.startswith(".") or line.endswith(":") or line in ("{", "}") or line.startswith(")"):
            continue  # directives, declarations, labels, braces
        out.append(re.sub(r"(\$L__[A-Za-z]+|%[a-z]+)[0-9_]+", r"\1", line))
    return out

def local_statics(line):
    """A function-local `static __shared__` array's mangled name (_ZZ<function>E3ksm) spells
    the function's template arguments: a template flag added to the function renames it.
    Keep only the array's own name."""
    return re.sub(r"_ZZ\w*E\d+([A-Za-z_]\w*)", r"_ZZ…\1", line)

def opcodes(body):
    ops = collections.Counter()
    for line in instructions(body):
        tok = line.split()
        if tok and tok[0].startswith("@"):
            tok = tok[1:]
        if tok:
            ops[tok[0].rstrip(";")] += 1
    return ops

def ptxas(path):
    """entry -> "R registers, S spill bytes, M B smem" from `ptxas -v`'s report."""
    info, name = {}, None
    if not os.path.exists(path):
        return info
    for line in open(path):
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            info[name] = [f"spills {int(m.group(1)) + int(m.group(2))} B"]
        m = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
        if m and name:
            info.setdefault(name, []).insert(0, f"{m.group(1)} registers")
            info[name].append(f"{m.group(2) or 0} B smem")
    return {k: ", ".join(v) for k, v in info.items()}

old, new, show = functions(sys.argv[1]), functions(sys.argv[2]), sys.argv[3]
arch = sys.argv[4]
regs_old = ptxas(sys.argv[1][:-4] + ".ptxas")
regs_new = ptxas(sys.argv[2][:-4] + ".ptxas")
if old is None or new is None:
    print("  only at " + ("NEW" if old is None else "OLD") + " (the source file)")
    sys.exit(0)
differs = False
for name in sorted(set(old) | set(new)):
    if name not in new:
        print(f"  {name:<34} only at OLD"); continue
    if name not in old:
        print(f"  {name:<34} only at NEW" + (f" ({arch}: {regs_new.get(name, '?')})" if arch else ""))
        continue
    a, b = old[name], new[name]
    n = len(instructions(b))
    if a == b:
        verdict = f"identical ({n} instructions)"
    else:
        differs = True
        ia, ib = instructions(a), instructions(b)
        if ia == ib:
            verdict = f"same instructions ({n}) in the same order, other register numbers"
        elif collections.Counter(ia) == collections.Counter(ib):
            verdict = f"same instructions ({n}), in another order"
        elif opcodes(a) == opcodes(b):
            verdict = f"same opcodes ({n} instructions), operands differ"
        else:
            oa, ob = opcodes(a), opcodes(b)
            delta = {op: ob[op] - oa[op] for op in set(oa) | set(ob) if ob[op] != oa[op]}
            parts = ", ".join(f"{op} {d:+d}" for op, d in sorted(delta.items(), key=lambda kv: -abs(kv[1])))
            verdict = f"different ({len(ia)} -> {len(ib)} instructions: {parts})"
    print(f"  {name:<34} {verdict}")
    if arch:
        print(f"  {'':<34} {arch}: {regs_old.get(name, '?')} -> {regs_new.get(name, '?')}")
    if name == show and a != b:
        sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(a, b, "OLD", "NEW", lineterm=""))
sys.exit(1 if differs else 0)
PY
done
[ "$strict" = 1 ] && exit "$status"
exit 0

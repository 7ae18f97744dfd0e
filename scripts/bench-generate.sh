#!/usr/bin/env bash
# Generation speed: dama (`dama-bench`'s bench_generate) against transformers' `generate` on the
# same random tiny and ~100M LLaVA shapes, prompts and pixel values, on this CPU: tokens/s of
# greedy and 3-beam search, batches of 1 and 8, and the ratio dama / transformers.
#
#   scripts/bench-generate.sh [tiny|100m]        (default: both)
#
# THREADS (default 2) threads on both sides; REPEAT (default 2) runs of each, the fastest kept
# (the machine may be shared). PYTHON: a Python with torch + transformers (default python3).
# Writes ~230 MB (the 100M model in bf16) to a temporary folder, or to $WORK (kept, and reused
# by a later run: the models are prepared only once).
set -euo pipefail
cd "$(dirname "$0")/.."
ONLY="${1:-}"
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-2}"
PYTHON="${PYTHON:-python3}"
if [ -z "${WORK:-}" ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi

cargo build --release -p dama-bench --bin bench_generate
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
[ -f "$WORK/100m/bench_prompts.json" ] || "$PYTHON" scripts/bench/generate.py prepare "$WORK" >&2
only=()
[ -n "$ONLY" ] && only=(--only "$ONLY")
{
  "$PYTHON" scripts/bench/generate.py run "$WORK" --threads "$THREADS" --repeat "$REPEAT" "${only[@]}"
  RAYON_NUM_THREADS="$THREADS" "$TARGET_DIR/release/bench_generate" "$WORK" --repeat "$REPEAT" "${only[@]}"
} | tee "$WORK/results.txt" | grep '^RESULT ' >&2 || true
"$PYTHON" - "$WORK/results.txt" <<'EOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        r = json.loads(line[7:])
        rows.setdefault((r["shape"], r["strategy"], r["batch"]), {})[r["side"]] = r
print()
print("| shape | decoding | batch | new tokens | dama tokens/s | transformers tokens/s | ratio | transformers setting |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (shape, strategy, batch), sides in rows.items():
    d, t = sides.get("dama"), sides.get("transformers")
    if not (d and t):
        continue
    print(f"| {shape} | {strategy} | {batch} | {d['new_tokens']} | {d['tokens_per_s']:.1f} | "
          f"{t['tokens_per_s']:.1f} | {d['tokens_per_s'] / t['tokens_per_s']:.2f}× | {t['setting']} |")
EOF

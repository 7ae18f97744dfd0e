#!/usr/bin/env bash
# The demo over several seeds: each seed is a new world (images, splits), CLIP, SFT model,
# sampled preference pairs and training order; prints mean ± std over the seeds of each CHAIR
# figure (and the held-out reward accuracy) for SFT, DPO and DAMA, as README quotes it.
#
#   scripts/demo-seeds.sh [SEEDS]          (default 5: seeds 0..4)
#
# OUT (default target/demo-seeds) keeps each seed's folder (seed-N/, a demo folder with its
# summary.json) and table.md; a seed whose folder already holds a summary.json is not run
# again. Extra demo flags: DEMO_ARGS="--epochs 6". Needs python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-5}"
OUT="${OUT:-target/demo-seeds}"
mkdir -p "$OUT"
cargo build --release -q -p dama-native
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
for ((s = 0; s < SEEDS; s++)); do
  dir="$OUT/seed-$s"
  if [ -f "$dir/summary.json" ]; then
    echo "seed $s: already in $dir"
    continue
  fi
  echo "seed $s → $dir"
  # shellcheck disable=SC2086
  "$TARGET_DIR/release/dama-native" demo --seed "$s" --out "$dir" ${DEMO_ARGS:-} > "$dir.log" 2>&1 ||
    { echo "seed $s failed: see $dir.log" >&2; exit 1; }
  grep -E '^done in' "$dir.log" || true
done
python3 - "$OUT" "$SEEDS" <<'EOF' | tee "$OUT/table.md"
import json, math, sys
out, n = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}/seed-{s}/summary.json")) for s in range(n)]
def ms(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return f"{100 * m:.1f} ± {100 * sd:.1f}"
cols = [("CHAIR Resp. (CHAIRs_refine)", "chair_s_refine"), ("CHAIR Ment. (CHAIRi)", "chair_i"),
        ("object recall", "recall"), ("world Resp. (kind + attributes)", "attr_resp"),
        ("world Ment.", "attr_ment")]
print(f"Over {n} seeds (mean ± sample std, in %; lower is better but for recall and accuracy):\n")
print("| model | " + " | ".join(c for c, _ in cols) + " | held-out reward accuracy |")
print("| --- |" + " ---: |" * (len(cols) + 1))
for name in ("sft", "dpo", "dama"):
    chair = [dict(r["chair"])[name] for r in runs]
    held = [dict(r["heldout"])["reference (sft)" if name == "sft" else name]["accuracy"] for r in runs]
    acc = "—" if name == "sft" else ms(held)
    print(f"| {name} | " + " | ".join(ms([c[k] for c in chair]) for _, k in cols) + f" | {acc} |")
pairs = [r["preference_pairs"] for r in runs]
print(f"\nSampled preference pairs per seed: {pairs}; seconds per demo: "
      f"{[round(r['seconds']) for r in runs]}")
EOF

"""Writes the word-similarity table `dama-native eval amber --similarity` reads, with spaCy, as
AMBER's `inference.py` compares words (`nlp(w1).similarity(nlp(w2)) > 0.8`, en_core_web_lg).

Every word the reference compares is in AMBER's vocabulary (the keys of `relation.json` and
their associated words), so the table of every pair of that vocabulary replaces spaCy exactly.
For users who have spaCy and its model (dama does not need them, and they are not on a package
registry dama can use: the model is a GitHub release):

    pip install spacy && python -m spacy download en_core_web_lg
    python3 scripts/amber_similarity.py AMBER/data/relation.json amber-similarity.tsv

The format (crates/dama-eval/src/amber/similarity.rs): a header `# amber-similarity floor=F
model=NAME`, then one unordered pair a line, `word1<TAB>word2<TAB>similarity`, for every pair
whose similarity is at least F (a pair not listed is below F, so `eval amber` refuses
thresholds under F). The similarity is written with `repr`, the shortest text that reads back as
the same double, so `sim > threshold` decides as in the reference. Identical words are not
listed: spaCy answers 1.0 for them, and so does dama.

Not run here: no spaCy model can be installed on the development machine; the table reader is
tested on a synthetic table (crates/dama-eval/tests/fixtures/amber/similarity.tsv).
"""

import argparse
import itertools
import json
import sys


def vocabulary(relation_path):
    with open(relation_path, encoding="utf-8") as f:
        association = json.load(f)
    words = set(association)
    for associated in association.values():
        words.update(associated)
    return sorted(words)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("relation", help="AMBER's data/relation.json")
    parser.add_argument("out", help="the table to write (TSV)")
    parser.add_argument("--model", default="en_core_web_lg", help="the spaCy model AMBER uses")
    parser.add_argument(
        "--floor", type=float, default=0.5, help="keep pairs at least this similar (default 0.5)"
    )
    args = parser.parse_args()

    import spacy  # imported here so that --help works without spaCy

    nlp = spacy.load(args.model)
    words = vocabulary(args.relation)
    docs = {w: nlp(w) for w in words}
    name = f"{args.model}-{nlp.meta.get('version', 'unknown')}"
    kept = 0
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(f"# amber-similarity floor={args.floor!r} model={name}\n")
        for a, b in itertools.combinations(words, 2):
            sim = float(docs[a].similarity(docs[b]))
            if sim >= args.floor:
                out.write(f"{a}\t{b}\t{sim!r}\n")
                kept += 1
    pairs = len(words) * (len(words) - 1) // 2
    print(f"{len(words)} words, {pairs} pairs, {kept} at least {args.floor} → {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

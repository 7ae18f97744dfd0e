#!/usr/bin/env python3
"""Regenerates every committed test fixture from Hugging Face `transformers` (the oracle).

Run by hand, never in tests or CI:

    python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt
    .venv/bin/python scripts/make_fixtures.py            # all
    .venv/bin/python scripts/make_fixtures.py clip       # one part

Each part lives in scripts/fixtures/<part>.py and writes under its crate's tests/fixtures/.
"""

import importlib
import pathlib
import sys

PARTS = ["clip", "llava", "data", "optim", "score"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv):
    parts = argv[1:] or PARTS
    for part in parts:
        if part not in PARTS:
            sys.exit(f"unknown part {part!r}; choose from {PARTS}")
        print(f"== {part}")
        importlib.import_module(f"fixtures.{part}").main(ROOT)


if __name__ == "__main__":
    main(sys.argv)

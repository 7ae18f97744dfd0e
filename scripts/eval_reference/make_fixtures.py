"""Golden values for dama-eval's metrics, from real NLTK (3.10.4) and WordNet 3.0 and the
independent reference implementations beside this file (chair.py, amber.py; MMHal-Bench's
summary below), on synthetic data (synthetic.py). Writes crates/dama-eval/tests/fixtures/.

    python3 -m venv /root/venv-eval && /root/venv-eval/bin/pip install -r scripts/eval_reference/requirements.txt
    apt-get install wordnet-base                      # WordNet 3.0 in /usr/share/wordnet
    # the two RLAIF-V scripts whose prompts are checked, from github.com/RLHF-V/RLAIF-V:
    #   eval/eval_gpt_obj_halbench.py, eval/eval_gpt_mmhal.py  under RLAIFV_DIR
    /root/venv-eval/bin/python scripts/eval_reference/make_fixtures.py RLAIFV_DIR

The Rust tests read WordNet from a subset written here (tests/fixtures/wordnet: every line of
index.noun and noun.exc that morphy can reach from a word of the fixtures), so that they need
no WordNet installed; the script checks that the subset decides every such word as the whole
does.
"""

import ast
import json
import pathlib
import random
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import nltk_env  # noqa: E402  (sets NLTK_DATA before nltk is imported)
import synthetic  # noqa: E402

OUT = nltk_env.REPO / "crates/dama-eval/tests/fixtures"
SEED = 20261203


def template_of(path, name):
    tree = ast.parse(pathlib.Path(path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return node.value.value
    raise SystemExit(f"no {name} in {path}")


def dump(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")


def dump_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def train_tagger(rng, out_dir):
    from nltk.tag.perceptron import PerceptronTagger

    random.seed(SEED)  # PerceptronTagger.train shuffles with the global generator
    tagger = PerceptronTagger(load=False)
    tagger.train(synthetic.tagged_corpus(rng), nr_iter=5)
    weights, tagdict, classes = tagger.encode_json_obj()
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = "averaged_perceptron_tagger_eng"
    (out_dir / f"{prefix}.weights.json").write_text(json.dumps(weights, sort_keys=True))
    (out_dir / f"{prefix}.tagdict.json").write_text(json.dumps(tagdict, sort_keys=True))
    (out_dir / f"{prefix}.classes.json").write_text(json.dumps(sorted(classes)))


TRICKY = [
    'He said, "I can\'t go." Then he left...',
    "U.S. troops arrived at 3 p.m. on Jan. 5. The rest came later.",
    "Prices: $3.88, 12%, #1 & @home; 1,000,000 people. 2.5 km.",
    "(Parenthetical.) Next sentence. [Bracketed!] {Braced?}",
    "e.g. the dog; i.e. the cat. Mr. Brown met Dr. No at St. Louis.",
    "Wait... what?! Really?? Yes!!! No...",
    "O'Neil isn't 'here' \u2014 he's gone\u2013far, y'all'd've.",
    "\u2018single\u2019 \u00abguillemets\u00bb \u201edouble\u201c \u201ccurly.\u201d Next.",
    "A. B. Smith went home. J. R. R. Tolkien wrote it.",
    "end with colon: and comma, then:",
    "gonna wanna gimme lemme gotta cannot d'ye more'n",
    "'Tis true and 'twas so.",
    "multi\nline\ttext\r\nwith\u00a0nbsp and\n\nparagraphs.",
    "ends with a newline.\n",
    "",
    "   ",
    "na\u00efve caf\u00e9 r\u00e9sum\u00e9 stra\u00dfe \u00dcber.",
    "x--y -- a---b **bold** a/b Hello.World",
    'The end."',
    "(a) (b) (c). No. 5 is here. It costs 5. Then 6.",
    "I. am. here. Orange cars and light trees!",
    "THE DOG'S BALL ISN'T RED. IT IS BLUE.",
    "A well-known 1999 model, 42 units, 3rd place.",
    "<tag> and 'quoted' and ''double single'' and ``latex''.",
    "She asked: 'Why?' He answered - 'Because.'",
]


def main():
    rlaifv = pathlib.Path(sys.argv[1])
    rng = random.Random(SEED)
    if OUT.exists():
        shutil.rmtree(OUT)
    root = nltk_env.make()
    tagger_dir = OUT / "tagger"
    train_tagger(random.Random(SEED), tagger_dir)
    shutil.copytree(tagger_dir, root / "taggers/averaged_perceptron_tagger_eng")
    import nltk
    from nltk.corpus import wordnet as wn

    import amber
    import chair

    print("nltk", nltk.__version__)

    # ---- Object HalBench ----
    images, categories, instances, captions, truth_classes = synthetic.coco(rng)
    obj = OUT / "objhal"
    (obj / "coco").mkdir(parents=True)
    (obj / "synonyms.txt").write_text(synthetic.SYNONYMS)
    dump(obj / "coco/instances_val2014.json", {
        "info": {"description": "synthetic"}, "licenses": [], "images": [{"id": i} for i in images],
        "annotations": [{"id": k, "image_id": im, "category_id": c, "segmentation": [[0, 0, 1, 1]], "area": 1.0}
                        for k, (im, c) in enumerate(instances)],
        "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n in categories.items()],
    })
    dump(obj / "coco/captions_val2014.json", {
        "info": {}, "images": [{"id": i} for i in images],
        "annotations": [{"id": k, "image_id": im, "caption": t} for k, (im, t) in enumerate(captions)],
    })
    answers = synthetic.objhal_answers(rng, images, truth_classes)
    question = "Describe this image in detail."
    dump_lines(obj / "questions.jsonl", [
        {"image_id": im, "question": question, "image": synthetic.tiny_b64(rng)} for im in images])
    # Half in generate's format, half in RLAIF-V's.
    dump_lines(obj / "answers.jsonl", [
        {"id": im, "question": question, "answer": t} if k % 2 else
        {"question_id": k, "image_id": im, "prompt": question, "text": t}
        for k, (im, t) in enumerate(answers)])
    vocab = chair.Vocabulary(synthetic.SYNONYMS)
    coco = {"categories": categories, "instances": instances, "captions": captions}
    used = sorted({im for im, _ in answers})
    truth = chair.ground_truth(vocab, coco, used)
    items = [(im, t.replace("Assistant:", "").strip()) for im, t in answers]
    summary, details = chair.evaluate(vocab, truth, items)
    dump(obj / "golden_summary.json", summary)
    dump_lines(obj / "golden_details.jsonl", details)
    ext = template_of(rlaifv / "eval/eval_gpt_obj_halbench.py", "prompt_template")
    q, a = "What is in the image?", items[1][1]
    dump(obj / "extractor_prompt.json", {"question": q, "answer": a,
                                         "prompt": ext.replace("{question}", q).replace("{answer}", a)})

    # ---- AMBER ----
    annotations, queries, amber_answers = synthetic.amber(rng)
    am = OUT / "amber"
    dump(am / "data/annotations.json", annotations)
    dump(am / "data/relation.json", synthetic.AMBER_RELATION)
    (am / "data/safe_words.txt").write_text("\n".join(synthetic.AMBER_SAFE))
    dump(am / "data/query/query_all.json", queries)
    dump(am / "answers.json", amber_answers)
    table = synthetic.similarity_table(rng)
    (am / "similarity.tsv").write_text(
        "# amber-similarity floor=0.3 model=synthetic\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in table))
    pairs = {frozenset((a, b)): s for a, b, s in table}
    data = {
        "annotations": annotations, "association": synthetic.AMBER_RELATION,
        "vocabulary": set(synthetic.AMBER_WORDS), "safe_words": synthetic.AMBER_SAFE,
    }
    exact = lambda a, b: a == b  # noqa: E731
    by_table = lambda a, b: a == b or pairs.get(frozenset((a, b)), 0.0) > 0.8  # noqa: E731
    ids = [(x["id"], x["response"]) for x in amber_answers]
    for name, similar, tagger in [("exact_untagged", exact, False), ("table_tagged", by_table, True)]:
        s, d = amber.evaluate(data, ids, similar, tagger)
        dump(am / f"golden_{name}.json", {"summary": s, "details": d})

    # ---- MMHal-Bench ----
    records, mm_answers, replies = synthetic.mmhal(rng)
    mm = OUT / "mmhal"
    dump(mm / "template.json", records)
    dump_lines(mm / "answers.jsonl", mm_answers)
    tpl = template_of(rlaifv / "eval/eval_gpt_mmhal.py", "template")
    exchanges = []
    for r, a, reply in zip(records, mm_answers, replies):
        answer = a["answer"].replace("Assistant:", "").strip()
        exchanges.append({"prompt": tpl.format(", ".join(r["image_content"]), r["question"], r["gt_answer"], answer),
                          "reply": reply})
    dump(mm / "exchanges.json", exchanges)
    scores = []
    for reply in replies:
        found = [s for s in range(7) if f"rating: {s}" in reply.lower()]
        scores.append(found[0] if len(found) == 1 else 0)
    informative = [s - 3 if s >= 3 else s for s in scores]
    per_type = {}
    for r, s in zip(records, scores):
        per_type.setdefault(r["question_type"], []).append(s)
    dump(mm / "golden_summary.json", {
        "average_score": sum(scores) / len(scores),
        "hallucination_rate": sum(s < 3 for s in scores) / len(scores),
        "informativeness": sum(informative) / len(informative) / 3 * 100,
        "per_type": [[k, sum(v) / len(v)] for k, v in per_type.items()],
        "unparsed_ratings": sum(len([s for s in range(7) if f"rating: {s}" in x.lower()]) != 1 for x in replies),
    })

    # ---- NLP pieces, text by text ----
    lem = nltk.stem.WordNetLemmatizer()
    texts = TRICKY + [t for _, t in answers] + [t for _, t in captions] + [x["response"] for x in amber_answers]
    rows, words = [], set()
    for t in dict.fromkeys(texts):
        tokens = nltk.word_tokenize(t)
        lower = nltk.word_tokenize(t.lower())
        words.update(tokens + lower)
        rows.append({
            "text": t, "sentences": nltk.sent_tokenize(t), "tokens": tokens,
            "tags": [tag for _, tag in nltk.pos_tag(tokens)],
            "lemmas": [lem.lemmatize(w) for w in tokens], "lemmas_lower": [lem.lemmatize(w) for w in lower],
        })
    dump_lines(OUT / "nlp.jsonl", rows)

    # ---- the WordNet subset ----
    exc = wn._exception_map["n"]
    rules = wn.MORPHOLOGICAL_SUBSTITUTIONS["n"]
    reach = set()
    for w in words:
        reach.add(w)
        reach.update(exc[w] if w in exc else [w[: -len(o)] + n for o, n in rules if w.endswith(o)])
    src = nltk_env.WORDNET
    kept = [l for l in (src / "index.noun").read_text().splitlines(keepends=True)
            if l.startswith(" ") or l.split(" ", 1)[0] in reach]
    (OUT / "wordnet").mkdir()
    (OUT / "wordnet/index.noun").write_text("".join(kept))
    (OUT / "wordnet/noun.exc").write_text("".join(
        l for l in (src / "noun.exc").read_text().splitlines(keepends=True) if l.split(" ", 1)[0] in words))
    subset = {l.split(" ", 1)[0] for l in kept if not l.startswith(" ")}
    for w in words:
        assert set(wn._morphy(w, "n")) <= subset, w
    shutil.copy("/usr/share/doc/wordnet-base/copyright", OUT / "wordnet/LICENSE")
    print(f"{len(rows)} texts, {len(words)} words, {len(subset)} WordNet lemmas kept")
    print("objhal", json.dumps(summary))


if __name__ == "__main__":
    main()

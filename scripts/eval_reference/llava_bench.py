"""Golden values for dama-eval's LLaVA-Bench judge, from an independent implementation of
LLaVA's reference (haotian-liu/LLaVA, llava/eval/eval_gpt_review_bench.py and
llava/eval/summarize_gpt_review.py), on synthetic data. Writes
crates/dama-eval/tests/fixtures/llava_bench/.

    python3 scripts/eval_reference/llava_bench.py        # needs numpy, as the reference

What the reference does, and this script with it:

- for each line of questions.jsonl, zipped with the reference answers (answers_gpt4.jsonl) and
  the model's answers by position: the image's context from context.jsonl
  (`'\\n'.join(inst['caption'])`: a list's items one a line, a string one character a line), the
  rule of category `'llava_bench_' + category` from rule.json, and the content
  `[Context]\\n{cap}\\n\\n[Question]\\n{q}\\n\\n[{role} 1]\\n{a1}\\n\\n[End of {role} 1]\\n\\n`
  `[{role} 2]\\n{a2}\\n\\n[End of {role} 2]\\n\\n[System]\\n{prompt}\\n\\n`, sent after the system
  message 'You are a helpful and precise assistant for checking the quality of the answer.' at
  temperature 0.2;
- `parse_score`: the reply's first line, commas made spaces, split on single spaces; exactly
  two parts are the two scores (`float`), anything else [-1, -1];
- the summary: per category and over all, the mean of the score pairs (numpy), each rounded to
  3 decimals, and the relative score round(mean2 / mean1 * 100, 1).

The rule file here is synthetic (the real one is LLaVA's llava/eval/table/rule.json, which the
user passes): the code reads its prompts, it embeds none.
"""

import json
import pathlib
import random
from collections import defaultdict

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / "crates/dama-eval/tests/fixtures/llava_bench"
SEED = 20261204
SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."

RULES = {
    "llava_bench_conv": {"role": "Assistant", "prompt": "Rate the two answers to a conversation question (synthetic rule).\nFirst line: two scores."},
    "llava_bench_detail": {"role": "Assistant", "prompt": "Rate the two detailed descriptions (synthetic rule)."},
    "llava_bench_complex": {"role": "Helper", "prompt": "Rate the two reasoning answers, {braces} kept (synthetic rule)."},
    "default": {"role": "Assistant", "prompt": "Not a LLaVA-Bench category."},
}

OBJECTS = ["dog", "cat", "red car", "bicycle", "street sign", "cake", "window", "person"]


def parse_score(review):
    try:
        score_pair = review.split("\n")[0]
        score_pair = score_pair.replace(",", " ")
        sp = score_pair.split(" ")
        if len(sp) == 2:
            return [float(sp[0]), float(sp[1])]
        return [-1, -1]
    except Exception:
        return [-1, -1]


def content(cap_str, question, role, a1, a2, prompt):
    return (f"[Context]\n{cap_str}\n\n"
            f"[Question]\n{question}\n\n"
            f"[{role} 1]\n{a1}\n\n[End of {role} 1]\n\n"
            f"[{role} 2]\n{a2}\n\n[End of {role} 2]\n\n"
            f"[System]\n{prompt}\n\n")


def reply(rng, i):
    first = rng.choice([
        "{a} {b}", "{a},{b}", "{a}, {b}", "{a} {b}", "{a}.5 {b}", "Scores: {a} {b}", "{a}  {b}",
        "{a}", "{a} {b}\r", "{a} {b}",
    ]).format(a=rng.randint(1, 10), b=rng.randint(1, 10))
    return first + "\n" + f"Assistant 1 is more precise about the {rng.choice(OBJECTS)} (review {i})."


def main():
    rng = random.Random(SEED)
    images = [f"{k:03d}.jpg" for k in range(1, 5)]
    context = []
    for k, image in enumerate(images):
        objs = rng.sample(OBJECTS, 3)
        caption = ([f"A photo with a {o}." for o in objs] if k % 2 == 0
                   else f"A {objs[0]} next to a {objs[1]}.")  # a string: joined per character
        context.append({"id": image[:3], "image": image, "caption": caption})
    questions, reference, answers, replies = [], [], [], []
    categories = ["conv", "detail", "complex"]
    for i in range(15):
        image = images[i % len(images)]
        cat = categories[i % 3]
        obj = rng.choice(OBJECTS)
        text = {"conv": f"What colour is the {obj}?",
                "detail": "Describe this photo in detail.",
                "complex": f"Why might the {obj} be there?"}[cat]
        questions.append({"question_id": i, "image": image, "text": text, "category": cat})
        reference.append({"question_id": i, "answer_id": f"ref{i}", "model_id": "gpt-4-0314",
                          "text": f"The {obj} is there (reference {i})."})
        answers.append({"question_id": i, "prompt": text, "answer_id": f"m{i}", "model_id": "dama",
                        "text": rng.choice(["", "I think "]) + f"a {rng.choice(OBJECTS)} is visible."})
        replies.append(reply(rng, i))

    image_to_context = {c["image"]: c for c in context}
    exchanges, scores = [], defaultdict(list)
    for q, a1, a2, r in zip(questions, reference, answers, replies):
        cap_str = "\n".join(image_to_context[q["image"]]["caption"])
        category = "llava_bench_" + q["category"]
        rule = RULES[category]
        prompt = content(cap_str, q["text"], rule["role"], a1["text"], a2["text"], rule["prompt"])
        exchanges.append({"system": SYSTEM, "prompt": prompt, "reply": r})
        tup = parse_score(r)
        scores[category].append(tup)
        scores["all"].append(tup)
    summary = {}
    for k, v in sorted(scores.items()):
        stats = np.asarray(v).mean(0).tolist()
        stats = [round(x, 3) for x in stats]
        summary[k] = {"reference": stats[0], "model": stats[1], "relative": round(stats[1] / stats[0] * 100, 1),
                      "questions": len(v)}
    unparsed = sum(parse_score(r) == [-1, -1] for r in replies)

    OUT.mkdir(parents=True, exist_ok=True)
    lines = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
    (OUT / "questions.jsonl").write_text(lines(questions))
    (OUT / "context.jsonl").write_text(lines(context))
    (OUT / "answers_gpt4.jsonl").write_text(lines(reference))
    (OUT / "answers.jsonl").write_text(lines(answers))
    (OUT / "rule.json").write_text(json.dumps(RULES, indent=1) + "\n")
    (OUT / "exchanges.json").write_text(json.dumps(exchanges, indent=1, ensure_ascii=False) + "\n")
    (OUT / "golden_summary.json").write_text(
        json.dumps({"categories": summary, "unparsed_scores": unparsed}, indent=1) + "\n")
    print(json.dumps(summary, indent=1), "unparsed", unparsed)


if __name__ == "__main__":
    main()

"""AMBER's scores, written from the behaviour of junyangwang0410/AMBER's inference.py,
independently of dama-eval: discriminative counts starting at 0.001, F1 from the rounded
precision and recall (+0.0001, +0.001 for existence), the generative matching with its
association lists, and a similarity function in place of spaCy."""

import nltk
from nltk.stem import WordNetLemmatizer

LEMMATIZER = WordNetLemmatizer()

GROUPS = {
    "discriminative-hallucination": "existence",
    "discriminative-attribute-state": "state",
    "discriminative-attribute-number": "number",
    "discriminative-attribute-action": "action",
}


def nouns(text, tagger):
    tokens = nltk.word_tokenize(text)
    tags = [t for _, t in nltk.pos_tag(tokens)] if tagger else ["NN"] * len(tokens)
    return [LEMMATIZER.lemmatize(w) for w, t in zip(tokens, tags) if t.startswith("NN")]


class Expansion:
    """A word list with its associated words in front; flags for the words at the back."""

    def __init__(self, objects, association):
        self.words, self.owner = [], []
        for k, o in enumerate(objects):
            self.words += association[o]
            self.owner += [k] * len(association[o])
        self.head = len(self.words)
        self.words += objects
        self.flags = [0] * len(objects)

    def mark(self, j):
        self.flags[self.owner[j] if j < self.head else j - self.head] = 1

    def first(self, word):
        return self.words.index(word) if word in self.words else None


def generative(response, truth, hallu, data, similar, tagger):
    vocab = data["vocabulary"]
    found = [n for n in nouns(response, tagger) if n in vocab]
    safe = Expansion(truth, data["association"])
    ha = Expansion(hallu, data["association"])
    flags = []
    for noun in found:
        if noun in data["safe_words"]:
            flags.append(0)
            continue
        j = safe.first(noun)
        if j is not None:
            safe.mark(j)
            flags.append(0)
            continue
        j = ha.first(noun)
        if j is not None:
            ha.mark(j)
        for j, w in enumerate(ha.words):
            if similar(noun, w):
                ha.mark(j)
                break
        hit = next((j for j, w in enumerate(safe.words) if similar(noun, w)), None)
        if hit is not None:
            safe.mark(hit)
            flags.append(0)
            continue
        flags.append(1)
    return {"nouns": found, "hallucinated": flags, "covered": safe.flags, "recognised": ha.flags}


def r1(x):
    return round(x, 1)


class Group:
    def __init__(self):
        self.n = self.no = self.ans_no = 0.001
        self.ok = self.no_ok = self.ans_no_ok = 0

    def add(self, yes, response):
        self.n += 1
        if yes:
            self.ok += response == "Yes"
        else:
            self.no += 1
            if response == "No":
                self.ok += 1
                self.no_ok += 1
        if response == "No":
            self.ans_no += 1
            self.ans_no_ok += not yes

    def scores(self, eps):
        p = r1(self.ans_no_ok / self.ans_no * 100)
        r = r1(self.no_ok / self.no * 100)
        return {
            "accuracy": r1(self.ok / self.n * 100),
            "precision": p,
            "recall": r,
            "f1": r1(2 * (p / 100) * (r / 100) / ((p / 100) + (r / 100) + eps) * 100),
            "answers": int(self.n),
            "correct": self.ok,
        }


def evaluate(data, answers, similar, tagger):
    """answers: [(id, response)] -> (summary, details)."""
    overall, groups = Group(), {}
    g = {"h": 0, "n": 0.001, "c": 0, "cn": 0.001, "r": 0, "rn": 0.001, "clean": 0, "descr": 0.001}
    details, descriptions, odd = [], 0, 0
    for id_, response in answers:
        a = data["annotations"][id_ - 1]
        if a["type"] == "generative":
            out = generative(response, a["truth"], a["hallu"], data, similar, tagger)
            g["h"] += sum(out["hallucinated"])
            g["n"] += len(out["hallucinated"])
            g["c"] += sum(out["covered"])
            g["cn"] += len(out["covered"])
            g["r"] += sum(out["recognised"])
            g["rn"] += len(out["recognised"])
            g["clean"] += sum(out["hallucinated"]) == 0
            g["descr"] += 1
            descriptions += 1
            details.append({"id": id_, "kind": "generative", "response": response, **out})
        else:
            yes = a["truth"] == "yes"
            kind = GROUPS.get(a["type"], "relation")
            overall.add(yes, response)
            groups.setdefault(kind, Group()).add(yes, response)
            odd += response not in ("Yes", "No")
            correct = response == ("Yes" if yes else "No")
            details.append({"id": id_, "kind": kind, "response": response, "correct": correct})
    summary = {}
    gen = None
    if descriptions:
        gen = {
            "CHAIR": r1(g["h"] / g["n"] * 100),
            "Cover": r1(g["c"] / g["cn"] * 100),
            "Hal": r1(100 - g["clean"] / g["descr"] * 100),
            "Cog": r1(g["r"] / g["rn"] * 100),
            "descriptions": descriptions,
            "nouns": int(g["n"]),
            "hallucinated_nouns": g["h"],
        }
    summary["generative"] = gen
    disc = overall.scores(0.0001) if any("correct" in d for d in details) else None
    summary["discriminative"] = disc
    summary["existence"] = groups["existence"].scores(0.001) if "existence" in groups else None
    parts = [groups.get(k, Group()) for k in ("state", "number", "action")]
    if any(k in groups for k in ("state", "number", "action")):
        total = Group()
        total.ok = parts[0].ok + parts[1].ok + parts[2].ok
        total.n = parts[0].n + parts[1].n + parts[2].n
        total.no_ok = parts[0].no_ok + parts[1].no_ok + parts[2].no_ok
        total.no = parts[0].no + parts[1].no + parts[2].no
        total.ans_no_ok = parts[0].ans_no_ok + parts[1].ans_no_ok + parts[2].ans_no_ok
        total.ans_no = parts[0].ans_no + parts[1].ans_no + parts[2].ans_no
        summary["attribute"] = total.scores(0.0001)
    else:
        summary["attribute"] = None
    for k in ("state", "number", "action", "relation"):
        summary[k] = groups[k].scores(0.0001) if k in groups else None
    summary["AMBER"] = (100 - gen["CHAIR"] + disc["f1"]) / 2 if gen and disc else None
    summary["not_yes_no"] = odd
    return summary, details

"""Object HalBench CHAIR, written from the behaviour of RLAIF-V's eval/eval_gpt_obj_halbench.py
(offline path: `nltk.word_tokenize(text.lower())`, WordNet noun lemmas, two-word phrases,
synonyms), independently of dama-eval. Used by make_fixtures.py for golden values."""

from nltk import word_tokenize
from nltk.stem import WordNetLemmatizer

LEMMATIZER = WordNetLemmatizer()


class Vocabulary:
    def __init__(self, synonyms_text):
        self.class_of = {}
        for raw in synonyms_text.splitlines():
            names = [n.strip() for n in raw.strip().split(", ")]
            for n in names:
                self.class_of[n] = names[0]
        self.pairs = {w: w for w in self.class_of if len(w.strip().split(" ")) > 1}
        self.pairs.update({"home plate": "home plate", "train track": "train track"})
        for a in "bird cat dog horse sheep cow elephant bear zebra giraffe animal cub".split():
            self.pairs["baby " + a] = a
            self.pairs["adult " + a] = a
        self.pairs["passenger jet"] = "jet"
        self.pairs["passenger train"] = "train"
        self.pairs["bow tie"] = "tie"
        self.pairs["toilet seat"] = "toilet"
        self.pairs["wine glas"] = "wine glass"

    def merged(self, lemmas):
        """(merged words, start index of each)."""
        out, starts, i = [], [], 0
        while i < len(lemmas):
            starts.append(i)
            pair = " ".join(lemmas[i : i + 2])
            if pair in self.pairs:
                out.append(self.pairs[pair])
                i += 2
            else:
                out.append(lemmas[i])
                i += 1
        return out, starts

    def mentions(self, text):
        """[(word, class, index)] and the merged words, as caption_to_words returns them."""
        lemmas = [LEMMATIZER.lemmatize(t) for t in word_tokenize(text.lower())]
        merged, starts = self.merged(lemmas)
        kept = merged
        if "toilet" in merged and "seat" in merged:
            kept = [w for w in merged if w != "seat"]
        # The reference pairs `starts` with positions in the filtered list.
        found = [(w, self.class_of[w], starts[k]) for k, w in enumerate(kept) if w in self.class_of]
        return found, merged


def ground_truth(vocab, coco, images):
    """coco: {"categories": {id: name}, "instances": [(image, cat)], "captions": [(image, text)]}."""
    truth = {i: set() for i in images}
    for image, cat in coco["instances"]:
        if image in truth:
            truth[image].add(vocab.class_of[coco["categories"][cat]])
    for image, text in coco["captions"]:
        if image in truth:
            truth[image].update(c for _, c, _ in vocab.mentions(text)[0])
    return truth


def evaluate(vocab, truth, items):
    """items: [(image_id, caption)] -> (summary, details)."""
    details = []
    n = n_coco = n_hall = mentions = hall_mentions = gt_total = recalled = words = 0
    for image, caption in items:
        found, merged = vocab.mentions(caption)
        gt = truth[image]
        bad = [(w, (w, c)) for w, c, _ in found if c not in gt]
        good = {c for _, c, _ in found if c in gt}
        n += 1
        n_hall += bool(bad)
        if found:
            n_coco += 1
        mentions += len(found)
        hall_mentions += len(bad)
        gt_total += len(gt)
        recalled += len(good)
        words += len(caption.strip().split(" "))
        details.append(
            {
                "image_id": image,
                "caption": caption,
                "mscoco_hallucinated_words": [[w, list(p)] for w, p in bad],
                "mscoco_gt_words": sorted(gt),
                "mscoco_generated_words": [[w, c] for w, c, _ in found],
                "hallucination_idxs": [i for w, c, i in found if c not in gt],
                "words": merged,
                "metrics": {"CHAIRs": int(bool(bad)), "CHAIRi": len(bad) / len(found) if found else 0.0},
            }
        )
    summary = {
        "CHAIRs": n_hall / n,
        "CHAIRs_refine": n_hall / n_coco,
        "CHAIRi": hall_mentions / mentions,
        "obj_rec": recalled / gt_total,
        "sentence_num": n,
        "coco_sentence_num": n_coco,
        "coco_word_count": recalled,
        "gt_word_count": gt_total,
        "avg_word_len": words / n,
        "correct_rate": 1 - n_hall / n_coco,
        "object_correct_rate": 1 - hall_mentions / mentions,
        "hallucinated_sentence_num": n_hall,
        "mention_count": mentions,
        "hallucinated_mention_count": hall_mentions,
    }
    return summary, details

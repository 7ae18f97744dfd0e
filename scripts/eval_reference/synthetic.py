"""Synthetic benchmark data in the benchmarks' formats, made up here (no real annotation is
copied): a COCO-style annotation set with a synonym list, Object HalBench questions and
answers, an AMBER data folder and answers, an MMHal-Bench template and answers, and a tagged
corpus to train a small perceptron tagger on. The answers mix correct, hallucinated, plural,
multi-word and synonym mentions, empty answers and (AMBER) answers that are not Yes/No."""

import base64
import random

# One COCO-style class a line: the class, then synonyms (", " separated), as synonyms_refine.txt.
SYNONYMS = """person, girl, boy, man, woman, child, people, skier, player, rider, baby, adult
bicycle, bike, cycle
car, automobile, van, taxi, minivan
motorcycle, motorbike, scooter, motor bike
airplane, jet, plane, aircraft, airliner
train, locomotive, tram
dog, puppy, pup, doggy
cat, kitten, kitty
elephant, mammoth
zebra
bird, pigeon, seagull, duck, goose
tie, necktie
toilet, urinal, commode
chair, seat, stool, armchair
couch, sofa, seat
dining table, table, desk, coffee table
wine glass
cup, mug
hot dog
teddy bear, teddybear
cell phone, phone, mobile phone, cellphone
traffic light, stop light, traffic signal
sports ball, ball, football, soccer ball
tennis racket, racket, racquet
knife, knives
bench
bus, minibus
pizza, pizza slice
umbrella, parasol
"""

CLASSES = [line.split(", ")[0] for line in SYNONYMS.strip().splitlines()]

# Surface forms by class: correct or hallucinated mentions draw from these.
FORMS = {
    "person": ["man", "men", "woman", "women", "people", "child", "children", "boy", "girls",
               "skier", "players", "person", "persons", "baby", "adult", "gentleman"],
    "bicycle": ["bicycle", "bikes", "bike", "cycle"],
    "car": ["car", "cars", "automobile", "vans", "taxi", "minivan"],
    "motorcycle": ["motorcycle", "motorbikes", "scooter", "motor bike"],
    "airplane": ["airplane", "jets", "plane", "passenger jet", "aircraft", "airliners"],
    "train": ["train", "trains", "passenger train", "locomotive", "train track"],
    "dog": ["dog", "dogs", "puppy", "puppies", "baby dog", "doggy"],
    "cat": ["cat", "cats", "kitten", "kittens", "adult cat"],
    "elephant": ["elephant", "elephants", "baby elephant", "mammoth"],
    "zebra": ["zebra", "zebras", "adult zebra", "baby zebra"],
    "bird": ["bird", "birds", "pigeons", "seagull", "geese", "duck"],
    "tie": ["tie", "ties", "bow tie", "necktie"],
    "toilet": ["toilet", "toilets", "toilet seat", "urinal"],
    "chair": ["chair", "chairs", "seat", "stools", "armchair"],
    "couch": ["couch", "sofas", "couches"],
    "dining table": ["dining table", "table", "tables", "desk", "coffee table", "dining tables"],
    "wine glass": ["wine glass", "wine glasses"],
    "cup": ["cup", "cups", "mug"],
    "hot dog": ["hot dog", "hot dogs"],
    "teddy bear": ["teddy bear", "teddy bears"],
    "cell phone": ["cell phone", "phones", "cellphone", "mobile phone"],
    "traffic light": ["traffic light", "traffic lights", "stop light"],
    "sports ball": ["ball", "balls", "football", "soccer ball"],
    "tennis racket": ["tennis racket", "racket", "rackets"],
    "knife": ["knife", "knives"],
    "bench": ["bench", "benches"],
    "bus": ["bus", "buses", "busses", "minibus"],
    "pizza": ["pizza", "pizzas", "pizza slice"],
    "umbrella": ["umbrella", "umbrellas", "parasol"],
}
FILLER = ["tree", "trees", "grass", "sky", "clouds", "building", "street", "road", "wall",
          "window", "water", "field", "snow", "home plate", "shadow", "sign", "glasses",
          "glass", "mice", "boxes", "leaves", "wolves", "churches", "dishes", "us"]
ADJ = ["red", "small", "large", "white", "old", "young", "wooden", "blue", "happy", "orange",
       "light", "dark", "well-known", "brown"]
VERB = ["sitting", "standing", "parked", "lying", "running", "playing", "resting", "waiting"]
PREP = ["next to", "near", "on", "under", "behind", "in front of", "beside", "on top of"]


def np_phrase(rng, noun):
    art = rng.choice(["a", "the", "two", "several", "some", "an old", "3", "a few"])
    adj = rng.choice(ADJ + [""] * 6)
    return " ".join(x for x in [art, adj, noun] if x)


def sentence(rng, nouns):
    a, b = nouns[0], nouns[1] if len(nouns) > 1 else rng.choice(FILLER)
    templates = [
        "There is {a} {v} {p} {b}.",
        "{A} is {v} {p} {b}.",
        "In the image, {a} can be seen {p} {b}, and {c} is visible in the background.",
        "The picture shows {a} and {b}; {c} is {v} nearby.",
        "I can see {a} ({b}) {p} {c}!",
        "Is that {a}? It looks like {b} {p} {c}...",
        "\u201c{A}\u201d is {v} {p} {b} \u2014 probably.",
        "Mr. Smith's {a} isn't {v} {p} {b}; e.g. {c} is there.",
        "{A}'s owner can't see {b} -- or {c}.",
    ]
    t = rng.choice(templates)
    c = nouns[2] if len(nouns) > 2 else rng.choice(FILLER)
    pa = np_phrase(rng, a)
    return t.format(a=pa, A=pa[0].upper() + pa[1:], b=np_phrase(rng, b), c=np_phrase(rng, c),
                    v=rng.choice(VERB), p=rng.choice(PREP))


def coco(rng, n_images=40):
    images = rng.sample(range(100, 600000), n_images)
    categories = {i + 1: c for i, c in enumerate(CLASSES)}
    cat_id = {c: i for i, c in categories.items()}
    instances, captions, truth_classes = [], [], {}
    for image in images:
        classes = rng.sample(CLASSES, rng.randint(1, 4))
        truth_classes[image] = classes
        for c in classes:
            for _ in range(rng.randint(1, 3)):
                instances.append((image, cat_id[c]))
        for _ in range(5):
            picks = [rng.choice(FORMS[rng.choice(classes)]) for _ in range(2)]
            if rng.random() < 0.3:
                picks.append(rng.choice(FORMS[rng.choice(CLASSES)]))
            captions.append((image, sentence(rng, picks)))
    # An image with captions but no instance annotation, as some COCO images are.
    captions.append((images[0] + 1, "A plain wall with a shadow."))
    return images + [images[0] + 1], categories, instances, captions, truth_classes


def objhal_answers(rng, images, truth_classes, n=300):
    answers = []
    for k in range(n):
        image = rng.choice(images)
        classes = truth_classes.get(image, [])
        kind = k % 10
        if kind == 0:
            text = rng.choice(["", "   ", "Assistant:", "No objects.", "A dog."])
        else:
            sents = []
            for _ in range(rng.randint(1, 4)):
                nouns = []
                for _ in range(rng.randint(1, 3)):
                    if classes and rng.random() < 0.55:
                        nouns.append(rng.choice(FORMS[rng.choice(classes)]))
                    elif rng.random() < 0.7:
                        nouns.append(rng.choice(FORMS[rng.choice(CLASSES)]))
                    else:
                        nouns.append(rng.choice(FILLER))
                sents.append(sentence(rng, nouns))
            text = " ".join(sents)
            if kind == 3:
                text = "Assistant: " + text
            if kind == 5:
                text = text.upper()
            if kind == 7:
                text = text.replace(". ", ".\n\n")
            if kind == 9:
                text += " The seat of the toilet is up."
        answers.append((image, text))
    return answers


def tiny_b64(rng):
    return base64.b64encode(bytes(rng.randrange(256) for _ in range(24))).decode()


# AMBER: object words with their associated words (relation.json), made up here.
AMBER_RELATION = {
    "dog": ["puppy", "animal"], "cat": ["kitten", "animal"], "car": ["vehicle", "automobile"],
    "tree": ["plant", "trunk"], "sky": [], "grass": ["ground", "lawn"], "person": ["man", "woman", "people", "child"],
    "table": ["desk"], "cup": ["mug"], "boat": ["ship"], "cloud": [], "sun": [], "flower": ["plant", "rose"],
    "ball": [], "bench": ["chair", "seat"], "road": ["street"], "orange": ["fruit"], "light": ["lamp"],
    "sign": [], "building": ["house", "tower"], "water": ["lake", "river", "sea"], "bird": ["animal"],
    "umbrella": [], "horse": ["pony", "animal"], "bicycle": ["bike"], "mountain": ["hill"],
}
AMBER_SAFE = ["orange", "light", "sign"]
AMBER_WORDS = sorted({w for k, v in AMBER_RELATION.items() for w in [k, *v]})
AMBER_EXTRA = ["shadow", "Dog", "Cars", "sunlight", "corner", "wall", "photo"]
AMBER_PLURAL = {"dog": "dogs", "cat": "cats", "car": "cars", "tree": "trees", "person": "persons",
                "people": "people", "child": "children", "man": "men", "woman": "women",
                "boat": "boats", "flower": "flowers", "bench": "benches", "bird": "birds",
                "horse": "horses", "bus": "buses", "glass": "glasses", "leaf": "leaves",
                "puppy": "puppies", "building": "buildings", "cloud": "clouds"}


def amber(rng, n_generative=60, n_discriminative=240):
    keys = sorted(AMBER_RELATION)
    annotations, queries = [], []
    for i in range(n_generative):
        objs = rng.sample(keys, rng.randint(1, 6))
        hallu = rng.sample([k for k in keys if k not in objs], rng.randint(0, 5))
        annotations.append({"id": i + 1, "type": "generative", "truth": objs, "hallu": hallu})
        queries.append({"id": i + 1, "image": f"AMBER_{i + 1}.jpg", "query": "Describe this image."})
    types = ["discriminative-hallucination", "discriminative-attribute-state",
             "discriminative-attribute-number", "discriminative-attribute-action",
             "discriminative-relation", "relation"]
    for j in range(n_discriminative):
        id_ = n_generative + j + 1
        annotations.append({"id": id_, "type": types[j % len(types)], "truth": rng.choice(["yes", "no"])})
        queries.append({"id": id_, "image": f"AMBER_{1 + j % n_generative}.jpg",
                        "query": f"Is there a {rng.choice(keys)} in this image?"})
    answers = []
    for a in annotations:
        if a["type"] == "generative":
            if rng.random() < 0.08:
                answers.append({"id": a["id"], "response": rng.choice(["", "Nothing here."])})
                continue
            words = []
            for _ in range(rng.randint(2, 8)):
                r = rng.random()
                if r < 0.35:
                    o = rng.choice(a["truth"])
                    words.append(rng.choice([o] + AMBER_RELATION[o]))
                elif r < 0.55 and a["hallu"]:
                    o = rng.choice(a["hallu"])
                    words.append(rng.choice([o] + AMBER_RELATION[o]))
                elif r < 0.8:
                    words.append(rng.choice(AMBER_WORDS))
                else:
                    words.append(rng.choice(AMBER_EXTRA))
                if rng.random() < 0.3:
                    words[-1] = AMBER_PLURAL.get(words[-1], words[-1])
            answers.append({"id": a["id"], "response": amber_text(rng, words)})
        else:
            answers.append({"id": a["id"], "response": rng.choice(
                ["Yes", "No", "Yes", "No", "yes", "No.", "Yes, there is.", "", "no"])})
    rng.shuffle(answers)
    return annotations, queries, answers


def amber_text(rng, words):
    out = []
    for i in range(0, len(words), 2):
        pair = words[i : i + 2]
        if len(pair) == 1:
            pair.append(rng.choice(AMBER_EXTRA))
        t = rng.choice([
            "The {a} is next to the {b}.", "A {adj} {a} stands near some {b}.",
            "There are {a} and {b} in the photo.", "An {adj} {a} lies on the {b}, under a light.",
            "I see the {a}; the {b} looks {adj}.", "Orange {a} and {adj} {b}!",
        ])
        out.append(t.format(a=pair[0], b=pair[1], adj=rng.choice(ADJ)))
    return " ".join(out)


def similarity_table(rng):
    """Made-up similarities over AMBER_WORDS, some above 0.8."""
    rows = []
    for i, a in enumerate(AMBER_WORDS):
        for b in AMBER_WORDS[i + 1 :]:
            s = rng.random()
            if s > 0.55:
                rows.append((a, b, round(0.3 + (s - 0.55) * 1.5, 6)))
    return rows


# Tagged sentences for training a small perceptron tagger (PTB tags).
def tagged_corpus(rng, n=220):
    nouns = AMBER_WORDS + ["photo", "wall", "corner", "shadow"]
    plural = {w: AMBER_PLURAL.get(w, w + "s") for w in nouns}
    adjs = ["red", "small", "large", "white", "old", "young", "blue", "happy", "dark", "brown"]
    out = []
    for _ in range(n):
        k = rng.randrange(5)
        n1, n2 = rng.choice(nouns), rng.choice(nouns)
        if k == 0:
            s = [("The", "DT"), (n1, "NN"), ("is", "VBZ"), ("next", "JJ"), ("to", "TO"), ("the", "DT"), (n2, "NN"), (".", ".")]
        elif k == 1:
            s = [("A", "DT"), (rng.choice(adjs), "JJ"), (n1, "NN"), ("stands", "VBZ"), ("near", "IN"), ("some", "DT"), (plural[n2], "NNS"), (".", ".")]
        elif k == 2:
            s = [("There", "EX"), ("are", "VBP"), (plural[n1], "NNS"), ("and", "CC"), (plural[n2], "NNS"), ("in", "IN"), ("the", "DT"), ("photo", "NN"), (".", ".")]
        elif k == 3:
            s = [("I", "PRP"), ("see", "VBP"), ("the", "DT"), (n1, "NN"), (";", ":"), ("the", "DT"), (n2, "NN"), ("looks", "VBZ"), (rng.choice(adjs), "JJ"), (".", ".")]
        else:
            s = [("Orange", "JJ"), (plural[n1], "NNS"), ("and", "CC"), ("light", "JJ"), (n2, "NN"), ("!", ".")]
        out.append(s)
    return out


MMHAL_TYPES = ["attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other"]


def mmhal(rng, n=16):
    records, answers, replies = [], [], []
    for i in range(n):
        t = MMHAL_TYPES[i % 8]
        obj = rng.choice(CLASSES)
        records.append({
            "question_type": t, "question_topic": rng.choice(["outdoor", "indoor"]),
            "image_id": f"{rng.getrandbits(64):016x}", "image_src": f"https://example.org/{i}.jpg",
            "image_content": [c.capitalize() for c in rng.sample(CLASSES, rng.randint(1, 3))],
            "question": f"What is the {obj} doing in the picture {{{i}}}?",
            "gt_answer": f"The {obj} is resting.", "model_answer": "",
        })
        answers.append({"id": i, "question": records[-1]["question"],
                        "answer": rng.choice(["Assistant: ", ""]) + f"It seems the {obj} is {rng.choice(VERB)}."})
        rating = rng.choice([0, 1, 2, 3, 4, 5, 6, None, "both"])
        if rating is None:
            replies.append("The response is fine but I will not rate it.")
        elif rating == "both":
            replies.append("Rating: 2 at first, then Rating: 4 on reflection.")
        else:
            replies.append(f"Explanation: made up.\n{rng.choice(['Rating', 'RATING', 'rating'])}: {rating}, as listed.")
    return records, answers, replies

//! A small Object HalBench written by the tests: COCO-style annotations, questions with embedded
//! PNGs, answers in both answer-file styles, and what CHAIR must count on them.

use super::*;
use std::collections::{BTreeSet, HashMap};

use serde_json::json;

/// One image: its COCO instance classes and its captions with the classes each mentions.
pub struct Image {
    pub id: i64,
    pub instances: &'static [&'static str],
    pub captions: &'static [(&'static str, &'static [&'static str])],
}

/// One answer: its text and the (word, class) of each COCO object it mentions, in order.
pub struct Answer {
    pub image: i64,
    pub text: &'static str,
    pub mentions: &'static [(&'static str, &'static str)],
}

pub const SYNONYMS: &str = "person, man, woman, people, child\ndog, puppy\ncat, kitten\n\
car, automobile\ndining table, table\nteddy bear\nbicycle, bike\ntoilet\n";

pub const IMAGES: [Image; 5] = [
    Image {
        id: 101,
        instances: &["person", "dog"],
        captions: &[
            ("A man walks a dog.", &["person", "dog"]),
            ("A person and a dog outside.", &["person", "dog"]),
        ],
    },
    Image {
        id: 102,
        instances: &["car"],
        captions: &[("A car parked by a bike.", &["car", "bicycle"])],
    },
    Image {
        id: 103,
        instances: &["dining table", "cat"],
        captions: &[("A cat on a table.", &["cat", "dining table"])],
    },
    Image {
        id: 104,
        instances: &["toilet"],
        captions: &[("A small bathroom.", &[])],
    },
    Image {
        id: 105,
        instances: &["teddy bear", "person"],
        captions: &[("A child holds a teddy bear.", &["person", "teddy bear"])],
    },
];

/// Plurals, a WordNet exception (men), two-word classes, "toilet seat" and "baby X".
pub const ANSWERS: [Answer; 8] = [
    Answer {
        image: 101,
        text: "Two men walk two dogs. A cat sits near them.",
        mentions: &[("man", "person"), ("dog", "dog"), ("cat", "cat")],
    },
    Answer {
        image: 102,
        text: "There is a car and a bike on the road.",
        mentions: &[("car", "car"), ("bike", "bicycle")],
    },
    Answer {
        image: 103,
        text: "Kittens sit on the dining table next to a puppy.",
        mentions: &[
            ("kitten", "cat"),
            ("dining table", "dining table"),
            ("puppy", "dog"),
        ],
    },
    Answer {
        image: 104,
        text: "The toilet seat is white.",
        mentions: &[("toilet", "toilet")],
    },
    Answer {
        image: 105,
        text: "A baby dog and a teddy bear on a bike.",
        mentions: &[
            ("dog", "dog"),
            ("teddy bear", "teddy bear"),
            ("bike", "bicycle"),
        ],
    },
    Answer {
        image: 101,
        text: "",
        mentions: &[],
    },
    Answer {
        image: 103,
        text: "A nice room with people.",
        mentions: &[("people", "person")],
    },
    Answer {
        image: 105,
        text: "A quiet scene.",
        mentions: &[],
    },
];

pub const QUESTION: &str = "Describe this image in detail.";

/// A WordNet `dict` folder in WordNet's format with the nouns of the design: the forms the
/// answers use reduce to these by morphy's rules ("dogs" → "dog") or `noun.exc` ("men").
pub fn write_wordnet(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let nouns = [
        "person",
        "man",
        "woman",
        "people",
        "child",
        "dog",
        "puppy",
        "cat",
        "kitten",
        "car",
        "automobile",
        "table",
        "bicycle",
        "bike",
        "toilet",
        "seat",
        "bear",
        "baby",
        "room",
    ];
    let index: String = std::iter::once("  1 synthetic index for a test\n".to_owned())
        .chain(nouns.iter().map(|n| format!("{n} n 1 0 1 0 00000000\n")))
        .collect();
    std::fs::write(dir.join("index.noun"), index).unwrap();
    std::fs::write(dir.join("noun.exc"), "men man\nchildren child\n").unwrap();
}

/// COCO 2014's files for the design (with the fields the real ones have around the used ones).
pub fn write_coco(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let classes: BTreeSet<&str> = IMAGES
        .iter()
        .flat_map(|i| i.instances.iter().copied())
        .collect();
    let category: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(k, c)| (*c, k + 1))
        .collect();
    let mut instances = Vec::new();
    let mut captions = Vec::new();
    for image in &IMAGES {
        for c in image.instances {
            instances.push(json!({
                "id": instances.len() + 1, "image_id": image.id, "category_id": category[c],
                "segmentation": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], "area": 12.5,
                "bbox": [1.0, 2.0, 3.0, 4.0], "iscrowd": 0
            }));
        }
        for (caption, _) in image.captions {
            captions
                .push(json!({"id": captions.len() + 1, "image_id": image.id, "caption": caption}));
        }
    }
    let images: Vec<Value> = IMAGES
        .iter()
        .map(|i| json!({"id": i.id, "width": 6, "height": 4}))
        .collect();
    let categories: Vec<Value> = classes
        .iter()
        .map(|c| json!({"id": category[c], "name": c, "supercategory": "thing"}))
        .collect();
    std::fs::write(
        dir.join("instances_val2014.json"),
        json!({"info": {}, "images": images, "annotations": instances, "categories": categories})
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("captions_val2014.json"),
        json!({"info": {}, "images": images, "annotations": captions}).to_string(),
    )
    .unwrap();
}

/// The answers, in `generate`'s style (`id`, `question`, `answer`) and RLAIF-V's
/// (`question_id`, `image_id`, `prompt`, `text`) by turns.
pub fn answer_lines() -> Vec<Value> {
    ANSWERS
        .iter()
        .enumerate()
        .map(|(k, a)| {
            if k % 2 == 0 {
                json!({"id": a.image.to_string(), "question": QUESTION, "answer": a.text})
            } else {
                json!({"question_id": k, "image_id": a.image, "prompt": QUESTION, "text": a.text})
            }
        })
        .collect()
}

pub struct Design {
    pub questions: PathBuf,
    pub coco: PathBuf,
    pub synonyms: PathBuf,
    pub wordnet: PathBuf,
    pub answers: PathBuf,
}

pub fn design(dir: &Path) -> Design {
    let d = Design {
        questions: dir.join("questions.jsonl"),
        coco: dir.join("coco"),
        synonyms: dir.join("synonyms.txt"),
        wordnet: dir.join("wordnet"),
        answers: dir.join("answers.jsonl"),
    };
    let questions: Vec<Value> = IMAGES
        .iter()
        .map(|i| json!({"image_id": i.id, "question": QUESTION, "image": png_base64(i.id as u8)}))
        .collect();
    write_lines(&d.questions, &questions);
    write_coco(&d.coco);
    std::fs::write(&d.synonyms, SYNONYMS).unwrap();
    write_wordnet(&d.wordnet);
    write_lines(&d.answers, &answer_lines());
    d
}

pub fn objhal(
    d: &Design,
    answers: &Path,
    out: &Path,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"objhal",
        &"--questions",
        &d.questions,
        &"--coco",
        &d.coco,
        &"--synonyms",
        &d.synonyms,
        &"--wordnet",
        &d.wordnet,
        &"--answers",
        &answers,
        &"--out",
        &out,
    ];
    args.extend_from_slice(extra);
    eval(&args)
}

/// The image's ground truth: its instances and what its captions mention.
pub fn truth(image: i64) -> BTreeSet<&'static str> {
    let i = IMAGES.iter().find(|i| i.id == image).unwrap();
    i.instances
        .iter()
        .copied()
        .chain(i.captions.iter().flat_map(|(_, c)| c.iter().copied()))
        .collect()
}

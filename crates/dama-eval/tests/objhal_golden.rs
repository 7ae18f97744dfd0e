//! Object HalBench CHAIR on 300 synthetic answers against the independent reference
//! (scripts/eval_reference/chair.py with real NLTK): every summary number and every answer's
//! details.

mod common;

use dama_eval::objhal::{self, Inputs, OfflineExtractor, Prepared};

fn prepared() -> Prepared {
    let dir = common::fixtures().join("objhal");
    let inputs = Inputs {
        synonyms: &dir.join("synonyms.txt"),
        coco: &dir.join("coco"),
        questions: Some(&dir.join("questions.jsonl")),
        answers: &dir.join("answers.jsonl"),
    };
    Prepared::load(&inputs, common::lemmatizer()).unwrap()
}

#[test]
fn chair_equals_the_reference() {
    let p = prepared();
    let report = objhal::compute(
        &p.answers,
        &p.items,
        &p.truth,
        &OfflineExtractor(&p.finder),
        |_| {},
    )
    .unwrap();
    let dir = common::fixtures().join("objhal");
    let summary = serde_json::to_value(&report.summary).unwrap();
    common::assert_close(
        &summary,
        &common::read_json(dir.join("golden_summary.json")),
        "summary",
    );
    let golden = common::read_jsonl(dir.join("golden_details.jsonl"));
    assert_eq!(report.details.len(), golden.len());
    for (i, (d, g)) in report.details.iter().zip(&golden).enumerate() {
        common::assert_close(
            &serde_json::to_value(d).unwrap(),
            g,
            &format!("details[{i}]"),
        );
    }
    // The fixture exercises what it is meant to.
    let s = &report.summary;
    assert!(s.hallucinated_sentence_num > 50 && s.coco_sentence_num < s.sentence_num);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("not Object HalBench's 300"))
    );
    let words: Vec<&str> = report
        .details
        .iter()
        .flat_map(|d| d.words.iter().map(String::as_str))
        .collect();
    for phrase in [
        "dining table",
        "teddy bear",
        "zebra",
        "toilet",
        "home plate",
        "jet",
    ] {
        assert!(words.contains(&phrase), "no {phrase:?} in the fixture");
    }
}

//! AMBER on synthetic data against the independent reference (scripts/eval_reference/amber.py
//! with real NLTK): exact matching without a tagger, and a similarity table with the fixture's
//! perceptron tagger.

mod common;

use dama_eval::amber::{self, AmberData, GenerativeScorer, NounFinder, Similarity};
use dama_eval::answers::Answers;

fn check(similarity: Similarity, tagged: bool, golden: &str) {
    let dir = common::fixtures().join("amber");
    let data = AmberData::load(&dir.join("data")).unwrap();
    let answers = Answers::read(&dir.join("answers.json")).unwrap();
    let (tokenizer, lemmatizer, tagger) =
        (common::tokenizer(), common::lemmatizer(), common::tagger());
    let nouns = NounFinder {
        tokenizer: &tokenizer,
        lemmatizer: &lemmatizer,
        tagger: tagged.then_some(&tagger),
    };
    let scorer = GenerativeScorer {
        association: &data.association,
        vocabulary: &data.vocabulary,
        safe_words: &data.safe_words,
        similarity: &similarity,
        threshold: amber::DEFAULT_THRESHOLD,
    };
    let report = amber::evaluate(&data, &answers, &nouns, &scorer, |_| {}).unwrap();
    let g = common::read_json(dir.join(golden));
    common::assert_close(
        &serde_json::to_value(&report.summary).unwrap(),
        &g["summary"],
        "summary",
    );
    let details = g["details"].as_array().unwrap();
    assert_eq!(report.details.len(), details.len());
    for (i, (d, e)) in report.details.iter().zip(details).enumerate() {
        common::assert_close(
            &serde_json::to_value(d).unwrap(),
            e,
            &format!("details[{i}]"),
        );
    }
    assert!(report.summary.not_yes_no > 0 && report.summary.amber.is_some());
}

#[test]
fn exact_matching_without_a_tagger() {
    check(Similarity::Exact, false, "golden_exact_untagged.json");
}

#[test]
fn similarity_table_with_the_tagger() {
    let table = Similarity::load(&common::fixtures().join("amber/similarity.tsv")).unwrap();
    check(table, true, "golden_table_tagged.json");
}

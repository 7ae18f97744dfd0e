//! Shared by the golden tests: the fixture paths and the NLP pieces built on them.
#![allow(dead_code)]

use std::path::PathBuf;

use dama_eval::nlp::{NounLemmatizer, PerceptronTagger, WordTokenizer};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The WordNet subset the fixture script wrote (every lemma morphy can reach from a fixture
/// word, checked there against the whole of WordNet 3.0).
pub fn lemmatizer() -> NounLemmatizer {
    NounLemmatizer::load(&fixtures().join("wordnet")).unwrap()
}

pub fn tagger() -> PerceptronTagger {
    PerceptronTagger::load(&fixtures().join("tagger")).unwrap()
}

pub fn tokenizer() -> WordTokenizer {
    WordTokenizer::new()
}

pub fn read_jsonl(path: PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn read_json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Numbers compare to 1e-12, everything else exactly; the path names the first difference.
pub fn assert_close(actual: &serde_json::Value, expected: &serde_json::Value, path: &str) {
    use serde_json::Value::*;
    match (actual, expected) {
        (Number(a), Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-12, "{path}: {a} != {b}");
        }
        (Array(a), Array(b)) => {
            assert_eq!(
                a.len(),
                b.len(),
                "{path}: lengths differ: {actual} vs {expected}"
            );
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Object(a), Object(b)) => {
            for (k, y) in b {
                let x = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}: no `{k}` in {actual}"));
                assert_close(x, y, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

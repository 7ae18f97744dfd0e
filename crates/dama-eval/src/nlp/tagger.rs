//! `nltk.pos_tag(tokens)`: NLTK's averaged-perceptron tagger at inference
//! (nltk/tag/perceptron.py, `PerceptronTagger.tag`), reading NLTK's model files
//! (`averaged_perceptron_tagger_eng.{weights,tagdict,classes}.json`, the folder
//! `nltk.download("averaged_perceptron_tagger_eng")` writes).
//!
//! NLTK's trained weights are on no package registry (PyPI, npm and Debian were checked; see
//! README.md, "Measuring hallucination"), so the project cannot ship them: a user who has
//! them passes the folder, and AMBER's noun filter is then NLTK's exactly. The algorithm is checked against NLTK on
//! small synthetic weights.

use std::collections::HashMap;
use std::path::Path;

use crate::EvalError;

/// NLTK's file names, `averaged_perceptron_tagger_{lang}.{part}.json`.
pub const MODEL_PREFIX: &str = "averaged_perceptron_tagger_eng";

const START: [&str; 2] = ["-START-", "-START2-"];
const END: [&str; 2] = ["-END-", "-END2-"];

pub struct PerceptronTagger {
    /// Feature → (class, weight).
    weights: HashMap<String, Vec<(String, f64)>>,
    tagdict: HashMap<String, String>,
    classes: Vec<String>,
}

impl PerceptronTagger {
    /// Reads the three JSON files from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        fn read<T: serde::de::DeserializeOwned>(dir: &Path, part: &str) -> Result<T, EvalError> {
            let path = dir.join(format!("{MODEL_PREFIX}.{part}.json"));
            let bytes = std::fs::read(&path).map_err(|e| EvalError::io(&path, e))?;
            serde_json::from_slice(&bytes).map_err(|e| EvalError::json(&path, None, e))
        }
        let weights: HashMap<String, HashMap<String, f64>> = read(dir, "weights")?;
        Ok(Self {
            weights: weights
                .into_iter()
                .map(|(feature, w)| (feature, w.into_iter().collect()))
                .collect(),
            tagdict: read(dir, "tagdict")?,
            classes: read(dir, "classes")?,
        })
    }

    /// The tag of each token.
    pub fn tag(&self, tokens: &[String]) -> Vec<String> {
        let mut context: Vec<String> = START.iter().map(|s| s.to_string()).collect();
        context.extend(tokens.iter().map(|t| normalize(t)));
        context.extend(END.iter().map(|s| s.to_string()));
        let (mut prev, mut prev2) = (START[0].to_owned(), START[1].to_owned());
        let mut tags = Vec::with_capacity(tokens.len());
        for (i, word) in tokens.iter().enumerate() {
            let tag = match self.tagdict.get(word) {
                Some(tag) if !tag.is_empty() => tag.clone(),
                _ => self.predict(&features(i, word, &context, &prev, &prev2)),
            };
            prev2 = std::mem::replace(&mut prev, tag.clone());
            tags.push(tag);
        }
        tags
    }

    /// `AveragedPerceptron.predict`: the class with the highest score, ties to the greatest
    /// name. Each class's score adds its weights in feature order, as NLTK's loop does.
    fn predict(&self, features: &[String]) -> String {
        let mut scores: HashMap<&str, f64> = HashMap::new();
        for feature in features {
            for (class, weight) in self.weights.get(feature).into_iter().flatten() {
                *scores.entry(class).or_insert(0.0) += weight;
            }
        }
        let score = |c: &str| scores.get(c).copied().unwrap_or(0.0);
        self.classes
            .iter()
            .max_by(|a, b| score(a).total_cmp(&score(b)).then_with(|| a.cmp(b)))
            .cloned()
            .unwrap_or_default()
    }
}

/// `str.isdigit()` of one character (non-ASCII: Unicode numerics, close to Python's set).
fn py_is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// `PerceptronTagger.normalize`.
fn normalize(word: &str) -> String {
    let first = word.chars().next();
    if word.contains('-') && first != Some('-') {
        "!HYPHEN".into()
    } else if !word.is_empty() && word.chars().all(py_is_digit) && word.chars().count() == 4 {
        "!YEAR".into()
    } else if first.is_some_and(py_is_digit) {
        "!DIGITS".into()
    } else {
        word.to_lowercase()
    }
}

/// The last `n` characters (`s[-n:]`).
fn suffix(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    let skip = count.saturating_sub(n);
    s.char_indices().nth(skip).map_or("", |(i, _)| &s[i..])
}

/// `PerceptronTagger._get_features`, in NLTK's order (each feature occurs once, value 1).
fn features(i: usize, word: &str, context: &[String], prev: &str, prev2: &str) -> Vec<String> {
    let i = i + START.len();
    let first: String = word.chars().take(1).collect();
    vec![
        "bias".to_owned(),
        format!("i suffix {}", suffix(word, 3)),
        format!("i pref1 {first}"),
        format!("i-1 tag {prev}"),
        format!("i-2 tag {prev2}"),
        format!("i tag+i-2 tag {prev} {prev2}"),
        format!("i word {}", context[i]),
        format!("i-1 tag+i word {prev} {}", context[i]),
        format!("i-1 word {}", context[i - 1]),
        format!("i-1 suffix {}", suffix(&context[i - 1], 3)),
        format!("i-2 word {}", context[i - 2]),
        format!("i+1 word {}", context[i + 1]),
        format!("i+1 suffix {}", suffix(&context[i + 1], 3)),
        format!("i+2 word {}", context[i + 2]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_suffixes() {
        assert_eq!(normalize("Dog"), "dog");
        assert_eq!(normalize("well-known"), "!HYPHEN");
        assert_eq!(normalize("-x"), "-x");
        assert_eq!(normalize("1999"), "!YEAR");
        assert_eq!(normalize("12"), "!DIGITS");
        assert_eq!(suffix("naïve", 3), "ïve");
        assert_eq!(suffix("a", 3), "a");
    }

    #[test]
    fn tagdict_first_then_the_best_scoring_class() {
        let dir = tempfile::tempdir().unwrap();
        let write = |part: &str, json: &str| {
            std::fs::write(dir.path().join(format!("{MODEL_PREFIX}.{part}.json")), json).unwrap()
        };
        write(
            "weights",
            r#"{"bias": {"NN": 0.5, "VB": 0.25}, "i word runs": {"VB": 1.0}}"#,
        );
        write("tagdict", r#"{"the": "DT"}"#);
        write("classes", r#"["DT", "NN", "VB", "ZZ"]"#);
        let tagger = PerceptronTagger::load(dir.path()).unwrap();
        let tokens: Vec<String> = ["the", "dog", "runs"].map(String::from).to_vec();
        assert_eq!(tagger.tag(&tokens), ["DT", "NN", "VB"]);
        // No weights at all: every class scores 0 and the greatest name wins.
        let empty = PerceptronTagger {
            weights: HashMap::new(),
            tagdict: HashMap::new(),
            classes: vec!["NN".into(), "ZZ".into(), "DT".into()],
        };
        assert_eq!(empty.tag(&tokens), ["ZZ", "ZZ", "ZZ"]);
    }
}

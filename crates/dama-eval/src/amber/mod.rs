//! AMBER (Wang et al. 2023, `inference.py`): one benchmark, two tasks.
//!
//! - Discriminative (ids past the generative ones): the answer must be exactly `Yes` or `No`
//!   (`Yes.` or `yes` is wrong, as in the reference). The positive class is "No" (the
//!   hallucination is rejected): precision = correct "No"s / answered "No"s, recall = correct
//!   "No"s / true "No"s. Every count starts at 0.001, so no ratio divides by zero; F1 adds
//!   0.0001 to its denominator (0.001 for existence), and each figure is rounded to one
//!   decimal as the reference prints it, F1 from the rounded precision and recall.
//! - Generative ([`generative`]): CHAIR, Cover, Hal (descriptions with a hallucination), Cog.
//!
//! The AMBER score is the paper's `(100 − CHAIR + F1) / 2` from the printed CHAIR and overall
//! F1 (the reference script does not compute it).

pub mod data;
pub mod generative;
pub mod similarity;

use serde::Serialize;

pub use data::{AmberData, Annotation, Kind, Truth};
pub use generative::{GenerativeOutcome, GenerativeScorer, NounFinder};
pub use similarity::Similarity;

use crate::EvalError;
use crate::answers::{Answers, as_int, show};

/// The reference's similarity threshold (`--similarity_score`).
pub const DEFAULT_THRESHOLD: f64 = 0.8;

/// `round(x, 1)` as Python does it: the double's exact value rounded to one decimal, ties to
/// even, read back as the nearest double. Rust's formatter rounds the exact value the same way.
pub fn py_round1(x: f64) -> f64 {
    format!("{x:.1}").parse().expect("a formatted float parses")
}

/// One group of discriminative counters (`*_qa_*` in `metrics.txt`), with its initial values.
#[derive(Debug, Clone, Copy)]
struct Counters {
    correct_score: f64,
    correct_num: f64,
    no_score: f64,
    no_num: f64,
    ans_no_score: f64,
    ans_no_num: f64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            correct_score: 0.0,
            correct_num: 0.001,
            no_score: 0.0,
            no_num: 0.001,
            ans_no_score: 0.0,
            ans_no_num: 0.001,
        }
    }
}

impl Counters {
    fn add(&mut self, truth_yes: bool, response: &str) {
        self.correct_num += 1.0;
        if truth_yes {
            if response == "Yes" {
                self.correct_score += 1.0;
            }
        } else {
            self.no_num += 1.0;
            if response == "No" {
                self.correct_score += 1.0;
                self.no_score += 1.0;
            }
        }
        if response == "No" {
            self.ans_no_num += 1.0;
            if !truth_yes {
                self.ans_no_score += 1.0;
            }
        }
    }

    fn sum(parts: &[Counters]) -> Counters {
        let total = |f: fn(&Counters) -> f64| parts.iter().map(f).fold(0.0, |a, b| a + b);
        Counters {
            correct_score: total(|c| c.correct_score),
            correct_num: total(|c| c.correct_num),
            no_score: total(|c| c.no_score),
            no_num: total(|c| c.no_num),
            ans_no_score: total(|c| c.ans_no_score),
            ans_no_num: total(|c| c.ans_no_num),
        }
    }

    fn scores(&self, f1_epsilon: f64) -> Discriminative {
        let percent = |a: f64, b: f64| py_round1(a / b * 100.0);
        let precision = percent(self.ans_no_score, self.ans_no_num);
        let recall = percent(self.no_score, self.no_num);
        let (p, r) = (precision / 100.0, recall / 100.0);
        Discriminative {
            accuracy: percent(self.correct_score, self.correct_num),
            precision,
            recall,
            f1: py_round1(2.0 * p * r / (p + r + f1_epsilon) * 100.0),
            answers: self.correct_num as usize,
            correct: self.correct_score as usize,
        }
    }
}

/// Accuracy, precision, recall and F1 in percent, as the reference prints them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Discriminative {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub answers: usize,
    pub correct: usize,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Generative {
    #[serde(rename = "CHAIR")]
    pub chair: f64,
    #[serde(rename = "Cover")]
    pub cover: f64,
    #[serde(rename = "Hal")]
    pub hal: f64,
    #[serde(rename = "Cog")]
    pub cog: f64,
    pub descriptions: usize,
    pub nouns: usize,
    pub hallucinated_nouns: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub generative: Option<Generative>,
    pub discriminative: Option<Discriminative>,
    pub existence: Option<Discriminative>,
    pub attribute: Option<Discriminative>,
    pub state: Option<Discriminative>,
    pub number: Option<Discriminative>,
    pub action: Option<Discriminative>,
    pub relation: Option<Discriminative>,
    /// `(100 − CHAIR + F1) / 2`, when both tasks were answered.
    #[serde(rename = "AMBER")]
    pub amber: Option<f64>,
    /// Discriminative answers that were neither exactly "Yes" nor exactly "No".
    pub not_yes_no: usize,
    pub similarity: String,
    pub tagger: String,
}

/// One answer's outcome, for `details.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub id: i64,
    pub kind: Kind,
    pub response: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub generative: Option<GenerativeOutcome>,
}

pub struct Report {
    pub summary: Summary,
    pub details: Vec<Detail>,
    pub warnings: Vec<String>,
}

/// Scores every answer (in file order, as the reference loops).
pub fn evaluate(
    data: &AmberData,
    answers: &Answers,
    nouns: &NounFinder,
    scorer: &GenerativeScorer,
    mut progress: impl FnMut(usize),
) -> Result<Report, EvalError> {
    let mut groups: std::collections::HashMap<Kind, Counters> = Default::default();
    let mut overall = Counters::default();
    let (mut chair_score, mut chair_num) = (0.0, 0.001);
    let (mut cover_score, mut cover_num) = (0.0, 0.001);
    let (mut cog_score, mut cog_num) = (0.0, 0.001);
    let (mut clean_score, mut clean_num) = (0.0, 0.001);
    let (mut descriptions, mut not_yes_no) = (0, 0);
    let mut details = Vec::with_capacity(answers.records.len());
    for record in &answers.records {
        let annotation = lookup(data, answers, record)?;
        let id = as_int(record.id.as_ref().expect("lookup checked the id")).unwrap();
        let response = &record.answer;
        let detail = match &annotation.truth {
            Truth::Objects { truth, hallu } => {
                let outcome = scorer.score(nouns.nouns(response), truth, hallu);
                let sum = |v: &[u8]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
                chair_score += sum(&outcome.hallucinated);
                chair_num += outcome.hallucinated.len() as f64;
                cover_score += sum(&outcome.covered);
                cover_num += outcome.covered.len() as f64;
                cog_score += sum(&outcome.recognised);
                cog_num += outcome.recognised.len() as f64;
                if outcome.hallucinated.iter().all(|&h| h == 0) {
                    clean_score += 1.0;
                }
                clean_num += 1.0;
                descriptions += 1;
                Detail {
                    id,
                    kind: annotation.kind,
                    response: response.clone(),
                    correct: None,
                    generative: Some(outcome),
                }
            }
            &Truth::YesNo(truth_yes) => {
                overall.add(truth_yes, response);
                groups
                    .entry(annotation.kind)
                    .or_default()
                    .add(truth_yes, response);
                if response != "Yes" && response != "No" {
                    not_yes_no += 1;
                }
                let correct = (truth_yes && response == "Yes") || (!truth_yes && response == "No");
                Detail {
                    id,
                    kind: annotation.kind,
                    response: response.clone(),
                    correct: Some(correct),
                    generative: None,
                }
            }
        };
        details.push(detail);
        progress(details.len());
    }
    let group = |k: Kind| groups.get(&k).copied();
    let scores = |k: Kind| group(k).map(|c| c.scores(1e-4));
    let any_discriminative = details.iter().any(|d| d.correct.is_some());
    let generative = (descriptions > 0).then(|| Generative {
        chair: py_round1(chair_score / chair_num * 100.0),
        cover: py_round1(cover_score / cover_num * 100.0),
        hal: py_round1(100.0 - clean_score / clean_num * 100.0),
        cog: py_round1(cog_score / cog_num * 100.0),
        descriptions,
        nouns: chair_num as usize,
        hallucinated_nouns: chair_score as usize,
    });
    let discriminative = any_discriminative.then(|| overall.scores(1e-4));
    let attribute_parts: Vec<Counters> = [Kind::State, Kind::Number, Kind::Action]
        .iter()
        .map(|&k| group(k).unwrap_or_default())
        .collect();
    let has_attribute = [Kind::State, Kind::Number, Kind::Action]
        .iter()
        .any(|&k| group(k).is_some());
    let summary = Summary {
        amber: generative
            .zip(discriminative)
            .map(|(g, d)| (100.0 - g.chair + d.f1) / 2.0),
        generative,
        discriminative,
        existence: group(Kind::Existence).map(|c| c.scores(1e-3)),
        attribute: has_attribute.then(|| Counters::sum(&attribute_parts).scores(1e-4)),
        state: scores(Kind::State),
        number: scores(Kind::Number),
        action: scores(Kind::Action),
        relation: scores(Kind::Relation),
        not_yes_no,
        similarity: scorer.similarity.name().into(),
        tagger: if nouns.tagger.is_some() {
            "nltk-perceptron"
        } else {
            "none"
        }
        .into(),
    };
    let mut warnings = Vec::new();
    if not_yes_no > 0 {
        warnings.push(format!(
            "{not_yes_no} discriminative answers are not exactly \"Yes\" or \"No\" and count as wrong, as in the reference"
        ));
    }
    if nouns.tagger.is_none() && descriptions > 0 {
        warnings.push(
            "no POS tagger (--tagger): every token in AMBER's vocabulary counts as a noun, where NLTK's tagger keeps only NN*".into(),
        );
    }
    Ok(Report {
        summary,
        details,
        warnings,
    })
}

/// The annotation an answer's id names; the id must be one of the file's, and the question,
/// when the answer carries one, the query of that id.
fn lookup<'a>(
    data: &'a AmberData,
    answers: &Answers,
    record: &crate::answers::AnswerRecord,
) -> Result<&'a Annotation, EvalError> {
    if record.image_id.is_some() {
        return Err(answers.error(
            record,
            "field `image_id`: AMBER's answers carry AMBER's `id` and no `image_id`: is this \
             an answers file of another benchmark (Object HalBench)?",
        ));
    }
    let raw = record
        .id
        .as_ref()
        .ok_or_else(|| answers.error(record, "no `id`: AMBER answers carry AMBER's query id"))?;
    let n = data.annotations.len();
    let id = as_int(raw)
        .filter(|&id| id >= 1 && id as usize <= n)
        .ok_or_else(|| {
            answers.error(
                record,
                format!(
                    "field `id`: {} is not one of AMBER's ids 1..={n} ({}): is this an answers file of another benchmark?",
                    show(raw),
                    data.dir.join("annotations.json").display()
                ),
            )
        })?;
    if let (Some(asked), Some(queries)) = (&record.question, &data.queries)
        && let Some(query) = queries.get(&id)
        && asked.trim() != query.trim()
        && !asked.contains(query.as_str())
    {
        return Err(answers.error(
            record,
            format!("field `question`: the answer is to {asked:?}, but AMBER's query {id} is {query:?}: is this an answers file of another benchmark?"),
        ));
    }
    Ok(&data.annotations[id as usize - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(py_round1(0.25), 0.2);
        assert_eq!(py_round1(0.35), 0.3); // 0.35 is 0.34999… in binary
        assert_eq!(py_round1(66.66666), 66.7);
        assert_eq!(py_round1(2.45), 2.5); // 2.45 is 2.4500000000000001776…
    }
}

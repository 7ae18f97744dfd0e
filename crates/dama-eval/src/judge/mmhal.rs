//! MMHal-Bench as RLAIF-V runs it (`eval/eval_gpt_mmhal.py`, `summarize_gpt_mmhal_review.py`):
//! the benchmark's response template (`response_template.json`, 96 records with
//! `question_type`, `image_content`, `question`, `gt_answer`, …), the rubric prompt filled
//! with the image contents (joined by ", "), the question, the human answer and the model's
//! answer, sent as one user message at temperature 0; the rating is the one `rating: N`
//! (N = 0…6) the lower-cased reply contains — none or several count as 0, with a warning.
//!
//! Summary: the average rating, the hallucination rate (ratings under 3), informativeness
//! (`s − 3` for `s ≥ 3`, else `s`, averaged, over 3, in percent) and the average rating per
//! question type.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::EvalError;
use crate::answers::{Answers, BenchmarkQuestion, ImageSource, as_int};
use crate::llm::Endpoint;

/// MMHal-Bench's rubric, verbatim (four `{}` slots: image contents, question, human answer,
/// model answer).
pub const PROMPT: &str = include_str!("mmhal_prompt.txt");
pub const ROLE: &str = "user";
pub const TEMPERATURE: f64 = 0.0;
/// The number of questions the reference asserts.
pub const BENCHMARK_QUESTIONS: usize = 96;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MmhalRecord {
    pub question_type: String,
    #[serde(default)]
    pub question_topic: String,
    pub image_id: String,
    #[serde(default)]
    pub image_src: String,
    pub image_content: Vec<String>,
    pub question: String,
    pub gt_answer: String,
    #[serde(default)]
    pub model_answer: Option<String>,
}

pub fn read_template(path: &Path) -> Result<Vec<MmhalRecord>, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| EvalError::json(path, None, e))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| {
                EvalError::at(
                    path,
                    None,
                    Some(format!("#{}", i + 1)),
                    format!("not an MMHal-Bench record: {e}"),
                )
            })
        })
        .collect()
}

/// The questions, for a generator; the answer's `id` is the record's position (0-based, as
/// RLAIF-V numbers them).
pub fn benchmark_questions(
    records: &[MmhalRecord],
    images: Option<&Path>,
) -> Vec<BenchmarkQuestion> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| BenchmarkQuestion {
            id: i.to_string(),
            question: r.question.clone(),
            image: match images {
                Some(dir) => ImageSource::Path(
                    dir.join(r.image_src.rsplit('/').next().unwrap_or(&r.image_id)),
                ),
                None => ImageSource::Url(r.image_src.clone()),
            },
        })
        .collect()
}

/// Each record's model answer: from `answers` (by `id`, the record's position, or by order
/// when the answers carry no id, as RLAIF-V merges them), else the template's own
/// `model_answer`. "Assistant:" is removed and the answer stripped, as in the reference.
pub fn merge_answers(
    template: &Path,
    records: &[MmhalRecord],
    answers: Option<&Answers>,
) -> Result<Vec<String>, EvalError> {
    let clean = |s: &str| crate::nlp::py_strip(&s.replace("Assistant:", "")).to_owned();
    let Some(answers) = answers else {
        return records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.model_answer
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .map(clean)
                    .ok_or_else(|| {
                        EvalError::at(
                            template,
                            None,
                            Some(format!("#{} ({})", i + 1, r.image_id)),
                            "no `model_answer`: pass --answers",
                        )
                    })
            })
            .collect();
    };
    let mut merged: Vec<Option<String>> = vec![None; records.len()];
    for (k, record) in answers.records.iter().enumerate() {
        let index = match &record.id {
            Some(id) => as_int(id).and_then(|i| usize::try_from(i).ok()),
            None => Some(k),
        }
        .filter(|&i| i < records.len())
        .ok_or_else(|| {
            answers.error(record, format!(
                "field `id`: not one of MMHal-Bench's {} questions (ids 0..{}): is this an answers file of another benchmark?",
                records.len(), records.len()
            ))
        })?;
        if let Some(asked) = &record.question
            && crate::nlp::py_strip(asked) != crate::nlp::py_strip(&records[index].question)
            && !asked.contains(records[index].question.as_str())
        {
            return Err(answers.error(record, format!(
                "field `question`: the answer is to {asked:?}, but MMHal-Bench's question {index} is {:?}: is this an answers file of another benchmark?",
                records[index].question
            )));
        }
        merged[index] = Some(clean(&record.answer));
    }
    merged
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.ok_or_else(|| {
                answers.error_file(format!(
                    "no answer to question {i} ({:?})",
                    records[i].question
                ))
            })
        })
        .collect()
}

/// The filled rubric (Python's `str.format` with four positional slots).
pub fn prompt(record: &MmhalRecord, answer: &str) -> String {
    let image_content = record.image_content.join(", ");
    let values = [
        image_content.as_str(),
        &record.question,
        &record.gt_answer,
        answer,
    ];
    let mut out =
        String::with_capacity(PROMPT.len() + values.iter().map(|v| v.len()).sum::<usize>());
    for (i, part) in PROMPT.split("{}").enumerate() {
        if i > 0 {
            out.push_str(values[i - 1]);
        }
        out.push_str(part);
    }
    out
}

/// The rating in a judge's reply: the one `rating: N` (N = 0…6) it contains, lower-cased.
pub fn parse_rating(reply: &str) -> Option<u8> {
    let lower = reply.to_lowercase();
    let found: Vec<u8> = (0..7)
        .filter(|s| lower.contains(&format!("rating: {s}")))
        .collect();
    match found[..] {
        [s] => Some(s),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MmhalDetail {
    pub index: usize,
    pub image_id: String,
    pub question_type: String,
    pub question: String,
    pub model_answer: String,
    /// The parsed rating; `None` when the reply had none or several (scored 0).
    pub rating: Option<u8>,
    pub review: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MmhalSummary {
    pub average_score: f64,
    pub hallucination_rate: f64,
    pub informativeness: f64,
    /// `(question_type, average rating)` in the template's order.
    pub per_type: Vec<(String, f64)>,
    pub questions: usize,
    pub unparsed_ratings: usize,
    pub judge: String,
}

pub struct MmhalReport {
    pub summary: MmhalSummary,
    pub details: Vec<MmhalDetail>,
    pub warnings: Vec<String>,
}

/// The summary of a list of (question type, rating) as the reference computes it.
pub fn summarize(ratings: &[(String, Option<u8>)], judge: &str) -> MmhalSummary {
    let scores: Vec<f64> = ratings
        .iter()
        .map(|(_, r)| f64::from(r.unwrap_or(0)))
        .collect();
    let n = scores.len() as f64;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let informative: Vec<f64> = scores
        .iter()
        .map(|&s| if s >= 3.0 { s - 3.0 } else { s })
        .collect();
    let mut per_type: Vec<(String, Vec<f64>)> = Vec::new();
    for ((kind, _), &s) in ratings.iter().zip(&scores) {
        match per_type.iter_mut().find(|(k, _)| k == kind) {
            Some((_, v)) => v.push(s),
            None => per_type.push((kind.clone(), vec![s])),
        }
    }
    MmhalSummary {
        average_score: mean(&scores),
        hallucination_rate: scores.iter().filter(|&&s| s < 3.0).count() as f64 / n,
        informativeness: mean(&informative) / 3.0 * 100.0,
        per_type: per_type.into_iter().map(|(k, v)| (k, mean(&v))).collect(),
        questions: scores.len(),
        unparsed_ratings: ratings.iter().filter(|(_, r)| r.is_none()).count(),
        judge: judge.to_owned(),
    }
}

/// Rates every answer through `endpoint`.
pub fn evaluate(
    records: &[MmhalRecord],
    answers: &[String],
    endpoint: &Endpoint,
    mut progress: impl FnMut(usize),
) -> Result<MmhalReport, EvalError> {
    let mut details = Vec::with_capacity(records.len());
    for (index, (record, answer)) in records.iter().zip(answers).enumerate() {
        let review = endpoint
            .ask(ROLE, &prompt(record, answer), TEMPERATURE)
            .map_err(|e| EvalError::Llm(format!("MMHal-Bench question {index}: {e}")))?;
        details.push(MmhalDetail {
            index,
            image_id: record.image_id.clone(),
            question_type: record.question_type.clone(),
            question: record.question.clone(),
            model_answer: answer.clone(),
            rating: parse_rating(&review),
            review,
        });
        progress(index + 1);
    }
    let ratings: Vec<(String, Option<u8>)> = details
        .iter()
        .map(|d| (d.question_type.clone(), d.rating))
        .collect();
    let summary = summarize(&ratings, &format!("llm:{}", endpoint.model()));
    let mut warnings = Vec::new();
    if summary.unparsed_ratings > 0 {
        warnings.push(format!(
            "{} replies had no single \"Rating: N\" and count as 0, as in the reference",
            summary.unparsed_ratings
        ));
    }
    if records.len() != BENCHMARK_QUESTIONS {
        warnings.push(format!(
            "{} questions, not MMHal-Bench's {BENCHMARK_QUESTIONS}: the numbers are not comparable with published ones",
            records.len()
        ));
    }
    Ok(MmhalReport {
        summary,
        details,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_as_the_reference_parses_them() {
        assert_eq!(
            parse_rating("Explanation... Rating: 5, very informative"),
            Some(5)
        );
        assert_eq!(parse_rating("RATING: 0"), Some(0));
        assert_eq!(parse_rating("no rating here"), None);
        assert_eq!(parse_rating("Rating: 2 ... Rating: 4"), None);
    }

    #[test]
    fn the_prompt_is_filled_in_order() {
        let r = MmhalRecord {
            question_type: "attribute".into(),
            question_topic: "outdoor".into(),
            image_id: "x".into(),
            image_src: String::new(),
            image_content: vec!["Fire hydrant".into(), "Sky".into()],
            question: "What color is it {}?".into(),
            gt_answer: "Yellow.".into(),
            model_answer: None,
        };
        let p = prompt(&r, "Red.");
        assert!(p.starts_with("Please act as an impartial and objective judge"));
        assert!(p.ends_with(
            "### Image Contents\nFire hydrant, Sky\n\n### Question\nWhat color is it {}?\n\n\
             ### Standard Human-Generated Answer\nYellow.\n\n### LMM Response to Evaluate\nRed.\n"
        ));
    }

    #[test]
    fn summary() {
        let r = |t: &str, s: Option<u8>| (t.to_owned(), s);
        let s = summarize(
            &[
                r("a", Some(6)),
                r("b", Some(2)),
                r("a", None),
                r("b", Some(3)),
            ],
            "j",
        );
        assert_eq!(s.average_score, 11.0 / 4.0);
        assert_eq!(s.hallucination_rate, 0.5);
        assert_eq!(
            s.informativeness,
            (3.0 + 2.0 + 0.0 + 0.0) / 4.0 / 3.0 * 100.0
        );
        assert_eq!(s.per_type, [("a".to_owned(), 3.0), ("b".to_owned(), 2.5)]);
        assert_eq!(s.unparsed_ratings, 1);
    }
}

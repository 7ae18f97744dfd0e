//! LLaVA-Bench (In-the-Wild, and COCO's) as LLaVA scores it (`llava/eval/eval_gpt_review_bench.py`,
//! `summarize_gpt_review.py`): a judge compares the model's answer with a reference answer
//! (GPT-4's, `answers_gpt4.jsonl`) given the image's caption, with the rubric of the question's
//! category from LLaVA's `rule.json`, and replies with two scores on its first line. The
//! relative score is the model's mean over the reference's, in percent.
//!
//! The inputs are the benchmark's files: `questions.jsonl` (`question_id`, `image`, `text`,
//! `category`), `context.jsonl` (`image`, `caption`), the reference answers and the rule file;
//! the rubric text is read from the rule file, never embedded here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::EvalError;
use crate::answers::{AnswerRecord, Answers, BenchmarkQuestion, ImageSource, as_int, show};
use crate::llm::Endpoint;

/// The reference's system message.
pub const SYSTEM: &str =
    "You are a helpful and precise assistant for checking the quality of the answer.";
/// The reference's temperature.
pub const TEMPERATURE: f64 = 0.2;
/// Categories are looked up in the rule file under this prefix.
pub const CATEGORY_PREFIX: &str = "llava_bench_";

/// One rubric of `rule.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    pub role: String,
    pub prompt: String,
}

#[derive(Debug, Clone)]
pub struct Question {
    pub question_id: Value,
    pub image: String,
    pub text: String,
    pub category: String,
    pub line: usize,
}

/// The benchmark's files, read and cross-checked.
pub struct Bench {
    pub questions_path: PathBuf,
    pub questions: Vec<Question>,
    /// Each question's context (its image's captions, joined as the reference joins them).
    pub contexts: Vec<String>,
    /// Each question's reference answer, in the questions' order.
    pub reference: Vec<String>,
    pub rules: HashMap<String, Rule>,
}

/// The files' paths.
pub struct Files<'a> {
    pub questions: &'a Path,
    pub context: &'a Path,
    pub reference: &'a Path,
    pub rule: &'a Path,
}

/// A JSONL line: its 1-based number and its object.
type Row = (usize, serde_json::Map<String, Value>);

fn read_jsonl(path: &Path) -> Result<Vec<Row>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| EvalError::json(path, Some(i + 1), e))?;
        match value {
            Value::Object(map) => out.push((i + 1, map)),
            _ => {
                return Err(EvalError::at(
                    path,
                    Some(i + 1),
                    None,
                    "expected a JSON object",
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(EvalError::file(path, "no records in the file"));
    }
    Ok(out)
}

/// A string field of one record, or an error naming it.
fn text(
    path: &Path,
    line: usize,
    record: Option<String>,
    map: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<String, EvalError> {
    match map.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(EvalError::at(
            path,
            Some(line),
            record,
            format!("no `{field}`"),
        )),
        Some(other) => Err(EvalError::at(
            path,
            Some(line),
            record,
            format!("field `{field}` is {other}, expected a string"),
        )),
    }
}

/// `'\n'.join(inst['caption'])`: a list's strings one a line; a string is an iterable of its
/// characters in Python, so each character goes on its own line, as the reference sends it.
pub fn join_caption(caption: &Value) -> Option<String> {
    match caption {
        Value::String(s) => Some(s.chars().map(String::from).collect::<Vec<_>>().join("\n")),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join("\n")),
        _ => None,
    }
}

impl Bench {
    pub fn load(files: &Files) -> Result<Self, EvalError> {
        let bytes = std::fs::read(files.rule).map_err(|e| EvalError::io(files.rule, e))?;
        let rules: HashMap<String, Rule> =
            serde_json::from_slice(&bytes).map_err(|e| EvalError::json(files.rule, None, e))?;

        let mut questions = Vec::new();
        for (line, map) in read_jsonl(files.questions)? {
            let question_id = map
                .get("question_id")
                .filter(|v| !v.is_null())
                .cloned()
                .ok_or_else(|| {
                    EvalError::at(files.questions, Some(line), None, "no `question_id`")
                })?;
            let record = Some(format!("question_id {}", show(&question_id)));
            let get = |field| text(files.questions, line, record.clone(), &map, field);
            let category = get("category")?;
            if !rules.contains_key(&format!("{CATEGORY_PREFIX}{category}")) {
                return Err(EvalError::at(
                    files.questions,
                    Some(line),
                    record.clone(),
                    format!(
                        "field `category`: {CATEGORY_PREFIX}{category} is not in {}",
                        files.rule.display()
                    ),
                ));
            }
            questions.push(Question {
                image: get("image")?,
                text: get("text")?,
                category,
                question_id,
                line,
            });
        }

        let mut by_image = HashMap::new();
        for (line, map) in read_jsonl(files.context)? {
            let image = text(files.context, line, None, &map, "image")?;
            let caption = map.get("caption").and_then(join_caption).ok_or_else(|| {
                EvalError::at(
                    files.context,
                    Some(line),
                    Some(format!("image {image}")),
                    "field `caption` is not a string or a list of strings",
                )
            })?;
            by_image.insert(image, caption);
        }
        let contexts = questions
            .iter()
            .map(|q| {
                by_image.get(&q.image).cloned().ok_or_else(|| {
                    EvalError::at(
                        files.questions,
                        Some(q.line),
                        Some(format!("question_id {}", show(&q.question_id))),
                        format!(
                            "field `image`: {} has no context in {}",
                            q.image,
                            files.context.display()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let reference_rows = read_jsonl(files.reference)?;
        if reference_rows.len() != questions.len() {
            return Err(EvalError::file(
                files.reference,
                format!(
                    "{} reference answers for {} questions",
                    reference_rows.len(),
                    questions.len()
                ),
            ));
        }
        let mut reference = Vec::with_capacity(questions.len());
        for ((line, map), q) in reference_rows.iter().zip(&questions) {
            if let Some(id) = map.get("question_id")
                && key(id) != key(&q.question_id)
            {
                return Err(EvalError::at(
                    files.reference,
                    Some(*line),
                    Some(format!("question_id {}", show(id))),
                    format!(
                        "field `question_id`: line {} of the questions is question {}",
                        q.line,
                        show(&q.question_id)
                    ),
                ));
            }
            reference.push(text(files.reference, *line, None, map, "text")?);
        }
        Ok(Self {
            questions_path: files.questions.to_path_buf(),
            questions,
            contexts,
            reference,
            rules,
        })
    }

    /// The questions, for a generator (the answer's `id` is the `question_id`; the image in
    /// `images`).
    pub fn benchmark_questions(&self, images: &Path) -> Vec<BenchmarkQuestion> {
        self.questions
            .iter()
            .map(|q| BenchmarkQuestion {
                id: show(&q.question_id),
                question: q.text.clone(),
                image: ImageSource::Path(images.join(&q.image)),
            })
            .collect()
    }

    /// Each question's answer from `answers`: by `question_id` (`id`) when the answers carry
    /// one, else by position as the reference zips the files.
    pub fn merge_answers(&self, answers: &Answers) -> Result<Vec<String>, EvalError> {
        let position: HashMap<String, usize> = self
            .questions
            .iter()
            .enumerate()
            .map(|(i, q)| (key(&q.question_id), i))
            .collect();
        let mut merged: Vec<Option<String>> = vec![None; self.questions.len()];
        for (k, record) in answers.records.iter().enumerate() {
            let index = match &record.id {
                Some(id) => position.get(&key(id)).copied(),
                None => (k < merged.len()).then_some(k),
            }
            .ok_or_else(|| {
                answers.error(
                    record,
                    format!(
                        "field `question_id`: not one of LLaVA-Bench's {} questions ({}): is \
                         this an answers file of another benchmark?",
                        self.questions.len(),
                        self.questions_path.display()
                    ),
                )
            })?;
            check_question(answers, record, &self.questions[index])?;
            merged[index] = Some(record.answer.clone());
        }
        merged
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                a.ok_or_else(|| {
                    answers.error_file(format!(
                        "no answer to question {} ({:?})",
                        show(&self.questions[i].question_id),
                        self.questions[i].text
                    ))
                })
            })
            .collect()
    }

    /// The user message for question `i` answered with `answer`.
    pub fn content(&self, i: usize, answer: &str) -> String {
        let q = &self.questions[i];
        let rule = &self.rules[&format!("{CATEGORY_PREFIX}{}", q.category)];
        let role = &rule.role;
        format!(
            "[Context]\n{}\n\n[Question]\n{}\n\n[{role} 1]\n{}\n\n[End of {role} 1]\n\n\
             [{role} 2]\n{answer}\n\n[End of {role} 2]\n\n[System]\n{}\n\n",
            self.contexts[i], q.text, self.reference[i], rule.prompt
        )
    }
}

/// Ids compare as integers when they are, else as text.
fn key(v: &Value) -> String {
    as_int(v).map_or_else(|| show(v), |i| i.to_string())
}

fn check_question(answers: &Answers, record: &AnswerRecord, q: &Question) -> Result<(), EvalError> {
    match &record.question {
        Some(asked) if asked.trim() != q.text.trim() && !asked.contains(q.text.as_str()) => {
            Err(answers.error(
                record,
                format!(
                    "field `question`: the answer is to {asked:?}, but LLaVA-Bench's question {} \
                     is {:?}: is this an answers file of another benchmark?",
                    show(&q.question_id),
                    q.text
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// `parse_score`: the first line of the reply, commas made spaces, split on single spaces;
/// exactly two parts that Python's `float` reads are the scores, anything else `None` (the
/// reference's `[-1, -1]`).
pub fn parse_score(review: &str) -> Option<(f64, f64)> {
    let first = review.split('\n').next().unwrap_or("").replace(',', " ");
    let parts: Vec<&str> = first.split(' ').collect();
    let float = |s: &str| crate::nlp::py_strip(s).parse::<f64>().ok();
    match parts[..] {
        [a, b] => float(a).zip(float(b)),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LlavaDetail {
    pub question_id: Value,
    pub category: String,
    pub question: String,
    pub model_answer: String,
    /// `[reference, model]`; `[-1, -1]` when the reply had no score pair, as in the reference.
    pub tuple: (f64, f64),
    pub review: String,
}

/// One category's (or all's) means, rounded to 3 decimals as the reference prints them, and
/// the relative score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CategoryScore {
    pub reference: f64,
    pub model: f64,
    /// `round(model / reference * 100, 1)`.
    pub relative: f64,
    pub questions: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LlavaSummary {
    /// `all` and each `llava_bench_<category>`, sorted by name as the reference prints them.
    pub categories: BTreeMap<String, CategoryScore>,
    pub unparsed_scores: usize,
    pub judge: String,
}

pub struct LlavaReport {
    pub summary: LlavaSummary,
    pub details: Vec<LlavaDetail>,
    pub warnings: Vec<String>,
}

/// `round(x, n)` as Python rounds (the exact value of the double, ties to even).
fn py_round(x: f64, decimals: usize) -> f64 {
    format!("{x:.decimals$}")
        .parse()
        .expect("a formatted float parses")
}

/// The reference's summary of `(category, tuple)` pairs.
pub fn summarize(tuples: &[(String, (f64, f64))], judge: &str) -> LlavaSummary {
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (category, t) in tuples {
        groups.entry(category.clone()).or_default().push(*t);
        groups.entry("all".into()).or_default().push(*t);
    }
    let categories = groups
        .into_iter()
        .map(|(k, v)| {
            let n = v.len() as f64;
            let (a, b) = v.iter().fold((0.0, 0.0), |(a, b), t| (a + t.0, b + t.1));
            let (reference, model) = (py_round(a / n, 3), py_round(b / n, 3));
            let score = CategoryScore {
                reference,
                model,
                relative: py_round(model / reference * 100.0, 1),
                questions: v.len(),
            };
            (k, score)
        })
        .collect();
    LlavaSummary {
        categories,
        unparsed_scores: 0,
        judge: judge.to_owned(),
    }
}

/// Judges every answer through `endpoint`.
pub fn evaluate(
    bench: &Bench,
    answers: &[String],
    endpoint: &Endpoint,
    mut progress: impl FnMut(usize),
) -> Result<LlavaReport, EvalError> {
    let mut details = Vec::with_capacity(answers.len());
    for (i, answer) in answers.iter().enumerate() {
        let q = &bench.questions[i];
        let content = bench.content(i, answer);
        let review = endpoint
            .chat(&[("system", SYSTEM), ("user", &content)], TEMPERATURE)
            .map_err(|e| {
                EvalError::Llm(format!(
                    "LLaVA-Bench question {}: {e}",
                    show(&q.question_id)
                ))
            })?;
        details.push(LlavaDetail {
            question_id: q.question_id.clone(),
            category: format!("{CATEGORY_PREFIX}{}", q.category),
            question: q.text.clone(),
            model_answer: answer.clone(),
            tuple: parse_score(&review).unwrap_or((-1.0, -1.0)),
            review,
        });
        progress(i + 1);
    }
    let tuples: Vec<(String, (f64, f64))> = details
        .iter()
        .map(|d| (d.category.clone(), d.tuple))
        .collect();
    let mut summary = summarize(&tuples, &format!("llm:{}", endpoint.model()));
    summary.unparsed_scores = details
        .iter()
        .filter(|d| parse_score(&d.review).is_none())
        .count();
    let mut warnings = Vec::new();
    if summary.unparsed_scores > 0 {
        warnings.push(format!(
            "{} replies had no score pair on their first line and count as (-1, -1), as in the reference",
            summary.unparsed_scores
        ));
    }
    Ok(LlavaReport {
        summary,
        details,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_as_the_reference_parses_them() {
        assert_eq!(parse_score("8 7\nbecause"), Some((8.0, 7.0)));
        assert_eq!(parse_score("8,7"), Some((8.0, 7.0)));
        assert_eq!(parse_score("9 7\r\nx"), Some((9.0, 7.0)));
        assert_eq!(parse_score("7.5 8"), Some((7.5, 8.0)));
        // ", " becomes two spaces: three parts.
        assert_eq!(parse_score("8, 7"), None);
        assert_eq!(parse_score("Scores: 8 7"), None);
        assert_eq!(parse_score("8"), None);
        assert_eq!(parse_score("eight seven"), None);
    }

    #[test]
    fn captions_join_as_python_joins_them() {
        let list = serde_json::json!(["A dog.", "A cat."]);
        assert_eq!(join_caption(&list).unwrap(), "A dog.\nA cat.");
        assert_eq!(
            join_caption(&serde_json::json!("ab c")).unwrap(),
            "a\nb\n \nc"
        );
        assert!(join_caption(&serde_json::json!(3)).is_none());
    }
}

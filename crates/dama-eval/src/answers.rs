//! Answers to a benchmark's questions, read from the files the tools write:
//!
//! - `dama-native generate`: JSONL, one object a line with `id`, `question`, `answer`, …;
//! - RLAIF-V's answer files: JSONL with `image_id` (Object HalBench), `question` or `prompt`,
//!   `answer` or `text` (`question_id` as id);
//! - AMBER's inference file: one JSON array of `{"id": …, "response": …}`.
//!
//! Each record remembers its line (JSONL) or position (JSON array) for error messages.
//! Generating answers is not this crate's job: [`Generator`] is the seam where `generate`'s
//! model plugs in, taking the [`BenchmarkQuestion`]s a benchmark lists.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::EvalError;

/// The fields an answer may be under, in the order they are tried.
pub const ANSWER_FIELDS: [&str; 4] = ["answer", "text", "response", "model_answer"];
pub const QUESTION_FIELDS: [&str; 2] = ["question", "prompt"];
pub const ID_FIELDS: [&str; 2] = ["id", "question_id"];

#[derive(Debug, Clone)]
pub struct AnswerRecord {
    /// 1-based line of a JSONL file; `None` in a JSON array.
    pub line: Option<usize>,
    /// 1-based position in the file.
    pub position: usize,
    pub id: Option<Value>,
    pub image_id: Option<Value>,
    pub question: Option<String>,
    pub answer: String,
}

impl AnswerRecord {
    /// How an error names this record: its id, else its position.
    pub fn name(&self) -> String {
        match (&self.image_id, &self.id) {
            (Some(image), _) => format!("image_id {}", show(image)),
            (None, Some(id)) => format!("id {}", show(id)),
            (None, None) => format!("#{}", self.position),
        }
    }
}

/// A JSON id as the user wrote it (strings without quotes).
pub fn show(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// An id as an integer, from a JSON number or a string of digits.
pub fn as_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.trim().parse().ok())
}

#[derive(Debug, Clone)]
pub struct Answers {
    pub path: PathBuf,
    pub records: Vec<AnswerRecord>,
}

impl Answers {
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let mut records = Vec::new();
        if text.trim_start().starts_with('[') {
            let items: Vec<Value> =
                serde_json::from_str(&text).map_err(|e| EvalError::json(path, None, e))?;
            for (i, item) in items.into_iter().enumerate() {
                records.push(record(path, None, i + 1, item)?);
            }
        } else {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let item: Value = serde_json::from_str(line)
                    .map_err(|e| EvalError::json(path, Some(i + 1), e))?;
                records.push(record(path, Some(i + 1), records.len() + 1, item)?);
            }
        }
        if records.is_empty() {
            return Err(EvalError::file(path, "no answers in the file"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            records,
        })
    }

    /// An error about the file as a whole.
    pub fn error_file(&self, why: impl Into<String>) -> EvalError {
        EvalError::file(&self.path, why)
    }

    /// An error about one record of this file.
    pub fn error(&self, record: &AnswerRecord, why: impl Into<String>) -> EvalError {
        let line = record.line;
        let name = Some(record.name());
        match line {
            Some(_) => EvalError::at(&self.path, line, name, why),
            None => EvalError::at(
                &self.path,
                None,
                Some(format!("{} (#{})", record.name(), record.position)),
                why,
            ),
        }
    }
}

fn record(
    path: &Path,
    line: Option<usize>,
    position: usize,
    item: Value,
) -> Result<AnswerRecord, EvalError> {
    let at = |why: String| {
        EvalError::at(
            path,
            line,
            (line.is_none()).then(|| format!("#{position}")),
            why,
        )
    };
    let Value::Object(map) = item else {
        return Err(at("expected a JSON object".into()));
    };
    let text_field = |names: &[&str]| -> Result<Option<String>, EvalError> {
        for name in names {
            match map.get(*name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => return Ok(Some(s.clone())),
                Some(other) => {
                    return Err(at(format!("field `{name}` is {other}, expected a string")));
                }
            }
        }
        Ok(None)
    };
    let answer = text_field(&ANSWER_FIELDS)?.ok_or_else(|| {
        at(format!(
            "no answer: expected one of the fields {} (fields here: {})",
            ANSWER_FIELDS.map(|f| format!("`{f}`")).join(", "),
            map.keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let id = ID_FIELDS
        .iter()
        .find_map(|f| map.get(*f).filter(|v| !v.is_null()).cloned());
    Ok(AnswerRecord {
        line,
        position,
        id,
        image_id: map.get("image_id").filter(|v| !v.is_null()).cloned(),
        question: text_field(&QUESTION_FIELDS)?,
        answer,
    })
}

/// A question of a benchmark, as a generator needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkQuestion {
    /// The id the answer must carry back (`id` in `generate`'s output).
    pub id: String,
    pub question: String,
    pub image: ImageSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// Base64-encoded image bytes embedded in the benchmark file (Object HalBench).
    Base64(String),
    /// A file (AMBER's images folder, MMHal-Bench's downloaded images).
    Path(PathBuf),
    /// A URL the benchmark file names (MMHal-Bench's `image_src`); the user downloads it.
    Url(String),
}

/// One generated answer: what `generate` writes for a question.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedAnswer {
    pub id: String,
    pub question: String,
    pub answer: String,
}

/// Answers the questions with a model: the seam where `dama-native generate` plugs in (it
/// writes its JSONL, which [`Answers::read`] reads back, so resuming works as for
/// `generate`). Benchmarks list their questions with the settings their authors used; see
/// `dama-native`'s `commands::eval::generator` for how the CLI wires it.
pub trait Generator {
    fn generate(
        &mut self,
        questions: &[BenchmarkQuestion],
    ) -> Result<Vec<GeneratedAnswer>, EvalError>;
}

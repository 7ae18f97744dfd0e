//! Object HalBench's questions file (RLAIF-V's `eval/data/obj_halbench_300_with_image.jsonl`):
//! one JSON object a line with `image_id`, `question` and the image, base64-encoded in `image`
//! (or a file in `image_path`).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::EvalError;
use crate::answers::{BenchmarkQuestion, ImageSource, as_int, show};

#[derive(Debug, Clone)]
pub struct ObjHalQuestion {
    pub image_id: i64,
    pub question: String,
    pub image: ImageSource,
    pub line: usize,
}

#[derive(Deserialize)]
struct Raw {
    image_id: Option<Value>,
    question: Option<String>,
    image: Option<String>,
    image_path: Option<PathBuf>,
}

/// Reads and checks every line: an integer `image_id`, a `question`, an image.
pub fn read_questions(path: &Path) -> Result<Vec<ObjHalQuestion>, EvalError> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| EvalError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: Raw =
            serde_json::from_str(&line).map_err(|e| EvalError::json(path, Some(n), e))?;
        let at = |record: Option<String>, why: &str| EvalError::at(path, Some(n), record, why);
        let id = raw.image_id.ok_or_else(|| at(None, "no `image_id`"))?;
        let image_id = as_int(&id)
            .ok_or_else(|| at(None, &format!("`image_id` {} is not an integer", show(&id))))?;
        let record = Some(format!("image_id {image_id}"));
        let question = raw
            .question
            .ok_or_else(|| at(record.clone(), "no `question`"))?;
        let image = match (raw.image, raw.image_path) {
            (Some(b64), _) if !b64.trim().is_empty() => ImageSource::Base64(b64),
            (_, Some(p)) => ImageSource::Path(p),
            _ => {
                return Err(at(
                    record,
                    "no image: expected base64 `image` or `image_path`",
                ));
            }
        };
        out.push(ObjHalQuestion {
            image_id,
            question,
            image,
            line: n,
        });
    }
    if out.is_empty() {
        return Err(EvalError::file(path, "no questions in the file"));
    }
    Ok(out)
}

/// The questions as a generator takes them (the answer's `id` is the image id).
pub fn benchmark_questions(questions: &[ObjHalQuestion]) -> Vec<BenchmarkQuestion> {
    questions
        .iter()
        .map(|q| BenchmarkQuestion {
            id: q.image_id.to_string(),
            question: q.question.clone(),
            image: q.image.clone(),
        })
        .collect()
}

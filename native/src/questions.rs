//! The questions `generate` answers, from either kind of `--data`:
//!
//! - a questions file: JSONL, one `{"id", "image", "question"}` a line (`image_b64` embeds the
//!   image instead; without `id` it is `<file stem>:<line>`);
//! - any preference dataset `train` reads (RLAIF-V parquet, JSONL, the authors' JSON list, an
//!   annotated file): each pair's question and image, under the pair's id.
//!
//! Both go through dama-data's rules: images only from inside the image folder
//! ([`ImageFolder`], `--allow-absolute-images` for your own absolute paths), the size limit
//! checked before decoding, unique ids, and errors naming file, line, id and field. A bad
//! record stops the run, or with `--skip-bad` is reported and skipped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use dama_data::{
    DataError, ImageCheck, ImageFolder, ImageSource, Location, MAX_IMAGE_SIDE, Problem, ReadMode,
    ReadOptions, ReadSummary, decode_rgb, image_dimensions, open_dataset,
};
use serde_json::{Map, Value};

/// A question whose image has been found and checked; decoded again when its batch comes.
#[derive(Debug, Clone)]
pub struct PendingQuestion {
    pub id: String,
    pub question: String,
    /// The encoded image file.
    pub image: Vec<u8>,
}

/// What was read: the questions and the records skipped.
pub struct QuestionSet {
    pub questions: Vec<PendingQuestion>,
    pub summary: ReadSummary,
    /// `questions` (a questions file) or `pairs` (a preference dataset).
    pub kind: &'static str,
}

/// How `--data` is read.
#[derive(Debug, Clone, Copy)]
pub struct QuestionOptions<'a> {
    pub images: Option<&'a Path>,
    pub skip_bad: bool,
    pub absolute_images: bool,
}

/// Reads the questions of `path`, whichever kind it is.
pub fn read_questions(path: &Path, opts: QuestionOptions<'_>) -> Result<QuestionSet> {
    if is_questions_file(path)? {
        read_questions_file(path, opts)
    } else {
        read_pairs(path, opts)
    }
}

/// A JSONL file whose first record has a `question` and no `chosen`: a questions file.
fn is_questions_file(path: &Path) -> Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut head = [0u8; 4];
    let n = reader.read(&mut head)?;
    if head[..n] == *b"PAR1" {
        return Ok(false);
    }
    let file = std::fs::File::open(path)?;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with('[') {
            return Ok(false);
        }
        return Ok(match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map.contains_key("question") && !map.contains_key("chosen"),
            // let the dataset reader name what is wrong with it
            _ => false,
        });
    }
    Ok(false)
}

fn read_pairs(path: &Path, opts: QuestionOptions<'_>) -> Result<QuestionSet> {
    let mode = if opts.skip_bad {
        ReadMode::Lenient
    } else {
        ReadMode::Strict
    };
    let read = ReadOptions {
        mode,
        images: ImageCheck::Decode,
        absolute_images: opts.absolute_images,
        ..ReadOptions::default()
    };
    let mut records = open_dataset(path, opts.images, read)
        .with_context(|| format!("opening dataset {}", path.display()))?;
    let mut questions = Vec::new();
    for record in records.by_ref() {
        let record = record.with_context(|| {
            format!(
                "reading {} (pass --skip-bad to skip bad records)",
                path.display()
            )
        })?;
        let image = record.image.bytes.clone().unwrap_or_default();
        questions.push(PendingQuestion {
            id: record.id,
            question: record.question,
            image,
        });
    }
    Ok(QuestionSet {
        questions,
        summary: records.into_summary(),
        kind: "pairs",
    })
}

fn read_questions_file(path: &Path, opts: QuestionOptions<'_>) -> Result<QuestionSet> {
    let label = path.display().to_string();
    let home = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let folder =
        ImageFolder::new(opts.images.unwrap_or(home)).allowing_absolute(opts.absolute_images);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = std::fs::File::open(path).with_context(|| format!("opening {label}"))?;
    let mut summary = ReadSummary::default();
    let mut questions = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {label}"))?;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let at = Location::line(&label, i + 1);
        match question_line(&at, &line, &stem, &folder, &mut seen) {
            Ok(q) => questions.push(q),
            Err(e) if opts.skip_bad && e.skip_reason().is_some() => {
                let reason = e.skip_reason().expect("checked");
                summary.skip(reason, e);
            }
            Err(e) => {
                return Err(e).context(format!(
                    "reading {label} (pass --skip-bad to skip bad records)"
                ));
            }
        }
    }
    summary.read = questions.len();
    Ok(QuestionSet {
        questions,
        summary,
        kind: "questions",
    })
}

/// One line of a questions file, checked.
fn question_line(
    at: &Location,
    bytes: &[u8],
    stem: &str,
    folder: &ImageFolder,
    seen: &mut HashMap<String, Location>,
) -> Result<PendingQuestion, DataError> {
    let fail = |id: Option<&str>, field, problem| {
        DataError::record(at.clone(), id.map(str::to_owned), field, problem)
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        fail(
            None,
            None,
            Problem::NotUtf8 {
                valid_up_to: e.valid_up_to(),
            },
        )
    })?;
    let map: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(fail(
                None,
                None,
                Problem::WrongType {
                    expected: "a JSON object",
                    found: "another JSON value".into(),
                },
            ));
        }
        Err(e) => return Err(fail(None, None, Problem::Json(e))),
    };
    let line = match at.pos {
        dama_data::Pos::Line(n) => n,
        _ => 0,
    };
    let id = match map.get("id") {
        None | Some(Value::Null) => format!("{stem}:{line}"),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(fail(None, Some("id"), wrong("a string or a number", other)));
        }
    };
    let text_field = |field: &'static str| -> Result<Option<String>, DataError> {
        match map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(fail(Some(&id), Some(field), wrong("a string", other))),
        }
    };
    let question = text_field("question")?
        .ok_or_else(|| fail(Some(&id), Some("question"), Problem::Missing))?;
    if let Some(first) = seen.get(&id) {
        let first = first.clone();
        return Err(fail(Some(&id), Some("id"), Problem::DuplicateId { first }));
    }
    seen.insert(id.clone(), at.clone());
    let (field, image) = match (text_field("image_b64")?, text_field("image")?) {
        (Some(b64), _) => (
            "image_b64",
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| fail(Some(&id), Some("image_b64"), Problem::Base64(e)))?,
        ),
        (None, Some(name)) => (
            "image",
            folder
                .load(&name)
                .map_err(|p| fail(Some(&id), Some("image"), p))?,
        ),
        (None, None) => return Err(fail(Some(&id), Some("image"), Problem::Missing)),
    };
    let (width, height) = image_dimensions(&image)
        .map_err(|e| fail(Some(&id), Some(field), Problem::Undecodable(e)))?;
    if width.max(height) > MAX_IMAGE_SIDE {
        return Err(fail(
            Some(&id),
            Some(field),
            Problem::ImageTooLarge {
                width,
                height,
                limit: MAX_IMAGE_SIDE,
            },
        ));
    }
    decode_rgb(&image).map_err(|e| fail(Some(&id), Some(field), Problem::Undecodable(e)))?;
    Ok(PendingQuestion {
        id,
        question,
        image,
    })
}

fn wrong(expected: &'static str, found: &Value) -> Problem {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Problem::WrongType {
        expected,
        found: found.into(),
    }
}

//! Object HalBench's questions file (RLAIF-V's `eval/data/obj_halbench_300_with_image.jsonl`):
//! one JSON object a line with `image_id`, `question` and the image, base64-encoded in `image`
//! (or a file in `image_path`, relative to the questions file's folder).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use base64::Engine;
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

/// Reads and checks every line: an integer `image_id`, a `question`, an image (present; its
/// bytes are checked by [`check_images`]).
pub fn read_questions(path: &Path) -> Result<Vec<ObjHalQuestion>, EvalError> {
    let folder = path.parent().unwrap_or(Path::new(""));
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
            (_, Some(p)) => ImageSource::Path(folder.join(p)),
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

impl ObjHalQuestion {
    /// The image's encoded bytes (base64 decoded, or the file read).
    pub fn image_bytes(&self, path: &Path) -> Result<Vec<u8>, EvalError> {
        let at = |why: String| {
            EvalError::at(
                path,
                Some(self.line),
                Some(format!("image_id {}", self.image_id)),
                why,
            )
        };
        match &self.image {
            ImageSource::Base64(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| at(format!("field `image` is not valid base64: {e}"))),
            ImageSource::Path(p) => std::fs::read(p).map_err(|e| {
                at(format!(
                    "field `image_path` names {}, which cannot be read: {e}",
                    p.display()
                ))
            }),
            ImageSource::Url(url) => Err(at(format!("the image is a URL ({url}), not a file"))),
        }
    }
}

/// Every question's image is there and is an image (its header read; nothing decoded), so
/// that a benchmark file with a missing or broken image is refused before any work, naming
/// the line and the image id.
pub fn check_images(path: &Path, questions: &[ObjHalQuestion]) -> Result<(), EvalError> {
    for q in questions {
        let bytes = q.image_bytes(path)?;
        let field = match q.image {
            ImageSource::Base64(_) => "image",
            _ => "image_path",
        };
        dama_data::image_dimensions(&bytes).map_err(|e| {
            EvalError::at(
                path,
                Some(q.line),
                Some(format!("image_id {}", q.image_id)),
                format!("field `{field}` holds no readable image: {e}"),
            )
        })?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn png_base64() -> String {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(2, 2)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    }

    #[test]
    fn images_are_checked_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.png"), {
            let b64 = png_base64();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        })
        .unwrap();
        let path = dir.path().join("q.jsonl");
        let good = format!(
            "{{\"image_id\": 1, \"question\": \"Q\", \"image\": \"{}\"}}\n\
             {{\"image_id\": 2, \"question\": \"Q\", \"image_path\": \"ok.png\"}}\n",
            png_base64()
        );
        std::fs::write(&path, &good).unwrap();
        let qs = read_questions(&path).unwrap();
        check_images(&path, &qs).unwrap();
        assert_eq!(qs[1].image, ImageSource::Path(dir.path().join("ok.png")));

        for (line, why) in [
            (r#"{"image_id": 3, "question": "Q"}"#, "no image"),
            (
                r#"{"image_id": 3, "question": "Q", "image": "bm90IGFuIGltYWdl"}"#,
                "field `image` holds no readable image",
            ),
            (
                r#"{"image_id": 3, "question": "Q", "image": "%%%"}"#,
                "field `image` is not valid base64",
            ),
            (
                r#"{"image_id": 3, "question": "Q", "image_path": "gone.png"}"#,
                "field `image_path` names",
            ),
        ] {
            std::fs::write(&path, format!("{good}{line}\n")).unwrap();
            let e = read_questions(&path)
                .and_then(|qs| check_images(&path, &qs))
                .unwrap_err()
                .to_string();
            assert!(e.contains("q.jsonl, line 3, record image_id 3: "), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }
}

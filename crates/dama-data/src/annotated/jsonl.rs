//! Annotated JSONL: the header line, then one pair per line.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;

use base64::Engine;
use dama_core::DeltaEdge;
use serde::{Deserialize, Serialize};

use super::sink::ImageOut;
use super::{HEADER_KEY, Header};
use crate::error::{DataError, Location, Problem};
use crate::image::extension_of;
use crate::read::Parsed;
use crate::record::{Annotation, ImageRef, PreferencePair, Scores, Source, SubSentences};

/// One record line. Borrowed when writing, owned when reading: one struct, so the two directions
/// cannot drift apart.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_b64: Option<String>,
    question: Cow<'a, str>,
    chosen: Cow<'a, str>,
    rejected: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub_sentences: Option<Cow<'a, SubSentences>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scores: Option<Cow<'a, Scores>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delta_edge: Option<DeltaEdge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alpha_d: Option<f64>,
    #[serde(default, skip_serializing_if = "is_default_annotation")]
    annotation: Cow<'a, Annotation>,
    #[serde(default, skip_serializing_if = "is_empty_source")]
    source: Cow<'a, Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logps: Option<Cow<'a, serde_json::Value>>,
}

// serde hands `skip_serializing_if` the field itself, a `Cow`.
#[allow(clippy::ptr_arg)]
fn is_default_annotation(a: &Cow<'_, Annotation>) -> bool {
    a.is_default()
}

#[allow(clippy::ptr_arg)]
fn is_empty_source(s: &Cow<'_, Source>) -> bool {
    s.is_empty()
}

/// The top-level fields, to name the one a parse error is in.
const FIELDS: &[&str] = &[
    "id",
    "image",
    "image_b64",
    "question",
    "chosen",
    "rejected",
    "sub_sentences",
    "scores",
    "delta",
    "delta_edge",
    "alpha_d",
    "annotation",
    "source",
    "logps",
];

/// Whether a first line is an annotated header (a JSON object with `dama_annotated`).
pub(crate) fn is_header(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line)
        .is_ok_and(|m| m.contains_key(HEADER_KEY))
}

pub(crate) fn parse_record(at: &Location, bytes: &[u8]) -> Parsed {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DataError::record(
            at.clone(),
            None,
            None,
            Problem::NotUtf8 {
                valid_up_to: e.valid_up_to(),
            },
        )
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let line: Line<'static> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = FIELDS.iter().copied().find(|f| {
            path == *f || path.starts_with(&format!("{f}.")) || path.starts_with(&format!("{f}["))
        });
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
        DataError::record(at.clone(), id, field, Problem::Json(e.into_inner()))
    })?;
    let id = line.id.into_owned();
    let fail =
        |field, problem| DataError::record(at.clone(), Some(id.clone()), Some(field), problem);
    let name = line.image.map(Cow::into_owned);
    let image = match line.image_b64 {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| fail("image_b64", Problem::Base64(e)))?;
            ImageRef::embedded(name, bytes)
        }
        None => name.map(ImageRef::named).unwrap_or_default(),
    };
    let pair = PreferencePair {
        image,
        question: line.question.into_owned(),
        chosen: line.chosen.into_owned(),
        rejected: line.rejected.into_owned(),
        sub_sentences: line.sub_sentences.map(Cow::into_owned),
        scores: line.scores.map(Cow::into_owned),
        delta: line.delta,
        delta_edge: line.delta_edge,
        alpha_d: line.alpha_d,
        annotation: line.annotation.into_owned(),
        source: line.source.into_owned(),
        logps: line.logps.map(Cow::into_owned),
        id: id.clone(),
    };
    check_consistent(&pair).map_err(|(field, why)| fail(field, Problem::Invalid(why)))?;
    Ok((at.clone(), pair))
}

/// The invariants of an annotated record, shared by the JSONL and parquet readers: one score per
/// sub-sentence, finite numbers.
pub(crate) fn check_consistent(p: &PreferencePair) -> Result<(), (&'static str, String)> {
    if p.id.is_empty() {
        return Err(("id", "is empty".to_owned()));
    }
    if let (Some(s), Some(c)) = (&p.sub_sentences, &p.scores) {
        for (side, texts, scores) in [
            ("chosen", &s.chosen, &c.chosen),
            ("rejected", &s.rejected, &c.rejected),
        ] {
            if texts.len() != scores.len() {
                return Err((
                    "scores",
                    format!(
                        "has {} {side} scores for {} {side} sub-sentences",
                        scores.len(),
                        texts.len()
                    ),
                ));
            }
        }
    }
    for (field, v) in [("delta", p.delta), ("alpha_d", p.alpha_d)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err((field, "is not finite".to_owned()));
        }
    }
    Ok(())
}

/// Writes annotated JSONL: the header at once, then a line per [`write`](Self::write). The
/// header's `count` is a promise: [`finish`](Self::finish) fails if another number was written.
pub struct AnnotatedJsonlWriter<'s, W: Write> {
    out: W,
    file: String,
    images: ImageOut<'s>,
    promised: usize,
    written: usize,
    names: HashSet<String>,
}

impl<'s, W: Write> AnnotatedJsonlWriter<'s, W> {
    /// `file` names the output in errors. The header's `images` is set from `images`.
    pub fn new(
        file: &str,
        mut out: W,
        mut header: Header,
        images: ImageOut<'s>,
    ) -> Result<Self, DataError> {
        header.images = images.folder();
        let io = |e| DataError::io(file, e);
        writeln!(out, "{}", header.to_json()).map_err(io)?;
        Ok(Self {
            out,
            file: file.to_owned(),
            images,
            promised: header.count,
            written: 0,
            names: HashSet::new(),
        })
    }

    pub fn write(&mut self, pair: &PreferencePair) -> Result<(), DataError> {
        let missing = |what: &str| DataError::Format {
            at: Location::file(&self.file),
            what: format!(
                "pair `{}` has {what}, which this image output needs",
                pair.id
            ),
        };
        let (image, image_b64) = match &mut self.images {
            ImageOut::Inline => {
                let bytes = pair
                    .image
                    .bytes
                    .as_deref()
                    .ok_or_else(|| missing("no image bytes loaded"))?;
                let name = pair.image.name.as_deref().map(Cow::Borrowed);
                (
                    name,
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                )
            }
            ImageOut::Reference { .. } => {
                let name = pair
                    .image
                    .name
                    .as_deref()
                    .ok_or_else(|| missing("no image name"))?;
                (Some(Cow::Borrowed(name)), None)
            }
            ImageOut::Sink { sink, .. } => {
                let bytes = pair
                    .image
                    .bytes
                    .as_deref()
                    .ok_or_else(|| missing("no image bytes loaded"))?;
                let name = unique_name(&mut self.names, &pair.id, extension_of(bytes));
                sink.put(&name, bytes)?;
                (Some(Cow::Owned(name)), None)
            }
        };
        let line = Line {
            id: Cow::Borrowed(&pair.id),
            image,
            image_b64,
            question: Cow::Borrowed(&pair.question),
            chosen: Cow::Borrowed(&pair.chosen),
            rejected: Cow::Borrowed(&pair.rejected),
            sub_sentences: pair.sub_sentences.as_ref().map(Cow::Borrowed),
            scores: pair.scores.as_ref().map(Cow::Borrowed),
            delta: pair.delta,
            delta_edge: pair.delta_edge,
            alpha_d: pair.alpha_d,
            annotation: Cow::Borrowed(&pair.annotation),
            source: Cow::Borrowed(&pair.source),
            logps: pair.logps.as_ref().map(Cow::Borrowed),
        };
        let json = serde_json::to_string(&line).map_err(|e| DataError::Format {
            at: Location::file(&self.file),
            what: format!("pair `{}` cannot be written as JSON: {e}", pair.id),
        })?;
        writeln!(self.out, "{json}").map_err(|e| DataError::io(&self.file, e))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes and returns the output, after checking that the header's count was kept.
    pub fn finish(mut self) -> Result<W, DataError> {
        if self.written != self.promised {
            return Err(DataError::Format {
                at: Location::file(&self.file),
                what: format!(
                    "the header promises {} records, {} were written",
                    self.promised, self.written
                ),
            });
        }
        self.out.flush().map_err(|e| DataError::io(&self.file, e))?;
        Ok(self.out)
    }
}

/// `<id>.<ext>` with characters unsafe in file names replaced, made unique with `-2`, `-3`…
pub(crate) fn unique_name(used: &mut HashSet<String>, id: &str, ext: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    let mut name = format!("{safe}.{ext}");
    let mut n = 1;
    while !used.insert(name.clone()) {
        n += 1;
        name = format!("{safe}-{n}.{ext}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_file_names() {
        let mut used = HashSet::new();
        assert_eq!(unique_name(&mut used, "train:12", "png"), "train_12.png");
        assert_eq!(unique_name(&mut used, "train/12", "png"), "train_12-2.png");
        assert_eq!(unique_name(&mut used, "../x", "jpg"), "_x.jpg");
    }

    #[test]
    fn record_errors_name_the_field() {
        let at = Location::line("a.jsonl", 5);
        let err = parse_record(
            &at,
            br#"{"id": "p", "question": "q", "chosen": "a", "rejected": "b", "delta": "x"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "a.jsonl:5 (record `p`): field `delta` is not valid JSON: invalid type"
            ),
            "{err}"
        );
        let err = parse_record(&at, br#"{"id": "p", "question": "q", "chosen": "a", "rejected": "b", "annotation": {"status": "maybe"}}"#).unwrap_err();
        assert!(err.to_string().contains("field `annotation`"), "{err}");
        let err = parse_record(
            &at,
            br#"{"id": "p", "question": "q", "chosen": "a", "rejected": "b", "sub_sentences": {"chosen": ["x"], "rejected": []}, "scores": {"chosen": [], "rejected": []}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("field `scores` has 0 chosen scores for 1 chosen sub-sentences"),
            "{err}"
        );
    }
}

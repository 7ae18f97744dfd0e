//! Errors of reading and writing datasets. Every error says where: the file, then the line
//! (JSONL), the item (the authors' JSON list) or the row group and row (parquet), the record id
//! when it is known, and the field. Record-level errors carry a [`SkipReason`], so that a lenient
//! read can skip the record, count it and go on, while a file-level error always stops.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where in a dataset something was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as the user named it (or the name given to in-memory bytes).
    pub file: String,
    pub pos: Pos,
}

/// A position inside a file. Lines are 1-based like an editor's; items, row groups and rows are
/// 0-based like the indices of the JSON array and of pyarrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    File,
    Line(usize),
    Item {
        index: usize,
        line: usize,
    },
    Row {
        group: usize,
        row: usize,
        file_row: u64,
    },
}

impl Location {
    pub fn file(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            pos: Pos::File,
        }
    }

    pub fn line(file: impl Into<String>, line: usize) -> Self {
        Self {
            file: file.into(),
            pos: Pos::Line(line),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Pos::File => write!(f, "{}", self.file),
            Pos::Line(line) => write!(f, "{}:{line}", self.file),
            Pos::Item { index, line } => write!(f, "{}: item {index} (line {line})", self.file),
            Pos::Row {
                group,
                row,
                file_row,
            } => {
                write!(
                    f,
                    "{}: row group {group}, row {row} (row {file_row} of the file)",
                    self.file
                )
            }
        }
    }
}

/// Why a record was skipped; the keys of [`crate::ReadSummary::skipped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Not parseable: bad JSON, a field of the wrong type, an invalid value.
    Malformed,
    NotUtf8,
    MissingField,
    /// An empty question or answer: nothing to train on or to score.
    EmptyText,
    /// No image bytes, or a path that the image source does not have.
    MissingImage,
    UndecodableImage,
    /// An image whose pixels exceed the decoding limits (a decompression bomb, or absurd size).
    ImageTooLarge,
    /// An image path that resolves outside the image folder (`..`, an absolute path, a
    /// symbolic link out of it).
    ImageOutsideFolder,
    /// An id that an earlier record of the dataset already has.
    DuplicateId,
    /// A pair the trainer cannot tokenise for training: no answer token is left to score once
    /// the conversation is cut to the maximum length, or the two answers tokenise the shared
    /// prompt differently.
    Untrainable,
}

impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Malformed => "malformed",
            SkipReason::NotUtf8 => "not UTF-8",
            SkipReason::MissingField => "missing field",
            SkipReason::EmptyText => "empty text",
            SkipReason::MissingImage => "missing image",
            SkipReason::UndecodableImage => "undecodable image",
            SkipReason::ImageTooLarge => "image too large",
            SkipReason::ImageOutsideFolder => "image outside the image folder",
            SkipReason::DuplicateId => "duplicate id",
            SkipReason::Untrainable => "untrainable conversation",
        }
    }

    /// Whether only decoding the image finds this problem: a read that loads the bytes without
    /// decoding them cannot see it, so the scorer's second pass learns of it from its log.
    pub fn found_by_decoding(self) -> bool {
        matches!(
            self,
            SkipReason::UndecodableImage | SkipReason::ImageTooLarge
        )
    }
}

/// What is wrong with one field of one record.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("is missing")]
    Missing,
    #[error("is null")]
    Null,
    #[error("is empty")]
    Empty,
    #[error("has the wrong type: expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("is not valid UTF-8 (at byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("has no image: neither bytes nor a path")]
    NoImage,
    #[error("names image `{name}`, which {store} does not have")]
    ImageNotFound { name: String, store: String },
    #[error("names image `{name}`, which cannot be read: {error}")]
    ImageUnreadable { name: String, error: std::io::Error },
    #[error("holds an image that cannot be decoded: {0}")]
    Undecodable(image::ImageError),
    #[error("holds an image of {width}×{height} pixels, over the limit of {limit} pixels a side")]
    ImageTooLarge { width: u32, height: u32, limit: u32 },
    #[error(
        "names image `{name}`, which is outside {folder}{hint}",
        hint = if *absolute { " (an absolute path; pass --allow-absolute-images to allow those)" } else { "" }
    )]
    OutsideFolder {
        name: String,
        folder: String,
        absolute: bool,
    },
    #[error("repeats the id of the record at {first}")]
    DuplicateId { first: Location },
    /// The model's template cannot turn the pair into a training example (the message says why).
    #[error("cannot be trained on: {0}")]
    Untrainable(String),
    #[error("is not valid base64: {0}")]
    Base64(base64::DecodeError),
    #[error("{0}")]
    Invalid(String),
}

/// One bad record. `field` is `None` when the record as a whole is unreadable (a line that is
/// not JSON, not UTF-8).
#[derive(Debug, thiserror::Error)]
pub struct RecordError {
    pub at: Location,
    pub id: Option<String>,
    pub field: Option<&'static str>,
    /// What is wrong; part of the message (not a separate cause, so it is printed once).
    pub problem: Problem,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.at)?;
        if let Some(id) = &self.id {
            write!(f, " (record `{id}`)")?;
        }
        match self.field {
            Some(field) => write!(f, ": field `{field}` {}", self.problem),
            None => write!(f, ": record {}", self.problem),
        }
    }
}

impl RecordError {
    /// Why a lenient read skips this record.
    pub fn reason(&self) -> SkipReason {
        let image_field = self.field.is_some_and(|f| f.starts_with("image"));
        match &self.problem {
            Problem::Missing | Problem::Null if image_field => SkipReason::MissingImage,
            Problem::Missing | Problem::Null => SkipReason::MissingField,
            Problem::Empty => SkipReason::EmptyText,
            Problem::NotUtf8 { .. } => SkipReason::NotUtf8,
            Problem::NoImage | Problem::ImageNotFound { .. } | Problem::ImageUnreadable { .. } => {
                SkipReason::MissingImage
            }
            Problem::Undecodable(_) | Problem::Base64(_) => SkipReason::UndecodableImage,
            Problem::ImageTooLarge { .. } => SkipReason::ImageTooLarge,
            Problem::OutsideFolder { .. } => SkipReason::ImageOutsideFolder,
            Problem::DuplicateId { .. } => SkipReason::DuplicateId,
            Problem::Untrainable(_) => SkipReason::Untrainable,
            Problem::WrongType { .. } | Problem::Json(_) | Problem::Invalid(_) => {
                SkipReason::Malformed
            }
        }
    }
}

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// One bad record; a lenient read skips it and counts it.
    #[error(transparent)]
    Record(#[from] Box<RecordError>),
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    #[error("{file}: parquet: {error}")]
    Parquet {
        file: String,
        error: parquet::errors::ParquetError,
    },
    #[error("{file}: column `{column}`: {why}")]
    Schema {
        file: String,
        column: String,
        why: String,
    },
    /// The file as a whole is not what its format requires (no header line, not a JSON array…).
    #[error("{at}: {what}")]
    Format { at: Location, what: String },
    #[error(
        "{file}: annotated schema version {found} is newer than this build of dama reads (versions up to {supported}); update dama"
    )]
    UnsupportedVersion {
        file: String,
        found: u64,
        supported: u32,
    },
    /// A scoring log that belongs to another run (another CLIP model, splitter, estimator).
    #[error("{file}: {what}")]
    Mismatch { file: String, what: String },
    /// A DAMA formula rejected its input (e.g. a non-finite δ); `context` names the record.
    #[error("{context}: {error}")]
    Core {
        context: String,
        error: dama_core::CoreError,
    },
}

impl DataError {
    pub fn record(
        at: Location,
        id: Option<String>,
        field: Option<&'static str>,
        problem: Problem,
    ) -> Self {
        DataError::Record(Box::new(RecordError {
            at,
            id,
            field,
            problem,
        }))
    }

    pub fn io(file: impl Into<String>, source: std::io::Error) -> Self {
        DataError::Io {
            file: file.into(),
            error: source,
        }
    }

    /// `Some` for an error that concerns one record only (a lenient read skips it).
    pub fn skip_reason(&self) -> Option<SkipReason> {
        match self {
            DataError::Record(e) => Some(e.reason()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_position_record_and_field() {
        let e = DataError::record(
            Location {
                file: "train.parquet".into(),
                pos: Pos::Row {
                    group: 2,
                    row: 1,
                    file_row: 9,
                },
            },
            Some("train:9".into()),
            Some("chosen"),
            Problem::Empty,
        );
        assert_eq!(
            e.to_string(),
            "train.parquet: row group 2, row 1 (row 9 of the file) (record `train:9`): field `chosen` is empty"
        );
        assert_eq!(e.skip_reason(), Some(SkipReason::EmptyText));
        let e = DataError::record(
            Location::line("a.jsonl", 7),
            None,
            None,
            Problem::NotUtf8 { valid_up_to: 3 },
        );
        assert_eq!(
            e.to_string(),
            "a.jsonl:7: record is not valid UTF-8 (at byte 3)"
        );
        assert_eq!(e.skip_reason(), Some(SkipReason::NotUtf8));
        let e = DataError::record(
            Location::line("a.jsonl", 1),
            None,
            Some("image"),
            Problem::Null,
        );
        assert_eq!(e.skip_reason(), Some(SkipReason::MissingImage));
        let io = DataError::io("x", std::io::Error::other("boom"));
        assert_eq!(io.skip_reason(), None);
    }
}

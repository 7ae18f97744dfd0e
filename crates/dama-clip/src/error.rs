//! The crate's error type. Every variant names where the problem is: the file (or the name given
//! to in-memory bytes), and for JSON the field path, line and column, so that a broken
//! `config.json` or `preprocessor_config.json` can be fixed without reading our code.

use std::path::PathBuf;

/// Errors of loading and running CLIP.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// Malformed JSON or a field of the wrong type. `field` is the path inside the document
    /// (`vision_config.patch_size`), as far as serde got.
    #[error("{file}: field `{field}`: {message} (line {line}, column {column})")]
    Json {
        file: String,
        field: String,
        message: String,
        line: usize,
        column: usize,
    },

    /// A value that parses but that the model cannot use (a head count that does not divide the
    /// hidden size, an unknown activation, an unsupported resampling filter).
    #[error("{file}: field `{field}`: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },

    #[error("{file}: {message}")]
    Tokenizer { file: String, message: String },

    /// A model folder that lacks a file we need.
    #[error("{dir}: no {what} found (looked for {looked_for})")]
    MissingFile {
        dir: PathBuf,
        what: &'static str,
        looked_for: String,
    },

    /// A caller's input the model cannot take (an image of the wrong size, an empty batch).
    #[error("{0}")]
    Input(String),

    /// Loading a weight file (`file`) or running the model; the candle error names the tensor.
    #[error("{file}: {error}")]
    Weights {
        file: String,
        error: candle_core::Error,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ClipError> = std::result::Result<T, E>;

impl ClipError {
    pub(crate) fn invalid(file: &str, field: &str, message: impl Into<String>) -> Self {
        ClipError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Wraps a serde error with its field path (from `serde_path_to_error`) and position.
    pub(crate) fn json(file: &str, err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let field = err.path().to_string();
        let inner = err.into_inner();
        // serde_json appends " at line L column C"; we report the position ourselves.
        let mut message = inner.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        ClipError::Json {
            file: file.to_string(),
            field,
            line: inner.line(),
            column: inner.column(),
            message,
        }
    }
}

/// Parses JSON into `T`, reporting the failing field's path.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(file: &str, text: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| ClipError::json(file, e))
}

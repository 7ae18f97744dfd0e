//! The crate's error type. Every variant names the file, tensor, field or example it is about,
//! because a 7B checkpoint or a 100k-pair dataset is too large to bisect by hand.

use std::path::PathBuf;

/// Everything that can go wrong loading, encoding, running or saving a LLaVA model.
#[derive(Debug, thiserror::Error)]
pub enum LlavaError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A JSON file that does not parse, or a field with the wrong type (`field` is its path,
    /// e.g. `text_config.hidden_size`).
    #[error("{path}: field `{field}`: {message}")]
    Json {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// A configuration that parses but that this crate cannot run (unknown activation, a
    /// hidden size not divisible by the head count, ...).
    #[error("{origin}: field `{field}`: {message}")]
    Config {
        origin: String,
        field: String,
        message: String,
    },

    #[error("{origin}: missing tensor `{name}`")]
    MissingTensor { origin: String, name: String },

    #[error("{origin}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        origin: String,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{origin}: tensor `{name}`: {message}")]
    Tensor {
        origin: String,
        name: String,
        message: String,
    },

    /// The checkpoint's tensor names match none of the layouts transformers has written.
    #[error("{origin}: {message}")]
    Layout { origin: String, message: String },

    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// A preference pair that cannot be encoded or scored; `index` is its position in the batch
    /// the caller passed.
    #[error("example {index} ({side}): {message}")]
    Example {
        index: usize,
        side: &'static str,
        message: String,
    },

    /// A pair whose answer keeps no scored token (typically: the prompt alone fills
    /// `max_length`). The authors' stack silently scores such an answer 0; here it is an error.
    #[error(
        "example {index} ({side}): the answer has no scored token (prompt {prompt_tokens} tokens, max_length {max_length})"
    )]
    NoScoredTokens {
        index: usize,
        side: &'static str,
        prompt_tokens: usize,
        max_length: usize,
    },

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = LlavaError> = std::result::Result<T, E>;

impl LlavaError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn config(
        origin: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Config {
            origin: origin.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads a JSON file into `T`, naming the failing field (`serde_path_to_error`).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| LlavaError::io(path, e))?;
    parse_json(&text, path)
}

/// Parses JSON text into `T`; `path` only names the source in errors.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &std::path::Path,
) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| LlavaError::Json {
        path: path.to_path_buf(),
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

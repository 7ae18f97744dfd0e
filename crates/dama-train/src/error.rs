//! Errors of a training run, by role: the settings, the data, resuming, the reference cache,
//! numbers a step cannot use, files. A message never repeats its cause's text: the cause is
//! the error's `source()`, so that a chain printed link by link (`anyhow`'s `{:#}`) reads
//! each piece once.

use std::path::{Path, PathBuf};

use dama_core::CoreError;
use dama_data::DataError;
use dama_llava::LlavaError;

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Settings that cannot run (a batch of 0, a mode that needs α_D on unscored data, …).
    #[error("{0}")]
    Settings(String),
    /// The dataset as a whole cannot be trained on (no usable pair, α_D on some pairs only).
    #[error("{0}")]
    Dataset(String),
    /// A resume that is refused (other settings) or impossible (a damaged checkpoint).
    #[error("{0}")]
    Resume(String),
    /// A reference cache that does not belong to this run, or that holds unusable values.
    #[error("reference cache {}: {what}", path.display())]
    RefCache { path: PathBuf, what: String },
    /// Numbers the step cannot use: a non-finite gradient norm or log-prob.
    #[error("{0}")]
    Numerics(String),
    /// Reading or writing `path` failed; `what` says which (e.g. "writing").
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON for this file", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Llava(#[from] LlavaError),
    #[error(transparent)]
    Clip(#[from] dama_clip::ClipError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Launching, communicating with or losing another rank.
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    /// What was being done when `source` failed.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<TrainError>,
    },
}

impl TrainError {
    /// A closure for `map_err` on an I/O result: `what` the operation, `path` its file.
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { what, path, source }
    }

    pub fn json(path: &Path) -> impl FnOnce(serde_json::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Json { path, source }
    }

    /// The message and every cause after it, joined by `: ` (what `anyhow` prints as `{:#}`).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

/// `.context(..)` for results of this crate, as `anyhow` has it for binaries.
pub trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<TrainError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| TrainError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| TrainError::Context {
            context: f().into(),
            source: Box::new(e.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_each_piece_once() {
        let e: Result<()> = Err(std::io::Error::other("disk full"))
            .map_err(TrainError::io("writing", Path::new("/run/metrics.jsonl")))
            .context("step 3");
        assert_eq!(
            e.unwrap_err().chain(),
            "step 3: writing /run/metrics.jsonl: disk full"
        );
    }
}

//! One error type for the crate. Every error about an input names the file and, where there is
//! one, the line (1-based) and the record, so that a user can find and fix it.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Something wrong with an input file, a line of it or a record in it.
    #[error("{at}: {why}")]
    Input { at: Location, why: String },
    /// The cause is part of the message, not a separate `source`, so that it is printed once
    /// (as dama-data's errors do).
    #[error("{path}: {error}", path = path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The judge or extractor endpoint (retries exhausted, a malformed reply, the cache).
    #[error("{0}")]
    Llm(String),
    #[error("{0}")]
    Config(String),
}

/// Where in an input something went wrong.
#[derive(Debug, Clone)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub record: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(record) = &self.record {
            write!(f, ", record {record}")?;
        }
        Ok(())
    }
}

impl EvalError {
    pub fn file(path: impl AsRef<Path>, why: impl Into<String>) -> Self {
        Self::at(path, None, None, why)
    }

    pub fn at(
        path: impl AsRef<Path>,
        line: Option<usize>,
        record: Option<String>,
        why: impl Into<String>,
    ) -> Self {
        Self::Input {
            at: Location {
                path: path.as_ref().to_path_buf(),
                line,
                record,
            },
            why: why.into(),
        }
    }

    pub fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    /// A JSON syntax or shape error, with serde's own line when the file is one document.
    pub fn json(path: impl AsRef<Path>, line: Option<usize>, e: serde_json::Error) -> Self {
        let line = line.or((e.line() > 0).then_some(e.line()));
        Self::at(path, line, None, format!("invalid JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and its chain of causes, as `anyhow`'s `{:#}` prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(&format!(": {c}"));
            cause = c.source();
        }
        out
    }

    #[test]
    fn an_io_error_names_the_file_and_its_cause_once() {
        let why = "permission denied (os error 13)";
        let e = EvalError::io(
            "/data/x.json",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        );
        let text = chain(&e);
        assert_eq!(text.matches(why).count(), 1, "{text}");
        assert!(text.starts_with("/data/x.json: "), "{text}");
    }
}

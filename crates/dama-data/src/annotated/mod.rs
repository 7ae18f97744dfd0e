//! The annotated schema: the one format that the scorer writes, the trainer reads and the browser
//! reads and exports. JSONL whose first line is a [`Header`], then one pair per line; or parquet
//! with the same columns, images embedded, and the header in the key-value metadata under
//! `dama_annotated`. README.md ("The annotated schema") documents every field.

pub(crate) mod jsonl;
pub(crate) mod parquet;
mod sink;
pub(crate) mod stats;

pub use jsonl::AnnotatedJsonlWriter;
pub use parquet::AnnotatedParquetWriter;
#[cfg(not(target_arch = "wasm32"))]
pub use sink::FolderSink;
pub use sink::{ImageOut, ImageSink};
pub use stats::{DatasetStats, RunInfo, annotate, dataset_stats};

use dama_core::{EdgeCounts, Estimator, HardnessBands};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The key of the header: the JSONL header line's first field, and the parquet metadata key.
pub(crate) const HEADER_KEY: &str = "dama_annotated";

/// What a whole annotated file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The schema version ([`SCHEMA_VERSION`]); a newer one is refused, never half-read.
    pub dama_annotated: u32,
    /// The CLIP model that scored the sub-sentences (a Hugging Face id or a folder).
    #[serde(default)]
    pub clip_model: Option<String>,
    #[serde(default)]
    pub estimator: Option<Estimator>,
    /// `rules-v1`, or `llm:<model>` for the LLM splitter.
    #[serde(default)]
    pub splitter: Option<String>,
    /// δ̄ over the kept pairs; α_D of every kept pair was computed with it. `None`: unscored.
    #[serde(default)]
    pub delta_mean: Option<f64>,
    /// Records in the file, kept and dropped.
    pub count: usize,
    /// Records with `annotation.status = keep`.
    #[serde(default)]
    pub kept: usize,
    /// Kept records that carry δ.
    #[serde(default)]
    pub scored: usize,
    /// Kept pairs whose δ an edge case decided (docs/SPEC.md: counted, never dropped).
    #[serde(default)]
    pub edge_counts: EdgeCounts,
    /// The quartiles of δ over the kept pairs (the paper's Fig. 6 bands).
    #[serde(default)]
    pub bands: Option<HardnessBands<f64>>,
    /// The image folder, relative to this file (or absolute); `None` when images are inline.
    #[serde(default)]
    pub images: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
}

impl Header {
    /// Parses a header, refusing a newer schema version by name rather than misreading it.
    pub fn from_json_line(at: &Location, bytes: &[u8]) -> Result<Self, DataError> {
        let format = |what: String| DataError::Format {
            at: at.clone(),
            what,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| format(format!("the annotated header is not valid JSON: {e}")))?;
        let version = value
            .get(HEADER_KEY)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                format(format!(
                    "not an annotated header: no integer `{HEADER_KEY}` version"
                ))
            })?;
        if version > u64::from(SCHEMA_VERSION) {
            return Err(DataError::UnsupportedVersion {
                file: at.file.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        serde_json::from_value(value).map_err(|e| format(format!("bad annotated header: {e}")))
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a header always serialises")
    }
}

/// `dama-data <version>`, recorded in headers.
pub(crate) fn created_by() -> String {
    format!("dama-data {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_are_refused_by_name() {
        let at = Location::line("x.jsonl", 1);
        let err = Header::from_json_line(&at, br#"{"dama_annotated": 2, "count": 0}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.jsonl: annotated schema version 2 is newer than this build of dama reads (versions up to 1); update dama"
        );
        let err = Header::from_json_line(&at, br#"{"count": 0}"#).unwrap_err();
        assert!(
            err.to_string().contains("no integer `dama_annotated`"),
            "{err}"
        );
        let h = Header::from_json_line(
            &at,
            br#"{"dama_annotated": 1, "count": 3, "delta_mean": 0.25}"#,
        )
        .unwrap();
        assert_eq!((h.count, h.delta_mean, h.estimator), (3, Some(0.25), None));
    }
}

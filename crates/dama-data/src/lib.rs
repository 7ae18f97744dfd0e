//! Preference data for DAMA: one record type for a preference pair, readers for the datasets it
//! is trained on (RLAIF-V parquet, JSONL with an image folder, the authors' JSON list), the
//! annotated schema that the scorer writes and the trainer and browser read, and the splitters
//! that cut answers into the sub-sentences CLIP scores (paper §3.1).
//!
//! Everything reads from and writes to in-memory bytes as well as files, and compiles for
//! wasm32 (without the `llm` feature): file paths and HTTP are native conveniences on top.
//! Formulas (δ, δ̄, α_D) are `dama_core`'s; this crate only moves data to and from them.

#![forbid(unsafe_code)]

pub mod annotated;
mod curate;
pub mod error;
pub mod image;
pub mod read;
pub mod record;
#[cfg(not(target_arch = "wasm32"))]
pub mod score_log;
pub mod split;
pub mod summary;

pub use annotated::{
    AnnotatedJsonlWriter, AnnotatedParquetWriter, DatasetStats, Header, ImageOut, ImageSink,
    RunInfo, SCHEMA_VERSION, annotate, dataset_stats,
};
pub use error::{DataError, Location, Pos, Problem, RecordError, SkipReason};
#[cfg(not(target_arch = "wasm32"))]
pub use image::ImageFolder;
pub use image::{ImageMap, ImageSource, MAX_IMAGE_SIDE, NoImages, decode_rgb, image_dimensions};
#[cfg(not(target_arch = "wasm32"))]
pub use read::open_dataset;
pub use read::{ImageCheck, ReadMode, ReadOptions, Records, read_bytes, read_parquet};
pub use record::{Annotation, ImageRef, PreferencePair, Scores, Source, Status, SubSentences};
pub use split::{RuleSplitter, SplitError, Splitter};
pub use summary::{ReadSummary, SHOWN_SKIPPED, SkippedRecord};

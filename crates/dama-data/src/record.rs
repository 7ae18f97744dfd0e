//! The one record type: a preference pair, with everything that the scorer, the trainer and the
//! browser add to it. Readers fill what their format has; the annotated schema carries it all.

use std::fmt;

use dama_core::DeltaEdge;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

/// One preference pair (image I, question x, chosen y_w, rejected y_l) and its annotations.
///
/// A pair that a person swapped in the browser is stored already swapped (`chosen` is the answer
/// now preferred) with `annotation.swapped = true`, so that every consumer reads `chosen` and
/// `rejected` at face value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreferencePair {
    /// Unique within a dataset; derived from the file and row when the source has none.
    pub id: String,
    pub image: ImageRef,
    pub question: String,
    pub chosen: String,
    pub rejected: String,
    /// S_w and S_l (paper §3.1), once a splitter (or a person) has produced them.
    pub sub_sentences: Option<SubSentences>,
    /// Γ(I, s) of each sub-sentence, aligned with `sub_sentences`.
    pub scores: Option<Scores>,
    /// δ (Eq. 5, or the raw-ratio ablation), computed by `dama_core::delta` from `scores`.
    pub delta: Option<f64>,
    /// Which edge case decided δ, if any.
    pub delta_edge: Option<DeltaEdge>,
    /// α_D = σ(δ)/σ(δ̄) (Eq. 6); only meaningful with the δ̄ of the dataset it was computed in.
    pub alpha_d: Option<f64>,
    pub annotation: Annotation,
    pub source: Source,
    /// The authors' reference log-probabilities (their JSON's `logps`), carried unchanged.
    pub logps: Option<serde_json::Value>,
}

impl PreferencePair {
    /// A plain pair, as a reader of an unscored dataset produces it.
    pub fn new(
        id: impl Into<String>,
        image: ImageRef,
        question: impl Into<String>,
        chosen: impl Into<String>,
        rejected: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            image,
            question: question.into(),
            chosen: chosen.into(),
            rejected: rejected.into(),
            ..Self::default()
        }
    }

    pub fn is_kept(&self) -> bool {
        self.annotation.status == Status::Keep
    }

    /// The image as RGB: the one the reader decoded, or decoded now from the bytes.
    pub fn rgb_image(&self) -> Result<DynamicImage, image::ImageError> {
        match (&self.image.decoded, &self.image.bytes) {
            (Some(img), _) => Ok(img.clone()),
            (None, Some(bytes)) => crate::image::decode_rgb(bytes),
            (None, None) => Err(image::ImageError::IoError(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("pair `{}` has no image bytes loaded", self.id),
            ))),
        }
    }
}

/// Where the image of a pair is and, once read, its bytes and pixels.
#[derive(Clone, Default, PartialEq)]
pub struct ImageRef {
    /// A name for an [`crate::ImageSource`]: a path relative to the image folder (JSONL, the
    /// authors' JSON, annotated JSONL) or RLAIF-V's `image.path`.
    pub name: Option<String>,
    /// The encoded file (PNG, JPEG), embedded in the dataset or loaded through the source.
    pub bytes: Option<Vec<u8>>,
    /// Decoded and converted to RGB, when the reader was asked to decode.
    pub decoded: Option<DynamicImage>,
}

impl ImageRef {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    pub fn embedded(name: Option<String>, bytes: Vec<u8>) -> Self {
        Self {
            name,
            bytes: Some(bytes),
            decoded: None,
        }
    }
}

// Bytes and pixels would flood a debug print; their sizes say enough.
impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageRef")
            .field("name", &self.name)
            .field("bytes", &self.bytes.as_ref().map(Vec::len))
            .field(
                "decoded",
                &self.decoded.as_ref().map(|i| (i.width(), i.height())),
            )
            .finish()
    }
}

/// The sub-sentences of the two answers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SubSentences {
    pub chosen: Vec<String>,
    pub rejected: Vec<String>,
}

/// CLIP scores Γ(I, s) = exp(logit_scale)·cos (Eq. 3), one per sub-sentence, in the order of
/// [`SubSentences`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Scores {
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
}

/// A person's curation of a pair in the browser.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Annotation {
    pub status: Status,
    /// The pair was swapped: `chosen`/`rejected` (and their sub-sentences and scores) are
    /// already exchanged; δ was recomputed from the swapped scores.
    pub swapped: bool,
    pub tags: Vec<String>,
    pub note: String,
    /// The sub-sentences differ from the splitter's; the scores, if any, are those of the
    /// edited sub-sentences (an edit clears them until the pair is scored again).
    pub edited: bool,
    /// A person looked at the pair and decided on it (the explorer's "reviewed"), so that a
    /// reopened curation goes on from the pairs nobody has reviewed yet.
    pub reviewed: bool,
}

impl Annotation {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Keep,
    /// Left out of training; kept in the file so that a curation can be reopened.
    Drop,
}

/// Where the pair came from, for tracing it back (RLAIF-V's bookkeeping columns and ours).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ds_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_dataset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_split: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idx: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_path: Option<String>,
    /// The file the pair was first read from, and its row (parquet), line (JSONL) or item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
}

impl Source {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

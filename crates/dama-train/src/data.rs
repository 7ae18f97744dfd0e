//! The training set in memory: the text of every pair, its encoded image bytes (decoded only
//! when its batch comes), its α_D, its tokens, and a content hash for the reference cache.
//!
//! Everything that can be wrong with a record is found here, before the first step: a missing
//! or undecodable image, an empty answer (the reader), an answer left with no scored token (the
//! template), a scored dataset whose pair lacks α_D. By default the first such record stops the
//! run with an error naming it; `--skip-bad` reports and skips them instead.

use std::path::Path;

use candle_core::{Device, Tensor};
use dama_data::{Header, ImageCheck, ReadMode, ReadOptions, ReadSummary, open_dataset};
use dama_llava::{EncodedPair, Images, LlavaProcessor, PairBatch};
use image::DynamicImage;
use rayon::prelude::*;

use crate::error::{Context, Result, TrainError};
use crate::observer::Observer;
use crate::ref_cache::content_hash;

/// One pair ready for training.
#[derive(Debug, Clone)]
pub struct TrainPair {
    pub id: String,
    pub question: String,
    pub chosen: String,
    pub rejected: String,
    /// The encoded image file (PNG, JPEG…).
    pub image: Vec<u8>,
    /// α_D from a scored dataset; `None` for plain data.
    pub alpha_d: Option<f64>,
    /// δ from a scored dataset (for reports by hardness band).
    pub delta: Option<f64>,
    pub encoded: EncodedPair,
    /// Identity of question, answers and image for the reference cache.
    pub content: String,
}

/// A loaded training set.
#[derive(Debug)]
pub struct TrainData {
    pub pairs: Vec<TrainPair>,
    /// The annotated header, if the dataset was scored.
    pub header: Option<Header>,
    pub summary: ReadSummary,
    /// Pairs skipped after reading (no scored token left), with why.
    pub skipped: Vec<String>,
}

impl TrainData {
    /// Reads `path` (any format dama-data reads), decodes every image once to check it, and
    /// encodes every pair with `processor`.
    pub fn load(
        path: &Path,
        images: Option<&Path>,
        processor: &LlavaProcessor,
        skip_bad: bool,
    ) -> Result<Self> {
        let mode = if skip_bad {
            ReadMode::Lenient
        } else {
            ReadMode::Strict
        };
        let opts = ReadOptions {
            mode,
            images: ImageCheck::Decode,
            include_dropped: false,
        };
        let records = open_dataset(path, images, opts)
            .with_context(|| format!("opening dataset {}", path.display()))?;
        let header = records.header().cloned();
        let mut pairs = Vec::new();
        let mut skipped = Vec::new();
        let mut it = records;
        for record in it.by_ref() {
            let record = record.with_context(|| {
                format!(
                    "reading {} (pass --skip-bad to skip bad records)",
                    path.display()
                )
            })?;
            let image = record.image.bytes.clone().ok_or_else(|| {
                TrainError::Dataset(format!("pair `{}` has no image bytes", record.id))
            })?;
            let encoded = match processor.encoder.encode_pair(
                pairs.len(),
                &record.question,
                &record.chosen,
                &record.rejected,
            ) {
                Ok(e) => e,
                Err(e) if skip_bad => {
                    skipped.push(format!("pair `{}`: {e}", record.id));
                    continue;
                }
                Err(e) => {
                    return Err(TrainError::Dataset(format!(
                        "pair `{}` of {}: {e} (pass --skip-bad to skip such pairs)",
                        record.id,
                        path.display()
                    )));
                }
            };
            pairs.push(TrainPair {
                content: content_hash(&record.question, &record.chosen, &record.rejected, &image),
                id: record.id,
                question: record.question,
                chosen: record.chosen,
                rejected: record.rejected,
                image,
                alpha_d: record.alpha_d,
                delta: record.delta,
                encoded,
            });
        }
        let summary = it.into_summary();
        if pairs.is_empty() {
            return Err(TrainError::Dataset(format!(
                "{} holds no usable pair ({summary})",
                path.display()
            )));
        }
        Ok(Self {
            pairs,
            header,
            summary,
            skipped,
        })
    }

    /// Tells `observer` about every record that was skipped.
    pub fn report_skips(&self, observer: &dyn Observer) {
        let s = &self.summary;
        if s.skipped_total() > 0 || !self.skipped.is_empty() {
            observer.notice(&format!("skipped bad records: {s}"));
            for e in s.errors.iter().take(10) {
                observer.notice(&format!("  {e}"));
            }
            for e in self.skipped.iter().take(10) {
                observer.notice(&format!("  {e}"));
            }
        }
    }

    /// α_D of every pair, or `None` when the dataset is not scored. A scored dataset must have
    /// α_D on every pair: a silent 1 would train a different loss.
    pub fn alpha_d(&self) -> Result<Option<Vec<f32>>> {
        let with = self.pairs.iter().filter(|p| p.alpha_d.is_some()).count();
        if with == 0 {
            return Ok(None);
        }
        if let Some(p) = self.pairs.iter().find(|p| p.alpha_d.is_none()) {
            return Err(TrainError::Dataset(format!(
                "pair `{}` has no α_D although {with} other pairs of the dataset do: score the dataset again",
                p.id
            )));
        }
        Ok(Some(
            self.pairs
                .iter()
                .map(|p| p.alpha_d.unwrap() as f32)
                .collect(),
        ))
    }

    /// The batch of pairs `indices`: images decoded and preprocessed, tokens as encoded.
    /// Each image is decoded, padded and resized on a core of its own (on the host, then one
    /// copy to `device`): with a GPU step these would otherwise run one after another on one
    /// core while the GPU waits.
    pub fn batch(
        &self,
        indices: &[usize],
        processor: &LlavaProcessor,
        device: &Device,
    ) -> Result<PairBatch> {
        let pixels: Vec<Tensor> = indices
            .par_iter()
            .map(|&i| {
                let p = &self.pairs[i];
                let image: DynamicImage = dama_data::decode_rgb(&p.image).map_err(|e| {
                    TrainError::Dataset(format!("decoding the image of pair `{}`: {e}", p.id))
                })?;
                Ok(processor.pixel_values(&[&image], &Device::Cpu)?)
            })
            .collect::<Result<_>>()?;
        let pixels = Tensor::cat(&pixels, 0)?.to_device(device)?;
        Ok(PairBatch {
            images: Images::Pixels(pixels),
            pairs: indices
                .iter()
                .map(|&i| self.pairs[i].encoded.clone())
                .collect(),
        })
    }
}

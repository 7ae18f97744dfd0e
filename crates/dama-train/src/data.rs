//! The training set in memory: the text of every pair, its encoded image bytes (decoded only
//! when its batch comes), its α_D, its tokens, and a content hash for the reference cache.
//!
//! Everything that can be wrong with a record is found here, before the first step: a missing
//! or undecodable image, an empty answer (the reader), an answer left with no scored token (the
//! template), a scored dataset whose pair lacks α_D. By default the first such record stops the
//! run with an error naming it; `--skip-bad` reports and skips them instead.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use dama_data::{
    DataError, Header, ImageCheck, Location, Problem, ReadMode, ReadOptions, ReadSummary,
    open_dataset,
};
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

/// How the training set is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataOptions<'a> {
    /// The folder image paths are relative to (default: the dataset's, or its header's).
    pub images: Option<&'a Path>,
    /// Report and skip bad records instead of stopping at the first (`--skip-bad`).
    pub skip_bad: bool,
    /// Read absolute image paths where they point (`--allow-absolute-images`).
    pub absolute_images: bool,
    /// The model's `max_position_embeddings`: a longer sequence is named in a notice.
    pub max_positions: Option<usize>,
}

/// A loaded training set.
#[derive(Debug)]
pub struct TrainData {
    pub pairs: Vec<TrainPair>,
    /// The annotated header, if the dataset was scored.
    pub header: Option<Header>,
    /// What the read did, every skipped record included (the reader's and the template's).
    pub summary: ReadSummary,
    /// Pairs whose conversation was cut to the maximum length (still trained on).
    pub truncated: Vec<String>,
    /// Pairs longer than the model's `max_position_embeddings`, with their length.
    pub too_long: Vec<(String, usize)>,
}

impl TrainData {
    /// Reads `path` (any format dama-data reads), decodes every image once to check it, and
    /// encodes every pair with `processor`. Whether a record is usable is dama-data's one
    /// decision ([`dama_data::Records`]) plus the template's (an answer left with no token to
    /// score); by default the first bad record is the error, with `skip_bad` every one is
    /// counted and kept in [`TrainData::summary`].
    pub fn load(path: &Path, processor: &LlavaProcessor, options: DataOptions<'_>) -> Result<Self> {
        let mode = if options.skip_bad {
            ReadMode::Lenient
        } else {
            ReadMode::Strict
        };
        let opts = ReadOptions {
            mode,
            images: ImageCheck::Decode,
            absolute_images: options.absolute_images,
            ..ReadOptions::default()
        };
        let mut records = open_dataset(path, options.images, opts)
            .with_context(|| format!("opening dataset {}", path.display()))?;
        let header = records.header().cloned();
        let (mut pairs, mut truncated, mut too_long) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(record) = records.next() {
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
                Err(e) => {
                    let at = records
                        .last_location()
                        .cloned()
                        .unwrap_or_else(|| Location::file(path.display().to_string()));
                    let bad = DataError::record(
                        at,
                        Some(record.id.clone()),
                        None,
                        Problem::Untrainable(e.to_string()),
                    );
                    if options.skip_bad {
                        records.skip_record(bad);
                        continue;
                    }
                    return Err(TrainError::Data(bad))
                        .context("pass --skip-bad to skip such pairs");
                }
            };
            if encoded.chosen.truncated || encoded.rejected.truncated {
                truncated.push(record.id.clone());
            }
            let positions = encoded
                .chosen
                .input_ids
                .len()
                .max(encoded.rejected.input_ids.len());
            if options.max_positions.is_some_and(|max| positions > max) {
                too_long.push((record.id.clone(), positions));
            }
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
        let summary = records.into_summary();
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
            truncated,
            too_long,
        })
    }

    /// Tells `observer` about every skipped record (`list`: the file that names them all)
    /// and about conversations that were cut or run past the model's positions.
    pub fn report(&self, observer: &dyn Observer, list: Option<&Path>, max_length: Option<usize>) {
        observer.bad_records(&self.summary, list);
        let examples = |ids: &mut dyn Iterator<Item = &str>| {
            let first: Vec<&str> = ids.take(3).collect();
            format!("`{}`", first.join("`, `"))
        };
        if !self.truncated.is_empty() {
            observer.notice(&format!(
                "{} of {} pairs were cut to --max-length {} tokens (e.g. {}): their answers are scored only up to the cut",
                self.truncated.len(),
                self.pairs.len(),
                max_length.map_or("?".into(), |m| m.to_string()),
                examples(&mut self.truncated.iter().map(String::as_str))
            ));
        }
        if let Some((_, longest)) = self.too_long.iter().max_by_key(|(_, n)| *n) {
            observer.notice(&format!(
                "{} pairs run past the model's max_position_embeddings ({longest} positions at most, e.g. {}): lower --max-length, or expect positions the model never saw",
                self.too_long.len(),
                examples(&mut self.too_long.iter().map(|(id, _)| id.as_str()))
            ));
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
        if indices.is_empty() {
            // a data-parallel rank whose share of a short batch is empty
            return Ok(PairBatch {
                images: Images::Pixels(Tensor::zeros((0, 3, 1, 1), DType::F32, device)?),
                pairs: Vec::new(),
            });
        }
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

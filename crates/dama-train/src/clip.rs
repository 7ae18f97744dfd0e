//! Contrastive training of a CLIP ([`dama_clip::TrainableClip`]): symmetric InfoNCE with a
//! learnable temperature over batches of image–sentence pairs, optionally with a hard negative
//! sentence per pair (NegCLIP's recipe, which makes CLIP tell a true sentence from the same one
//! with one attribute changed: what the hardness of a hallucination is), with this crate's
//! AdamW, gradient clipping and cosine schedule.
//!
//! Who is a positive of whom is decided in each batch from the pairs themselves: text j is a
//! positive of image i when the batch holds a pair (image i, text j) — the same sentence of two
//! images, or two sentences of one image, are then not pushed apart. Images are rows once each,
//! however many of the batch's pairs they have.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use dama_clip::{ClipTokenizer, ImageProcessor, TrainableClip, contrastive_loss};
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::optim::{AdamW, AdamWConfig, Master, Param, clip_grad_norm};
use crate::order::{Cursor, DataOrder};
use crate::schedule::CosineSchedule;

/// The settings of a CLIP run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipTrainConfig {
    pub epochs: u64,
    /// Pairs per step (their hard negatives come on top).
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: Option<f64>,
    /// Seeds the data order.
    pub seed: u64,
}

impl ClipTrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size < 2 {
            return Err(TrainError::Settings(format!(
                "a contrastive batch needs at least 2 pairs, not {}",
                self.batch_size
            )));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(TrainError::Settings(format!(
                "the learning rate must be positive, not {}",
                self.lr
            )));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(TrainError::Settings(format!(
                "the warm-up ratio must be in [0, 1), not {}",
                self.warmup_ratio
            )));
        }
        Ok(())
    }
}

/// One image–sentence pair, tokenised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipPair {
    /// Index into [`ClipTrainData::pixels`].
    pub image: usize,
    pub text: Vec<u32>,
    /// A sentence that is false of the image (a hard negative), if any.
    pub negative: Option<Vec<u32>>,
}

/// The training set: every image preprocessed once, and the pairs.
pub struct ClipTrainData {
    /// (n_images, 3, H, W), normalised.
    pub pixels: Tensor,
    pub pairs: Vec<ClipPair>,
}

impl ClipTrainData {
    /// Preprocesses `images` with `processor` and tokenises each `(image, text, negative)`.
    pub fn new<'a>(
        images: &[DynamicImage],
        processor: &ImageProcessor,
        tokenizer: &ClipTokenizer,
        pairs: impl IntoIterator<Item = (usize, &'a str, Option<&'a str>)>,
        device: &Device,
    ) -> Result<Self> {
        let refs: Vec<&DynamicImage> = images.iter().collect();
        let pixels = processor.to_tensor(&refs, device)?;
        let pairs = pairs
            .into_iter()
            .map(|(image, text, negative)| {
                if image >= images.len() {
                    return Err(TrainError::Dataset(format!(
                        "the pair {text:?} names image {image} of {}",
                        images.len()
                    )));
                }
                Ok(ClipPair {
                    image,
                    text: tokenizer.encode(text)?,
                    negative: negative.map(|n| tokenizer.encode(n)).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if pairs.is_empty() {
            return Err(TrainError::Dataset(
                "no image–sentence pair to train on".into(),
            ));
        }
        Ok(Self { pixels, pairs })
    }
}

/// One step of a CLIP run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipStep {
    pub step: u64,
    pub loss: f64,
    /// exp(logit_scale) after the step.
    pub scale: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

/// What a batch is for the loss: its images once each, its texts, and who is whose positive.
struct Batch {
    images: Vec<u32>,
    texts: Vec<Vec<u32>>,
    positives: Vec<Vec<bool>>,
}

fn batch(data: &ClipTrainData, indices: &[usize]) -> Batch {
    let mut images: Vec<u32> = Vec::new();
    let mut row_of: HashMap<usize, usize> = HashMap::new();
    for &i in indices {
        let image = data.pairs[i].image;
        row_of.entry(image).or_insert_with(|| {
            images.push(image as u32);
            images.len() - 1
        });
    }
    let mut texts: Vec<Vec<u32>> = indices
        .iter()
        .map(|&i| data.pairs[i].text.clone())
        .collect();
    texts.extend(
        indices
            .iter()
            .filter_map(|&i| data.pairs[i].negative.clone()),
    );
    let mut positives = vec![vec![false; texts.len()]; images.len()];
    for &i in indices {
        let p = &data.pairs[i];
        let row = row_of[&p.image];
        for (j, t) in texts.iter().enumerate() {
            if *t == p.text {
                positives[row][j] = true;
            }
        }
    }
    Batch {
        images,
        texts,
        positives,
    }
}

/// Trains `model` in place; returns every step. `observer` sees the loop as `label`.
pub fn train_clip(
    model: &TrainableClip,
    data: &ClipTrainData,
    cfg: &ClipTrainConfig,
    label: &str,
    observer: &dyn Observer,
) -> Result<Vec<ClipStep>> {
    cfg.validate()?;
    let params: Vec<Param> = model
        .vars()
        .iter()
        .map(|(name, var)| Param {
            name: name.clone(),
            var: var.clone(),
        })
        .collect();
    let mut opt = AdamW::new(
        params,
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            master: Master::F32,
            ..AdamWConfig::default()
        },
    )?;
    let order = DataOrder {
        len: data.pairs.len(),
        batch_size: cfg.batch_size,
        epochs: cfg.epochs,
        seed: cfg.seed,
        shuffle: true,
    };
    let total = order.total_steps();
    let schedule = CosineSchedule::with_warmup_ratio(cfg.lr, cfg.warmup_ratio, total);
    let mut cursor = Cursor::default();
    let mut steps = Vec::with_capacity(total as usize);
    observer.training_started(label, total, 0);
    while let Some((indices, next)) = order.batch_at(cursor) {
        let t0 = Instant::now();
        let b = batch(data, &indices);
        let idx = Tensor::from_vec(b.images.clone(), b.images.len(), data.pixels.device())?;
        let px = data.pixels.index_select(&idx, 0)?;
        let logits = model.logits(&model.image_embeds(&px)?, &model.text_embeds(&b.texts)?)?;
        let loss = contrastive_loss(&logits, &b.positives)?;
        let grads = loss.backward()?;
        let grads: Vec<Option<Tensor>> = opt
            .params()
            .iter()
            .map(|p| grads.get(p.var.as_tensor()).cloned())
            .collect();
        let (grad_norm, clip) = clip_grad_norm(&grads, cfg.max_grad_norm.unwrap_or(f64::INFINITY))?;
        if !grad_norm.is_finite() {
            return Err(TrainError::Numerics(format!(
                "CLIP step {}: the gradient norm is {grad_norm}",
                steps.len() + 1
            )));
        }
        let lr = schedule.lr(steps.len() as u64);
        opt.step_clipped(&grads, lr, clip)?;
        let step = ClipStep {
            step: steps.len() as u64 + 1,
            loss: f64::from(loss.to_scalar::<f32>()?),
            scale: f64::from(model.scale()?.to_scalar::<f32>()?),
            lr,
            grad_norm,
            seconds: t0.elapsed().as_secs_f64(),
        };
        observer.step_summary(&format!("loss {:.4}  scale {:.1}", step.loss, step.scale));
        steps.push(step);
        cursor = next;
    }
    observer.training_finished();
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positives_are_the_batchs_own_pairs_and_duplicates() {
        let data = ClipTrainData {
            pixels: Tensor::zeros((3, 3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
            pairs: vec![
                ClipPair {
                    image: 0,
                    text: vec![1],
                    negative: Some(vec![2]),
                },
                ClipPair {
                    image: 1,
                    text: vec![1],
                    negative: None,
                },
                ClipPair {
                    image: 0,
                    text: vec![3],
                    negative: Some(vec![1]),
                },
                ClipPair {
                    image: 2,
                    text: vec![4],
                    negative: None,
                },
            ],
        };
        let b = batch(&data, &[0, 1, 2, 3]);
        assert_eq!(b.images, [0, 1, 2]);
        assert_eq!(
            b.texts,
            [vec![1], vec![1], vec![3], vec![4], vec![2], vec![1]]
        );
        // Image 0 owns texts [1] and [3], wherever they stand (a negative of another pair that
        // is one of its sentences too); image 1 shares sentence [1]; [2] is nobody's.
        let t = true;
        let f = false;
        assert_eq!(
            b.positives,
            [
                vec![t, t, t, f, f, t],
                vec![t, t, f, f, f, t],
                vec![f, f, f, t, f, f],
            ]
        );
    }
}

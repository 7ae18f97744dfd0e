//! Γ(I, s) = exp(logit_scale)·cos(image, text) (the paper's Eq. 3) for preference pairs: each
//! image is encoded once, and the sub-sentences of the chosen and rejected answers together.
//! Turning the scores into δ is dama-core's `delta`, not this crate's.
//!
//! [`ClipScorer::score_pairs`] batches several pairs at once: their images form one image
//! batch, and all their sub-sentences are tokenised, deduplicated (a sentence the chosen and
//! the rejected answer share, or two spellings that tokenise alike, is encoded once) and grouped
//! by length, so that a batch pads short sentences to a length near their own rather than to
//! the longest of all. Every score equals the one of scoring the pair alone, up to float
//! summation order.

use std::collections::HashMap;

use candle_core::Tensor;
use image::DynamicImage;

use crate::error::Result;
use crate::model::ClipModel;
use crate::preprocess::ImageProcessor;
use crate::tokenizer::ClipTokenizer;

/// The Γ scores of one pair's sub-sentences, in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct PairScores {
    pub chosen: Vec<f32>,
    pub rejected: Vec<f32>,
}

/// One pair to score: its image and the sub-sentences of both answers.
#[derive(Debug, Clone, Copy)]
pub struct PairInput<'a, S> {
    pub image: &'a DynamicImage,
    pub chosen: &'a [S],
    pub rejected: &'a [S],
}

/// Batch sizes. The defaults were measured on a CPU (ViT-B/32): every matmul call repacks the
/// weight matrix, which costs about as much as 60–70 more token rows, so per-image time falls
/// from ≈2.3× (1 image) to ≈1.1× (8) to 1× (16 images per batch), and text batches gain from
/// gathering the sentences of many pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScorerOptions {
    /// Pairs scored together by [`ClipScorer::score_pairs`] (their images are one image batch).
    pub pairs_per_batch: usize,
    /// Most texts in one text batch.
    pub max_texts_per_batch: usize,
    /// The fixed cost of one more text batch, in padded tokens; it decides how finely
    /// [`plan_text_batches`] splits texts of different lengths.
    pub batch_overhead_tokens: usize,
}

impl Default for ScorerOptions {
    fn default() -> Self {
        Self {
            pairs_per_batch: 64,
            max_texts_per_batch: 128,
            batch_overhead_tokens: 64,
        }
    }
}

/// CLIP with its tokenizer and image processor: everything Γ needs.
pub struct ClipScorer {
    pub model: ClipModel,
    pub tokenizer: ClipTokenizer,
    pub processor: ImageProcessor,
    pub options: ScorerOptions,
}

impl ClipScorer {
    pub fn new(model: ClipModel, tokenizer: ClipTokenizer, processor: ImageProcessor) -> Self {
        Self {
            model,
            tokenizer,
            processor,
            options: ScorerOptions::default(),
        }
    }

    /// Γ of one image against its chosen and rejected sub-sentences: one image forward, one
    /// text batch (or a few, grouped by length).
    pub fn score_pair<S: AsRef<str>>(
        &self,
        image: &DynamicImage,
        chosen: &[S],
        rejected: &[S],
    ) -> Result<PairScores> {
        let mut out = self.score_chunk(&[PairInput {
            image,
            chosen,
            rejected,
        }])?;
        Ok(out.pop().expect("one pair in, one out"))
    }

    /// Γ for many pairs, [`ScorerOptions::pairs_per_batch`] at a time; the result is in the
    /// order of `pairs`.
    pub fn score_pairs<S: AsRef<str>>(
        &self,
        pairs: &[PairInput<'_, S>],
    ) -> Result<Vec<PairScores>> {
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(self.options.pairs_per_batch.max(1)) {
            out.extend(self.score_chunk(chunk)?);
        }
        Ok(out)
    }

    /// Unit-norm image embeddings (b, p), f32.
    pub fn image_embeds(&self, images: &[&DynamicImage]) -> Result<Tensor> {
        let pixel_values = self.processor.to_tensor(images, self.model.device())?;
        self.model.image_embeds(&pixel_values)
    }

    /// Unit-norm text embeddings (n, p), f32, for tokenised texts: grouped by length into
    /// batches, returned in the input order.
    pub fn text_embeds_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let plan = plan_text_batches(
            &lengths,
            self.options.max_texts_per_batch,
            self.options.batch_overhead_tokens,
        );
        let mut parts = Vec::with_capacity(plan.len());
        let mut order = Vec::with_capacity(ids.len());
        for group in &plan {
            let batch: Vec<Vec<u32>> = group.iter().map(|&i| ids[i].clone()).collect();
            parts.push(self.model.text_embeds_ids(&batch)?);
            order.extend(group.iter().map(|&i| i as u32));
        }
        let stacked = Tensor::cat(&parts, 0)?;
        // Row r of `stacked` is text order[r]; invert the permutation.
        let mut inverse = vec![0u32; ids.len()];
        for (row, &i) in order.iter().enumerate() {
            inverse[i as usize] = row as u32;
        }
        let inverse = Tensor::from_vec(inverse, ids.len(), stacked.device())?;
        Ok(stacked.index_select(&inverse, 0)?)
    }

    fn score_chunk<S: AsRef<str>>(&self, pairs: &[PairInput<'_, S>]) -> Result<Vec<PairScores>> {
        // Unique token sequences of the chunk, and for each pair where its texts are.
        let mut unique: Vec<Vec<u32>> = Vec::new();
        let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut slots: Vec<(Vec<usize>, Vec<usize>)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let mut place = |texts: &[S]| -> Result<Vec<usize>> {
                texts
                    .iter()
                    .map(|t| {
                        let ids = self.tokenizer.encode(t.as_ref())?;
                        Ok(*index.entry(ids).or_insert_with_key(|ids| {
                            unique.push(ids.clone());
                            unique.len() - 1
                        }))
                    })
                    .collect()
            };
            let chosen = place(pair.chosen)?;
            let rejected = place(pair.rejected)?;
            slots.push((chosen, rejected));
        }
        // Images of pairs without any sub-sentence are not encoded: nothing to score.
        let with_text: Vec<usize> = (0..pairs.len())
            .filter(|&i| !(slots[i].0.is_empty() && slots[i].1.is_empty()))
            .collect();
        if with_text.is_empty() {
            return Ok(slots
                .iter()
                .map(|_| PairScores {
                    chosen: vec![],
                    rejected: vec![],
                })
                .collect());
        }
        let images: Vec<&DynamicImage> = with_text.iter().map(|&i| pairs[i].image).collect();
        let image_embeds = self.image_embeds(&images)?;
        let text_embeds = self.text_embeds_ids(&unique)?;
        let logits = self
            .model
            .logits_from_embeds(&image_embeds, &text_embeds)?
            .to_vec2::<f32>()?;
        let mut row_of = vec![usize::MAX; pairs.len()];
        for (row, &i) in with_text.iter().enumerate() {
            row_of[i] = row;
        }
        Ok(slots
            .into_iter()
            .enumerate()
            .map(|(i, (chosen, rejected))| {
                let pick =
                    |slots: Vec<usize>| slots.into_iter().map(|u| logits[row_of[i]][u]).collect();
                PairScores {
                    chosen: pick(chosen),
                    rejected: pick(rejected),
                }
            })
            .collect())
    }
}

/// Groups texts of the given token lengths into batches: sorted by length, then split where it
/// pays, minimising Σ over batches of (texts · longest length + `overhead`) with at most
/// `max_batch` texts each (dynamic programming over the sorted order, which is optimal for this
/// cost). Returns indices into `lengths`.
pub fn plan_text_batches(lengths: &[usize], max_batch: usize, overhead: usize) -> Vec<Vec<usize>> {
    let n = lengths.len();
    if n == 0 {
        return vec![];
    }
    let max_batch = max_batch.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    // best[k]: cost of batching the k shortest texts; cut[k]: where their last batch starts.
    let mut best = vec![usize::MAX; n + 1];
    let mut cut = vec![0; n + 1];
    best[0] = 0;
    for k in 1..=n {
        let longest = lengths[order[k - 1]];
        for start in k.saturating_sub(max_batch)..k {
            let cost = best[start] + (k - start) * longest + overhead;
            if cost < best[k] {
                best[k] = cost;
                cut[k] = start;
            }
        }
    }
    let mut batches = Vec::new();
    let mut k = n;
    while k > 0 {
        batches.push(order[cut[k]..k].to_vec());
        k = cut[k];
    }
    batches.reverse();
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_keeps_every_text_once() {
        let lengths = [12, 5, 77, 9, 9, 30, 5, 40, 11, 6];
        for max in [1, 3, 64] {
            for overhead in [0, 24, 10_000] {
                let plan = plan_text_batches(&lengths, max, overhead);
                let mut seen: Vec<usize> = plan.concat();
                seen.sort();
                assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
                assert!(plan.iter().all(|b| !b.is_empty() && b.len() <= max));
            }
        }
    }

    #[test]
    fn plan_splits_only_when_it_pays() {
        // A huge overhead: one batch. No overhead: every distinct length alone.
        assert_eq!(plan_text_batches(&[5, 70, 6], 64, 10_000).len(), 1);
        let plan = plan_text_batches(&[5, 70, 5], 64, 0);
        assert_eq!(plan, vec![vec![0, 2], vec![1]]);
        assert!(plan_text_batches(&[], 8, 0).is_empty());
    }
}

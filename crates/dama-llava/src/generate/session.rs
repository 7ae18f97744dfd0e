//! A decoding session: the prompts' prefill into the KV cache, then one token per sequence
//! per step, through the model's own decoder layers (`decoder::layer_forward_with`) with the
//! attention step swapped for one that reads and extends the cache.
//!
//! Layout: the prompts are left-padded to one length P (pad keys masked, positions counted
//! from each prompt's first real token, as transformers derives them from the attention
//! mask), so every sequence's next token sits at the same column and all of them advance in
//! lockstep. Rows are question-major, `beams` rows per question.

use candle_core::{DType, Tensor};
use dama_kernels::AttnMask;

use super::attention::decode_attention;
use super::cache::{PrefixKv, SuffixKv};
use crate::decoder::layer_forward_with;
use crate::error::{LlavaError, Result};
use crate::model::LlavaModel;
use crate::ops;
use crate::params::Grad;

pub(crate) struct Session<'m> {
    model: &'m LlavaModel,
    /// Rows per question.
    beams: usize,
    /// Real (unpadded) prompt length of each question still in the session.
    lengths: Vec<usize>,
    prefix: Vec<PrefixKv>,
    /// `(questions, 1, 1, P)`: 0 on real prompt tokens, −∞ on left padding; `None` without
    /// padding.
    prefix_mask: Option<Tensor>,
    /// Left padding of each question (to rebuild the mask when questions leave).
    pads: Vec<usize>,
    suffix: Vec<SuffixKv>,
}

impl<'m> Session<'m> {
    /// Runs the prompts (`input_ids` with the image tokens expanded, one image each in
    /// `features` `(questions, image_tokens, projector_in)`) and keeps their keys and values.
    /// Returns the session (one row per question) and the next-token logits `(questions, V)`
    /// (f32). `max_new` bounds the suffix cache.
    pub fn prefill(
        model: &'m LlavaModel,
        prompts: &[&[u32]],
        features: &Tensor,
        max_new: usize,
    ) -> Result<(Self, Tensor)> {
        let cfg = model.config();
        let n = prompts.len();
        let np = cfg.num_image_tokens();
        let p = prompts.iter().map(|x| x.len()).max().unwrap_or(0);
        if n == 0 || p == 0 {
            return Err(LlavaError::Invalid("no prompt to generate from".into()));
        }
        let pad = model.pad_token();
        let pads: Vec<usize> = prompts.iter().map(|x| p - x.len()).collect();
        let mut ids = Vec::with_capacity(n * p);
        let mut positions = Vec::with_capacity(n * p);
        let mut image_rows = Vec::with_capacity(n * np);
        let mut spans = Vec::with_capacity(n * p);
        for (r, prompt) in prompts.iter().enumerate() {
            if prompt.is_empty() {
                return Err(LlavaError::Example {
                    index: r,
                    side: "question",
                    message: "an empty prompt".into(),
                });
            }
            let mut images = 0;
            for q in 0..p {
                let flat = r * p + q;
                if q < pads[r] {
                    ids.push(pad);
                    positions.push(0);
                    spans.push([0u32; 4]);
                    continue;
                }
                let tok = prompt[q - pads[r]];
                if tok == cfg.image_token_id {
                    if images < np {
                        image_rows.push((flat, r * np + images));
                    }
                    images += 1;
                    ids.push(pad);
                } else {
                    ids.push(tok);
                }
                positions.push((q - pads[r]) as u32);
                let (lo, hi) = (pads[r] as u32, q as u32 + 1);
                spans.push([lo, hi, hi, hi]);
            }
            if images != np {
                return Err(LlavaError::Example {
                    index: r,
                    side: "question",
                    message: format!("{images} image tokens in the prompt, expected {np}"),
                });
            }
        }
        let x = model.embed_with_images(ids, &image_rows, features, Grad::Off)?;
        let mask = AttnMask::from_spans(n, p, spans)?;
        let (cos, sin) = rope(model, &positions, (n, p))?;
        let scale = 1.0 / (cfg.text.head_dim as f64).sqrt();
        let mut prefix = Vec::new();
        let mut x = x;
        for layer in model.llama.layers() {
            let mut kv = None;
            x = layer_forward_with(
                &cfg.text,
                layer,
                &x,
                (n, p),
                &cos,
                &sin,
                Grad::Off,
                |q, k, v| {
                    kv = Some(PrefixKv::new(k, v)?);
                    dama_kernels::attention(q, k, v, &mask, scale)
                },
            )?;
            prefix.push(kv.expect("the layer attends once"));
        }
        let last = x
            .reshape((n, p, cfg.text.hidden_size))?
            .narrow(1, p - 1, 1)?
            .squeeze(1)?;
        let logits = model.llama.logits(&last)?;
        let layers = prefix.len();
        let session = Self {
            model,
            beams: 1,
            lengths: prompts.iter().map(|x| x.len()).collect(),
            prefix,
            prefix_mask: prefix_mask(&pads, p, model)?,
            pads,
            suffix: (0..layers).map(|_| SuffixKv::new(max_new)).collect(),
        };
        Ok((session, logits))
    }

    /// Gives each question `beams` rows; only before the first step.
    pub fn set_beams(&mut self, beams: usize) -> Result<()> {
        if self.suffix.first().is_some_and(|s| s.len() > 0) {
            return Err(LlavaError::Invalid(
                "beams can only be set before the first step".into(),
            ));
        }
        self.beams = beams.max(1);
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.lengths.len() * self.beams
    }

    /// Feeds one token per row and returns the next-token logits `(rows, V)` (f32).
    pub fn step(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let model = self.model;
        let cfg = model.config();
        let rows = self.rows();
        if tokens.len() != rows {
            return Err(LlavaError::Invalid(format!(
                "{} tokens for {rows} sequences",
                tokens.len()
            )));
        }
        let done = self.suffix.first().map_or(0, |s| s.len());
        let positions: Vec<u32> = (0..rows)
            .map(|r| (self.lengths[r / self.beams] + done) as u32)
            .collect();
        let (cos, sin) = rope(model, &positions, (rows, 1))?;
        let ids = Tensor::from_slice(tokens, rows, model.device())?;
        let mut x = model.llama.embed(&ids, Grad::Off)?;
        let scale = 1.0 / (cfg.text.head_dim as f64).sqrt();
        let beams = self.beams;
        let mask = self.prefix_mask.as_ref();
        for ((layer, prefix), suffix) in model
            .llama
            .layers()
            .iter()
            .zip(&self.prefix)
            .zip(&mut self.suffix)
        {
            x = layer_forward_with(
                &cfg.text,
                layer,
                &x,
                (rows, 1),
                &cos,
                &sin,
                Grad::Off,
                |q, k, v| {
                    suffix.push(k, v)?;
                    let (sk, sv) = suffix.view()?.expect("pushed above");
                    decode_attention(q, prefix, (&sk, &sv), mask, beams, scale)
                },
            )?;
        }
        Ok(model.llama.logits(&x)?)
    }

    /// Row `i` continues old row `sources[i]` (beam reordering); `sources` must keep each row
    /// within its question. The identity costs nothing.
    pub fn reorder(&mut self, sources: &[u32]) -> Result<()> {
        if sources.iter().enumerate().all(|(i, &s)| i as u32 == s) {
            return Ok(());
        }
        if sources.len() != self.rows()
            || sources
                .iter()
                .enumerate()
                .any(|(i, &s)| i / self.beams != s as usize / self.beams)
        {
            return Err(LlavaError::Invalid(
                "a beam can only continue a row of its own question".into(),
            ));
        }
        let idx = Tensor::from_slice(sources, sources.len(), self.model.device())?;
        for s in &mut self.suffix {
            s.select(&idx)?;
        }
        Ok(())
    }

    /// Keeps the questions `keep` (indices into the current questions, ascending) and all
    /// their rows; the others leave the batch.
    pub fn retain(&mut self, keep: &[usize]) -> Result<()> {
        if keep.len() == self.lengths.len() {
            return Ok(());
        }
        let dev = self.model.device();
        let q: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
        let q_idx = Tensor::from_slice(&q, q.len(), dev)?;
        let rows: Vec<u32> = keep
            .iter()
            .flat_map(|&i| (i * self.beams..(i + 1) * self.beams).map(|r| r as u32))
            .collect();
        let r_idx = Tensor::from_slice(&rows, rows.len(), dev)?;
        for p in &mut self.prefix {
            p.select(&q_idx)?;
        }
        for s in &mut self.suffix {
            s.select(&r_idx)?;
        }
        self.lengths = keep.iter().map(|&i| self.lengths[i]).collect();
        self.pads = keep.iter().map(|&i| self.pads[i]).collect();
        let p = self.prefix.first().map_or(0, |x| x.k.dim(2).unwrap_or(0));
        self.prefix_mask = prefix_mask(&self.pads, p, self.model)?;
        Ok(())
    }
}

/// RoPE tables `(rows, t, head_dim)` of the given positions (row-major).
fn rope(
    model: &LlavaModel,
    positions: &[u32],
    (rows, t): (usize, usize),
) -> Result<(Tensor, Tensor)> {
    let hd = model.config().text.head_dim;
    let (cos, sin) = ops::rope_tables(positions, &model.inv_freq, model.dtype(), model.device())?;
    Ok((cos.reshape((rows, t, hd))?, sin.reshape((rows, t, hd))?))
}

/// The additive mask of the prefix's left padding, `(questions, 1, 1, P)` f32; `None` when no
/// question is padded.
fn prefix_mask(pads: &[usize], p: usize, model: &LlavaModel) -> Result<Option<Tensor>> {
    if pads.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let mut m = vec![0f32; pads.len() * p];
    for (r, &pad) in pads.iter().enumerate() {
        m[r * p..r * p + pad].fill(f32::NEG_INFINITY);
    }
    Ok(Some(Tensor::from_vec(
        m,
        (pads.len(), 1, 1, p),
        model.device(),
    )?))
}

/// f32 logits as host rows.
pub(crate) fn host_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2()?)
}

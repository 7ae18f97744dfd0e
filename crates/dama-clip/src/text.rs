//! CLIP's text tower (transformers' `CLIPTextTransformer`): token and position embeddings, a
//! causally masked encoder, `final_layer_norm`, and pooling at the end-of-text token.
//!
//! Pooling follows transformers 5.x: with the legacy `eos_token_id == 2` of the openai configs
//! the pooled row is the argmax of the input ids (the end-of-text id 49407 is the largest in
//! CLIP's vocabulary); otherwise it is the first position holding `eos_token_id` (position 0 if
//! there is none, as torch's argmax of an all-false row gives).
//!
//! The mask is causal only. With right padding every row up to the pooled one sees real tokens
//! only, so the padding mask transformers also applies changes nothing that is pooled; and the
//! pooled row never sees a later position, so rows after the last pooled row of the batch are
//! not computed at all, and the last layer runs at the pooled rows alone.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::attention::KeyRange;
use crate::config::ClipTextConfig;
use crate::encoder::{Encoder, EncoderShape, Mask, Norm, layer_norm};

/// The row transformers pools for each sequence of `ids` (see the module docs).
pub fn pooled_positions(ids: &[Vec<u32>], eos_token_id: u32) -> Vec<usize> {
    ids.iter()
        .map(|row| {
            if eos_token_id == 2 {
                // torch.argmax returns the first maximal index.
                let max = row.iter().copied().max().unwrap_or(0);
                row.iter().position(|&v| v == max).unwrap_or(0)
            } else {
                row.iter().position(|&v| v == eos_token_id).unwrap_or(0)
            }
        })
        .collect()
}

/// The text tower; build it with `vb` at the `text_model` prefix.
pub struct ClipTextTransformer {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: Norm,
    cfg: ClipTextConfig,
    eos_token_id: u32,
}

impl ClipTextTransformer {
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let eos_token_id = cfg
            .eos_token_id
            .ok_or_else(|| candle_core::Error::Msg("text_config.eos_token_id is null".into()))?;
        let d = cfg.hidden_size;
        let shape = EncoderShape {
            hidden_size: d,
            intermediate_size: cfg.intermediate_size,
            num_heads: cfg.num_attention_heads,
            num_layers: cfg.num_hidden_layers,
            layer_norm_eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        };
        let emb = vb.pp("embeddings");
        let tokens = emb.get((cfg.vocab_size, d), "token_embedding.weight")?;
        Ok(Self {
            token_embedding: Embedding::new(tokens, d),
            position_embedding: emb.get(
                (cfg.max_position_embeddings, d),
                "position_embedding.weight",
            )?,
            encoder: Encoder::new(&shape, vb.pp("encoder"))?,
            final_layer_norm: layer_norm(d, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
            cfg: cfg.clone(),
            eos_token_id,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.position_embedding.dtype()
    }

    pub fn device(&self) -> &Device {
        self.position_embedding.device()
    }

    /// The pooled output (transformers' `pooler_output`, (b, hidden)) for right-padded
    /// `input_ids` (b, t) of any integer dtype.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        self.forward_ids(&ids)
    }

    /// As [`Self::forward`], from host ids; the rows may have different lengths (each is
    /// padded with its own last id, which the causal mask makes irrelevant).
    pub fn forward_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        if ids.is_empty() {
            candle_core::bail!("empty text batch");
        }
        let vocab = self.cfg.vocab_size;
        for (i, row) in ids.iter().enumerate() {
            if let Some(&bad) = row.iter().find(|&&v| v as usize >= vocab) {
                candle_core::bail!("text {i}: token id {bad} is outside the vocabulary of {vocab}");
            }
            if row.len() > self.cfg.max_position_embeddings {
                candle_core::bail!(
                    "text {i}: {} tokens, more than max_position_embeddings {}",
                    row.len(),
                    self.cfg.max_position_embeddings
                );
            }
        }
        let pooled = pooled_positions(ids, self.eos_token_id);
        // Nothing after the last pooled row can reach a pooled row through the causal mask.
        let t = pooled.iter().max().copied().unwrap_or(0) + 1;
        let b = ids.len();
        let mut flat = Vec::with_capacity(b * t);
        for row in ids {
            let fill = row.last().copied().unwrap_or(0);
            flat.extend((0..t).map(|j| row.get(j).copied().unwrap_or(fill)));
        }
        let dev = self.device();
        let ids = Tensor::from_vec(flat, (b, t), dev)?;
        let x = self
            .token_embedding
            .forward(&ids)?
            .broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        let dtype = x.dtype();
        let causal = Mask {
            tensor: causal_mask(t, dtype, dev)?,
            keys: KeyRange::Causal,
        };
        let rows: Vec<u32> = pooled
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * t + p) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, dev)?;
        let rows_mask = Mask {
            tensor: rows_mask(&pooled, t, dtype, dev)?,
            keys: KeyRange::UpTo(pooled.clone()),
        };
        let out = self
            .encoder
            .forward_pooled(&x, Some(&causal), &rows, Some(&rows_mask))?;
        self.final_layer_norm.forward(&out)
    }
}

/// (t, t): 0 where key ≤ query, −∞ above the diagonal.
fn causal_mask(t: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), dev)?.to_dtype(dtype)
}

/// (b, 1, 1, t): the causal mask row of each sequence's pooled position.
fn rows_mask(pooled: &[usize], t: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = pooled
        .iter()
        .flat_map(|&p| (0..t).map(move |j| if j > p { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (pooled.len(), 1, 1, t), dev)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_takes_first_eos_or_legacy_argmax() {
        let ids = vec![
            vec![49406, 320, 49407, 49407],
            vec![49406, 3306, 49407, 1002, 49407],
            vec![5, 9, 7],
        ];
        assert_eq!(pooled_positions(&ids, 49407), vec![2, 2, 0]);
        assert_eq!(pooled_positions(&ids, 2), vec![2, 2, 1]);
        // With a vocabulary whose end-of-text id is not the largest, the two rules differ; the
        // legacy rule is transformers' behaviour for eos_token_id == 2 whatever the ids.
        let custom = vec![vec![0, 40, 2, 1, 1]];
        assert_eq!(pooled_positions(&custom, 2), vec![1]);
        assert_eq!(pooled_positions(&custom, 1), vec![3]);
    }

    #[test]
    fn masks_are_causal() {
        let m = causal_mask(3, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], vec![0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert_eq!(m[2], vec![0.0, 0.0, 0.0]);
        let r = rows_mask(&[0, 2], 3, DType::F32, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap();
        let r = r.to_vec1::<f32>().unwrap();
        assert_eq!(&r[..3], &[0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert_eq!(&r[3..], &[0.0, 0.0, 0.0]);
    }
}

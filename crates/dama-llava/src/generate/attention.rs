//! Attention of one new token per sequence over its question's shared prefix and its own
//! generated suffix: the one attention function the cached decoding adds (the prefill runs
//! `dama_kernels::attention`, the training path's).
//!
//! Numerics as transformers' eager attention: `q·kᵀ` and `p·v` in the model dtype, the scaled
//! scores, the mask and the softmax in f32. Built from candle ops, so it runs on every device.
//! All of a question's beams meet its prefix in one matmul (their queries stacked as rows).

use candle_core::{D, DType, Result, Tensor};

use super::cache::PrefixKv;

/// `q` `(rows, 1, hq, d)` after RoPE, rows = questions × `beams`, question-major; `prefix`
/// `(questions, hkv, P, d)`; `suffix` `(rows, hkv, S, d)` keys and values (S ≥ 1: the new
/// token's own are in); `prefix_mask` `(questions, 1, 1, P)`, 0 or −∞ (left padding), `None`
/// when nothing is masked. Returns `(rows, 1, hq, d)`.
pub fn decode_attention(
    q: &Tensor,
    prefix: &PrefixKv,
    suffix: (&Tensor, &Tensor),
    prefix_mask: Option<&Tensor>,
    beams: usize,
    scale: f64,
) -> Result<Tensor> {
    let (rows, _, hq, d) = q.dims4()?;
    let (questions, hkv, p, _) = prefix.k.dims4()?;
    let s = suffix.0.dim(2)?;
    let g = hq / hkv;
    let dtype = q.dtype();
    // GQA: query head h reads key/value head h / g (transformers' repeat_kv)
    let q5 = q.reshape((questions, beams, hkv, g, d))?;
    let q_prefix =
        q5.permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((questions, hkv, beams * g, d))?;
    let q_suffix = q.reshape((rows, hkv, g, d))?;

    let f32_scores = |x: Tensor| x.to_dtype(DType::F32)? * scale;
    let mut s1 = f32_scores(q_prefix.matmul(&prefix.k.t()?)?)?;
    if let Some(mask) = prefix_mask {
        s1 = s1.broadcast_add(mask)?;
    }
    let s2 = q_suffix
        .matmul(&suffix.0.t()?)?
        .reshape((questions, beams, hkv, g, s))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((questions, hkv, beams * g, s))?;
    let s2 = f32_scores(s2)?;
    let probs =
        candle_nn::ops::softmax_last_dim(&Tensor::cat(&[&s1, &s2], D::Minus1)?)?.to_dtype(dtype)?;
    let p1 = probs.narrow(3, 0, p)?.contiguous()?;
    let p2 = probs.narrow(3, p, s)?;
    let o1 = p1
        .matmul(&prefix.v)?
        .reshape((questions, hkv, beams, g, d))?
        .permute((0, 2, 1, 3, 4))?;
    let o2 = p2
        .reshape((questions, hkv, beams, g, s))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((rows, hkv, g, s))?
        .matmul(suffix.1)?
        .reshape((questions, beams, hkv, g, d))?;
    (o1 + o2)?.contiguous()?.reshape((rows, 1, hq, d))
}

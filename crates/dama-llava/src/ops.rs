//! The language model's RoPE tables and the layout glue around `dama_kernels`' fused ops
//! (RoPE, attention, the answer-log-prob head), one small function each; RMSNorm and SwiGLU
//! are `dama_kernels::{rms_norm, swiglu}` as they are.
//!
//! candle 0.11.1's own fused `rms_norm`, `rope*`, `softmax_last_dim` and `sdpa` have no
//! backward: gradients through them vanish without an error. `dama_kernels`' ops have
//! hand-written backwards, on the CPU and on CUDA; their numerics are
//! transformers' eager LLaMA (which dtype each step rounds to), the oracle the fixtures check,
//! except attention, which keeps scores and probabilities in f32 as SDPA / flash-attention do.
//! `dama_kernels::composed` keeps the compositions of differentiable candle ops these
//! replaced.

use candle_core::{DType, Result, Tensor};
use dama_kernels::AttnMask;

/// RoPE's inverse frequencies `1 / θ^(2i/d)` (divided by the linear scaling factor),
/// computed in f32 like transformers' `_compute_default_rope_parameters`.
pub fn rope_inv_freq(head_dim: usize, theta: f64, linear_factor: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            (1.0f32 / (theta as f32).powf(exponent)) / linear_factor as f32
        })
        .collect()
}

/// cos and sin of every (position, frequency), each `(positions.len(), head_dim)` with the
/// half-width table repeated twice (transformers' `cat((freqs, freqs))` convention). Built in
/// f32 (f64 for f64 models) and cast to `dtype`, as transformers does.
pub fn rope_tables(
    positions: &[u32],
    inv_freq: &[f32],
    dtype: DType,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let n = positions.len();
    let mut cos = Vec::with_capacity(n * 2 * half);
    let mut sin = Vec::with_capacity(n * 2 * half);
    if dtype == DType::F64 {
        let mut c64 = Vec::with_capacity(n * 2 * half);
        let mut s64 = Vec::with_capacity(n * 2 * half);
        for &p in positions {
            for _ in 0..2 {
                for &f in inv_freq {
                    let a = f as f64 * p as f64;
                    c64.push(a.cos());
                    s64.push(a.sin());
                }
            }
        }
        let c = Tensor::from_vec(c64, (n, 2 * half), device)?;
        let s = Tensor::from_vec(s64, (n, 2 * half), device)?;
        return Ok((c, s));
    }
    for &p in positions {
        for _ in 0..2 {
            for &f in inv_freq {
                let a = f * p as f32;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    let c = Tensor::from_vec(cos, (n, 2 * half), device)?.to_dtype(dtype)?;
    let s = Tensor::from_vec(sin, (n, 2 * half), device)?.to_dtype(dtype)?;
    Ok((c, s))
}

/// Rotary position embedding in the rotate-half form (`x·cos + rotate_half(x)·sin`).
/// `x` is `(batch, heads, seq, head_dim)`; `cos`/`sin` are `(batch, 1, seq, head_dim)`, one
/// row per token, so that every sequence of a packed batch can carry its own positions.
/// The result is a `(batch, heads, seq, head_dim)` view of a `(batch, seq, heads, head_dim)`
/// buffer (the layout the fused attention reads without a copy).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    dama_kernels::rope(&x.transpose(1, 2)?, &cos.squeeze(1)?, &sin.squeeze(1)?)?.transpose(1, 2)
}

/// Scaled dot-product attention, flash-style (`dama_kernels::attention`): scores, softmax
/// and the value sum in f32, no `t×t` matrix kept for the backward. `q` is `(b, h, t, d)`,
/// `k`/`v` `(b, kv_heads, t, d)` (any strides), `mask` the allowed keys of each query
/// ([`AttnMask`], built once per batch). Queries that see no key (padding) output zeros.
/// Returns a `(b, h, t, d)` view of a contiguous `(b, t, h, d)` buffer.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    scale: f64,
) -> Result<Tensor> {
    let bthd = |x: &Tensor| x.transpose(1, 2);
    dama_kernels::attention(&bthd(q)?, &bthd(k)?, &bthd(v)?, mask, scale)?.transpose(1, 2)
}

/// The answer-log-prob head: the vocabulary projection of the scored positions only (logits
/// in the model dtype), their log-softmax in f32 (f64 for f64 models), the log-prob of each
/// target token, summed per sequence; chunked over the vocabulary so that the `(n, V)` logits
/// never exist at once (`dama_kernels::token_logprobs`). `hidden` `(n, d)` holds the
/// final-normed hidden state before each target, `targets` and `segments` `(n,)` u32 say which
/// token it predicts and whose sum it joins. Returns `(num_segments,)` sums.
pub fn answer_logprobs(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    segments: &Tensor,
    num_segments: usize,
) -> Result<Tensor> {
    let picked =
        dama_kernels::token_logprobs(hidden, lm_head, targets, dama_kernels::DEFAULT_VOCAB_CHUNK)?;
    Tensor::zeros(num_segments, picked.dtype(), picked.device())?.index_add(segments, &picked, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn rms_norm_matches_hand_computation() {
        let x = t(&[3.0, 4.0], &[1, 2]);
        let w = t(&[1.0, 2.0], &[2]);
        let y = dama_kernels::rms_norm(&x, &w, 0.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let r = (12.5f32).sqrt();
        assert!((y[0][0] - 3.0 / r).abs() < 1e-6 && (y[0][1] - 8.0 / r).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_and_position_zero_is_identity() {
        let inv = rope_inv_freq(4, 10000.0, 1.0);
        assert_eq!(inv[0], 1.0);
        assert!((inv[1] - 0.01).abs() < 1e-7);
        let (c, s) = rope_tables(&[0, 1], &inv, DType::F32, &Device::Cpu).unwrap();
        let x = t(&[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 4]);
        let y = rope(
            &x,
            &c.unsqueeze(0).unwrap().unsqueeze(0).unwrap(),
            &s.unsqueeze(0).unwrap().unsqueeze(0).unwrap(),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert_eq!(&y[..4], &[1.0, 2.0, 3.0, 4.0]);
        // position 1, frequency 1: (x0, x2) = (1, 3) rotated by 1 radian
        let (c1, s1) = (1f32.cos(), 1f32.sin());
        assert!((y[4] - (1.0 * c1 - 3.0 * s1)).abs() < 1e-6);
        assert!((y[6] - (3.0 * c1 + 1.0 * s1)).abs() < 1e-6);
    }

    #[test]
    fn masked_keys_get_exactly_zero_weight() {
        let q = t(&[1.0, 0.5, -1.0, 2.0], &[1, 1, 2, 2]);
        let v = t(&[10.0, 20.0, 30.0, 40.0], &[1, 1, 2, 2]);
        let mask = AttnMask::from_additive(&t(&[0.0, -1e30, 0.0, 0.0], &[1, 1, 2, 2])).unwrap();
        let out = attention(&q, &q, &v, &mask, 1.0)
            .unwrap()
            .flatten_all()
            .unwrap();
        let out = out.to_vec1::<f32>().unwrap();
        assert_eq!(&out[..2], &[10.0, 20.0]);
    }

    #[test]
    fn head_sums_log_probs_per_segment_and_backpropagates() {
        let h = Var::from_tensor(&t(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])).unwrap();
        let w = t(&[1.0, 0.0, 0.0, 1.0, -1.0, 2.0], &[3, 2]);
        let targets = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let segments = Tensor::new(&[0u32, 0, 1], &Device::Cpu).unwrap();
        let sums = answer_logprobs(h.as_tensor(), &w, &targets, &segments, 2).unwrap();
        let logits = [[1.0f32, 0.0, -1.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]];
        let lp = |row: &[f32; 3], k: usize| row[k] - row.iter().map(|x| x.exp()).sum::<f32>().ln();
        let want = [lp(&logits[0], 0) + lp(&logits[1], 1), lp(&logits[2], 2)];
        let got = sums.to_vec1::<f32>().unwrap();
        assert!((got[0] - want[0]).abs() < 1e-5 && (got[1] - want[1]).abs() < 1e-5);
        let g = sums.sum_all().unwrap().backward().unwrap();
        let gh = g.get(h.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(gh.iter().flatten().all(|x| x.is_finite()) && gh[0][0] != 0.0);
    }
}

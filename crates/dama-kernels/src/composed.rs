//! The compositions of differentiable candle ops that the fused ops replace: transformers'
//! eager LLaMA (and CLIP) step by step, each intermediate in the dtype transformers uses.
//! The tests check every fused op against these (values and gradients), and the benchmark
//! times them side by side. They are slow and keep every intermediate for the backward.

use candle_core::{D, DType, Result, Tensor};

/// The dtype reductions run in: f32 for half types (as transformers upcasts), else the input's.
pub fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        d => d,
    }
}

/// RMSNorm: normalise in f32, cast back, then scale.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(compute_dtype(dtype))?;
    let variance = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_mul(&(variance + eps)?.sqrt()?.recip()?)?;
    normed.to_dtype(dtype)?.broadcast_mul(weight)
}

/// RoPE, rotate-half form, on `(b, t, h, d)` with `cos`/`sin` `(b, t, d)` or `(t, d)`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    // a head axis to broadcast over: (b, t, 1, d), or (t, 1, d) for tables shared by rows
    let axis = cos.rank() - 1;
    let (cos, sin) = (cos.unsqueeze(axis)?, sin.unsqueeze(axis)?);
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// Eager attention on `(b, t, h, d)` inputs (GQA by repeating k/v heads) with an additive
/// `mask` `(b, 1, t, t)` in [`compute_dtype`]: scores in the model dtype, softmax in f32,
/// probabilities cast back. Returns `(b, t, h, d)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (q, k, v) = (q.transpose(1, 2)?, k.transpose(1, 2)?, v.transpose(1, 2)?);
    let n_rep = q.dim(1)? / k.dim(1)?;
    let rep = |x: Tensor| -> Result<Tensor> {
        if n_rep == 1 {
            return x.contiguous();
        }
        let (b, kv, t, d) = x.dims4()?;
        x.unsqueeze(2)?
            .broadcast_as((b, kv, n_rep, t, d))?
            .reshape((b, kv * n_rep, t, d))
    };
    let (k, v) = (rep(k)?, rep(v)?);
    let scores = (q.contiguous()?.matmul(&k.t()?)? * scale)?;
    let scores = scores
        .to_dtype(compute_dtype(q.dtype()))?
        .broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(q.dtype())?;
    probs.matmul(&v)?.transpose(1, 2)?.contiguous()
}

/// `silu(gate) · up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// Per-token log-probs of `targets` under `softmax(hidden · weightᵀ)`, materialising the full
/// `(n, V)` logits (cast to [`compute_dtype`] before the log-softmax).
pub fn token_logprobs(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = hidden.matmul(&weight.t()?)?;
    let logits = logits.to_dtype(compute_dtype(logits.dtype()))?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)
}

/// LayerNorm over the last dimension in [`compute_dtype`], cast back.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(compute_dtype(dtype))?;
    let mean = xf.mean_keepdim(D::Minus1)?;
    let centred = xf.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    let w = weight.to_dtype(normed.dtype())?;
    let b = bias.to_dtype(normed.dtype())?;
    normed.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(dtype)
}

/// CLIP's quick-GELU `x·σ(1.702·x)` in [`compute_dtype`], cast back.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    let xf = x.to_dtype(compute_dtype(x.dtype()))?;
    (&xf * candle_nn::ops::sigmoid(&(&xf * 1.702)?)?)?.to_dtype(x.dtype())
}

/// Embedding lookup as candle's `index_select` (its backward: `index_add` into zeros).
pub fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (_, d) = table.dims2()?;
    let mut dims = ids.dims().to_vec();
    dims.push(d);
    table.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
}

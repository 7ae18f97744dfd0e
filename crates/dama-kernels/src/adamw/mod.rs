//! A fused AdamW update, exactly fp32 `torch.optim.AdamW` (decoupled weight decay, bias
//! corrections folded into the step size and the denominator), for a variable of any dtype.
//!
//! Each variable owns one contiguous f32 buffer ([`AdamWState`]): `[master | exp_avg |
//! exp_avg_sq]`, the master copy absent for an f32 variable (the variable is its own master).
//! [`AdamWState::update`] reads the gradient (f32 or bf16; f16 and f64 too on the CPU),
//! updates the buffer in place and writes the variable in its dtype (the master rounded), in
//! one pass: one CUDA kernel (grid-stride, `kernels/adamw.cu`) or one rayon loop per variable,
//! no allocation. candle's own AdamW runs ~15 element-wise kernels per variable.
//!
//! Per element, all in f32, in this order (the order of the composition of candle ops it
//! replaces, [`reference_update`], so both give the same bits):
//!
//! ```text
//! p = p·(1 − lr·wd)                       (only when wd ≠ 0)
//! m = β₁·m + (1 − β₁)·g
//! v = β₂·v + (1 − β₂)·g²
//! p = p − (m / (√v · (1/√(1 − β₂ᵗ)) + ε)) · (lr / (1 − β₁ᵗ))
//! ```
//!
//! every constant rounded from f64 to f32 once, as candle's `affine` does.
//!
//! [`Master::StochasticBf16`] (for bf16 variables) keeps no master copy: the buffer is
//! `[exp_avg | exp_avg_sq]`, the bf16 variable is the master, read as f32, updated as above
//! and written back with stochastic rounding ([`stochastic_bf16`]): a uniform 16-bit value is
//! added to the f32 bits, which are then truncated to bf16, so that the result rounds up with
//! probability equal to the fraction of the ulp it lies above the lower bf16 neighbour
//! (unbiased). The random bits are a counter-based hash of (seed, step, element index)
//! ([`sr_key`], [`sr_bits`]): the same on the CPU and on CUDA, deterministic, and resumable
//! from the step count alone. Saves 4 bytes per parameter (of 14) at the cost of noise of one
//! bf16 ulp in the weights.
//!
//! [`StateFormat::Dynamic8`] keeps the moments in 8 bits, block-wise, as bitsandbytes' 8-bit
//! optimizers do ([`crate::quant8`]): a u8 code per moment element and one f32 absmax per
//! block of 2048, updated in the same pass (per block: dequantise, the update above, new
//! absmax, requantise). With either master layout; 2 bytes of moments per parameter instead
//! of 8.

mod cpu;
pub(crate) mod state;

use candle_core::{DType, Result, Tensor};
use half::bf16;

pub use state::{AdamWState, Moment};

/// Where the master weights of a non-f32 variable live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Master {
    /// An f32 copy in the state buffer (`[master | exp_avg | exp_avg_sq]`), the variable the
    /// master rounded to nearest: exactly fp32 AdamW.
    #[default]
    F32,
    /// For bf16 variables: no copy, the variable is the master, each update rounded to bf16
    /// stochastically with the random bits of `(seed, step, index)`. Other dtypes keep an f32
    /// master (an f32 variable needs none either way).
    StochasticBf16 { seed: u64 },
}

/// How the moments are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateFormat {
    /// f32 moments: exactly torch's fp32 AdamW.
    #[default]
    F32,
    /// bitsandbytes' block-wise dynamic 8-bit moments ([`crate::quant8`]): 2 bytes per
    /// parameter instead of 8, for variables of at least [`crate::quant8::MIN_8BIT_SIZE`]
    /// values (smaller ones keep f32 moments). Each update dequantises a block's moments,
    /// updates them and the weights in f32 (the weights see the new moments before
    /// rounding), and requantises them with the block's new absmax.
    Dynamic8,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser (a bijection of u64 with full avalanche).
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of step `t` (1-based) of the stream `seed`: the per-element hash input.
pub fn sr_key(seed: u64, t: u64) -> u64 {
    mix64(seed ^ mix64(t.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// 16 uniform random bits for element `i` under `key` (`kernels/adamw.cu` computes the same).
#[inline(always)]
pub fn sr_bits(key: u64, i: u64) -> u32 {
    (mix64(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN))) >> 48) as u32
}

/// `x` rounded to bf16 stochastically with the 16 random bits `r`: `r` added to the f32 bits,
/// the low 16 bits then dropped (rounds up, in magnitude, with probability = the fraction of
/// the ulp above the lower neighbour). NaN stays NaN (round to nearest).
#[inline(always)]
pub fn stochastic_bf16(x: f32, r: u32) -> bf16 {
    if x.is_nan() {
        return bf16::from_f32(x);
    }
    bf16::from_bits((x.to_bits().wrapping_add(r & 0xFFFF) >> 16) as u16)
}

/// The f32 constants of one AdamW step (the same for every variable).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// `1 − lr·wd`; unused when `weight_decay` is false.
    pub decay: f32,
    pub weight_decay: bool,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 / √(1 − β₂ᵗ)`.
    pub inv_bias_correction2_sqrt: f32,
    pub eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// The step number `t` (1-based), for stochastic rounding's random bits.
    pub t: u64,
    /// Multiplies every gradient element (in f32) before the update: gradient clipping's
    /// coefficient, applied in the update's pass instead of a pass of its own. `None` (no
    /// multiplication) by default.
    pub grad_scale: Option<f32>,
}

impl AdamWStep {
    /// The constants of step `t` (1-based) with learning rate `lr`, computed in f64 and
    /// rounded to f32 as candle's scalar ops round them.
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, t: u64) -> Self {
        let ti = t.min(i32::MAX as u64) as i32;
        let step_size = lr / (1.0 - beta1.powi(ti));
        let bias_correction2_sqrt = (1.0 - beta2.powi(ti)).sqrt();
        Self {
            decay: (1.0 - lr * weight_decay) as f32,
            weight_decay: weight_decay != 0.0,
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            inv_bias_correction2_sqrt: (1.0 / bias_correction2_sqrt) as f32,
            eps: eps as f32,
            step_size: step_size as f32,
            t,
            grad_scale: None,
        }
    }

    /// The same step with every gradient multiplied by `scale` (rounded to f32) first: equal,
    /// bit for bit, to updating with the f32 gradient `g * scale` (candle's `affine`).
    pub fn with_grad_scale(self, scale: f64) -> Self {
        Self {
            grad_scale: Some(scale as f32),
            ..self
        }
    }

    /// One element: returns the new weight, updates the moments.
    #[inline(always)]
    fn apply(&self, p: f32, m: &mut f32, v: &mut f32, g: f32) -> f32 {
        let g = match self.grad_scale {
            Some(s) => g * s,
            None => g,
        };
        let p = if self.weight_decay { p * self.decay } else { p };
        *m = *m * self.beta1 + g * self.one_minus_beta1;
        *v = *v * self.beta2 + (g * g) * self.one_minus_beta2;
        let denom = v.sqrt() * self.inv_bias_correction2_sqrt + self.eps;
        p - (*m / denom) * self.step_size
    }
}

/// The composition of candle ops the fused update replaces (what `dama-native`'s optimizer
/// ran before): returns the new master (f32) and moments, for tests. `master` is the variable
/// itself for an f32 variable; the gradient is used in its own dtype.
#[allow(clippy::too_many_arguments)]
pub fn reference_update(
    master: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    grad: &Tensor,
    lr: f64,
    (beta1, beta2, eps, weight_decay): (f64, f64, f64, f64),
    t: u64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let t = t as i32;
    let step_size = lr / (1.0 - beta1.powi(t));
    let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
    let master = if weight_decay != 0.0 {
        master.affine(1.0 - lr * weight_decay, 0.0)?
    } else {
        master.clone()
    };
    let exp_avg = ((exp_avg * beta1)? + (grad * (1.0 - beta1))?)?;
    let exp_avg_sq = ((exp_avg_sq * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
    let denom = ((exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + eps)?;
    let master = (master - (exp_avg.div(&denom)? * step_size)?)?;
    Ok((master, exp_avg, exp_avg_sq))
}

/// The global L2 norm of `grads` and, when it exceeds `max_norm`, the coefficient
/// `torch.nn.utils.clip_grad_norm_` scales them by (`max_norm / (norm + 1e-6)`), for
/// [`AdamWStep::with_grad_scale`]: the update applies it, bit for bit what scaling the f32
/// gradients first does, without a pass of its own. Squares are taken in f32 and summed along
/// each tensor's last dimension first (on CUDA one block per row: candle's whole-tensor sum
/// runs on a single block), then per tensor and over the tensors in f64, on the device, with
/// one read-back.
pub fn clip_grad_norm(grads: &[&Tensor], max_norm: f64) -> Result<(f64, Option<f64>)> {
    let squares = grads
        .iter()
        .map(|g| {
            let sq = g.to_dtype(DType::F32)?.sqr()?;
            let rows = if sq.rank() >= 2 {
                sq.sum(candle_core::D::Minus1)?
            } else {
                sq
            };
            rows.sum_all()?.to_dtype(DType::F64)
        })
        .collect::<Result<Vec<_>>>()?;
    let sum_sq = if squares.is_empty() {
        0.0
    } else {
        Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f64>()?
    };
    let norm = sum_sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    Ok((norm, (coef < 1.0).then_some(coef)))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests8;

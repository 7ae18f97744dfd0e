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
//! bf16 ulp in the weights; the moments stay f32.

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor, Var, bail};
use half::{bf16, f16};
use rayon::prelude::*;

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

/// One variable's AdamW state: a flat f32 buffer `[master | exp_avg | exp_avg_sq]` (no master
/// for an f32 variable), on the variable's device.
#[derive(Debug, Clone)]
pub struct AdamWState {
    buf: Tensor,
    shape: candle_core::Shape,
    has_master: bool,
    /// The stochastic-rounding seed, for a bf16 variable under [`Master::StochasticBf16`].
    sr_seed: Option<u64>,
}

impl AdamWState {
    /// Fresh state for `var`: zero moments, the master its value in f32 (for a non-f32
    /// variable).
    pub fn new(var: &Tensor) -> Result<Self> {
        Self::with_master(var, Master::F32)
    }

    /// Fresh state for `var` with the master layout `master`: an f32 master copy in the
    /// buffer for a non-f32 variable, except a bf16 one under [`Master::StochasticBf16`].
    pub fn with_master(var: &Tensor, master: Master) -> Result<Self> {
        let n = var.elem_count();
        let sr_seed = match master {
            Master::StochasticBf16 { seed } if var.dtype() == DType::BF16 => Some(seed),
            _ => None,
        };
        let has_master = var.dtype() != DType::F32 && sr_seed.is_none();
        let zeros = Tensor::zeros(2 * n, DType::F32, var.device())?;
        let buf = if has_master {
            let master = var.flatten_all()?.to_dtype(DType::F32)?;
            Tensor::cat(&[&master, &zeros], 0)?
        } else {
            zeros
        };
        Ok(Self {
            buf,
            shape: var.shape().clone(),
            has_master,
            sr_seed,
        })
    }

    /// The stochastic-rounding seed (`Some` for a bf16 variable under
    /// [`Master::StochasticBf16`]: no master copy, the variable rounded stochastically).
    pub fn sr_seed(&self) -> Option<u64> {
        self.sr_seed
    }

    /// Whether the buffer holds a master copy (the variable is not f32).
    pub fn has_master(&self) -> bool {
        self.has_master
    }

    /// The whole packed buffer, `(k·n,)` f32, k = 3 with a master, else 2.
    pub fn buffer(&self) -> &Tensor {
        &self.buf
    }

    fn part(&self, i: usize) -> Result<Tensor> {
        let n = self.shape.elem_count();
        self.buf.narrow(0, i * n, n)?.reshape(&self.shape)
    }

    /// A view (no copy) of the master weights, shaped as the variable; `None` for f32. Views
    /// share the live buffer: the next update changes them.
    pub fn master(&self) -> Result<Option<Tensor>> {
        self.has_master.then(|| self.part(0)).transpose()
    }

    /// A view of the first moment, shaped as the variable.
    pub fn exp_avg(&self) -> Result<Tensor> {
        self.part(self.has_master as usize)
    }

    /// A view of the second moment, shaped as the variable.
    pub fn exp_avg_sq(&self) -> Result<Tensor> {
        self.part(self.has_master as usize + 1)
    }

    fn set_part(&self, i: usize, src: &Tensor, what: &str) -> Result<()> {
        if src.dims() != self.shape.dims() {
            bail!(
                "adamw: {what} has shape {:?}, the variable {:?}",
                src.dims(),
                self.shape.dims()
            );
        }
        let src = src
            .to_dtype(DType::F32)?
            .to_device(self.buf.device())?
            .flatten_all()?
            .contiguous()?;
        let at = i * self.shape.elem_count();
        // slice_set refuses a source sharing the buffer (a view of this state): copy it first
        self.buf
            .slice_set(&src, 0, at)
            .or_else(|_| self.buf.slice_set(&src.copy()?, 0, at))
    }

    /// Overwrites the master (copied into the buffer). An error for an f32 variable.
    pub fn set_master(&self, t: &Tensor) -> Result<()> {
        if !self.has_master {
            bail!("adamw: an f32 variable has no master copy");
        }
        self.set_part(0, t, "master")
    }

    /// Overwrites the first moment (copied into the buffer).
    pub fn set_exp_avg(&self, t: &Tensor) -> Result<()> {
        self.set_part(self.has_master as usize, t, "exp_avg")
    }

    /// Overwrites the second moment (copied into the buffer).
    pub fn set_exp_avg_sq(&self, t: &Tensor) -> Result<()> {
        self.set_part(self.has_master as usize + 1, t, "exp_avg_sq")
    }

    /// One fused update of `var` with gradient `grad` (f32 or bf16 on CUDA; f32, bf16, f16 or
    /// f64 on the CPU; contiguous or not): the buffer in place, then the variable written in
    /// its dtype, in the same pass.
    pub fn update(&self, var: &Var, grad: &Tensor, step: &AdamWStep) -> Result<()> {
        let var = var.as_tensor();
        if var.dims() != self.shape.dims() || grad.dims() != self.shape.dims() {
            bail!(
                "adamw: variable {:?} / gradient {:?}, the state {:?}",
                var.dims(),
                grad.dims(),
                self.shape.dims()
            );
        }
        let want_master = var.dtype() != DType::F32 && self.sr_seed.is_none();
        if self.has_master != want_master || (self.sr_seed.is_some() && var.dtype() != DType::BF16)
        {
            bail!("adamw: state made for another dtype than {:?}", var.dtype());
        }
        if !var.is_contiguous() {
            bail!("adamw: the variable must be contiguous");
        }
        if self.shape.elem_count() == 0 {
            return Ok(());
        }
        let grad = grad.contiguous()?;
        self.buf.inplace_op2(
            &grad,
            &StateOp {
                var,
                step,
                has_master: self.has_master,
                sr_key: self.sr_seed.map(|seed| sr_key(seed, step.t)),
            },
        )
    }
}

/// The in-place op on the state buffer (reading the gradient); it runs [`VarOp`] on the
/// variable from inside, so that both buffers are writable at once (two tensors, two locks).
struct StateOp<'a> {
    var: &'a Tensor,
    step: &'a AdamWStep,
    has_master: bool,
    sr_key: Option<u64>,
}

/// The in-place op on the variable, holding the state buffer and the gradient [`StateOp`]
/// has locked.
struct VarOp<'a> {
    bufs: RefCell<Option<Bufs<'a>>>,
    step: &'a AdamWStep,
    has_master: bool,
    sr_key: Option<u64>,
}

enum Bufs<'a> {
    Cpu {
        state: &'a mut CpuStorage,
        sl: &'a Layout,
        grad: &'a CpuStorage,
        gl: &'a Layout,
    },
    #[cfg(feature = "cuda")]
    Cuda {
        state: &'a mut candle_core::CudaStorage,
        sl: &'a Layout,
        grad: &'a candle_core::CudaStorage,
        gl: &'a Layout,
    },
}

impl InplaceOp2 for StateOp<'_> {
    fn name(&self) -> &'static str {
        "dama-adamw"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, sl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        self.var.inplace_op1(&VarOp {
            bufs: RefCell::new(Some(Bufs::Cpu {
                state: s,
                sl,
                grad: g,
                gl,
            })),
            step: self.step,
            has_master: self.has_master,
            sr_key: self.sr_key,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &mut candle_core::CudaStorage,
        sl: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<()> {
        self.var.inplace_op1(&VarOp {
            bufs: RefCell::new(Some(Bufs::Cuda {
                state: s,
                sl,
                grad: g,
                gl,
            })),
            step: self.step,
            has_master: self.has_master,
            sr_key: self.sr_key,
        })
    }
}

impl InplaceOp1 for VarOp<'_> {
    fn name(&self) -> &'static str {
        "dama-adamw"
    }

    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout) -> Result<()> {
        let Some(Bufs::Cpu {
            state,
            sl,
            grad,
            gl,
        }) = self.bufs.borrow_mut().take()
        else {
            bail!("adamw: the state and the variable are on different devices")
        };
        cpu_update(
            state,
            sl,
            grad,
            gl,
            p,
            pl,
            self.step,
            self.has_master,
            self.sr_key,
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, p: &mut candle_core::CudaStorage, pl: &Layout) -> Result<()> {
        let Some(Bufs::Cuda {
            state,
            sl,
            grad,
            gl,
        }) = self.bufs.borrow_mut().take()
        else {
            bail!("adamw: the state and the variable are on different devices")
        };
        crate::cuda::adamw::update(
            state,
            sl,
            grad,
            gl,
            p,
            pl,
            self.step,
            self.has_master,
            self.sr_key,
        )
    }
}

/// A CPU element type: read as f32, written from f32 (round to nearest even).
trait Io: Copy + Send + Sync {
    fn get(self) -> f32;
    fn put(x: f32) -> Self;
}

impl Io for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        x
    }
}

impl Io for f64 {
    #[inline(always)]
    fn get(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        x as f64
    }
}

impl Io for bf16 {
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Io for f16 {
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

fn contiguous<'a, T>(s: &'a [T], l: &Layout, n: usize, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) if b - a == n => Ok(&s[a..b]),
        _ => bail!("adamw: {what} must be contiguous"),
    }
}

#[allow(clippy::too_many_arguments)]
fn cpu_update(
    state: &mut CpuStorage,
    sl: &Layout,
    grad: &CpuStorage,
    gl: &Layout,
    p: &mut CpuStorage,
    pl: &Layout,
    step: &AdamWStep,
    has_master: bool,
    sr_key: Option<u64>,
) -> Result<()> {
    let n = pl.shape().elem_count();
    let k = if has_master { 3 } else { 2 };
    let CpuStorage::F32(state) = state else {
        bail!("adamw: the state buffer is f32")
    };
    let Some((a, b)) = sl.contiguous_offsets().filter(|(a, b)| b - a == k * n) else {
        bail!("adamw: the state buffer must be contiguous, {k}·n elements")
    };
    let state = &mut state[a..b];
    let Some((pa, pb)) = pl.contiguous_offsets() else {
        bail!("adamw: the variable must be contiguous")
    };
    macro_rules! with_grad {
        ($p:expr) => {
            match grad {
                CpuStorage::F32(g) => run(
                    $p,
                    contiguous(g, gl, n, "gradient")?,
                    state,
                    step,
                    has_master,
                ),
                CpuStorage::BF16(g) => run(
                    $p,
                    contiguous(g, gl, n, "gradient")?,
                    state,
                    step,
                    has_master,
                ),
                CpuStorage::F16(g) => run(
                    $p,
                    contiguous(g, gl, n, "gradient")?,
                    state,
                    step,
                    has_master,
                ),
                CpuStorage::F64(g) => run(
                    $p,
                    contiguous(g, gl, n, "gradient")?,
                    state,
                    step,
                    has_master,
                ),
                other => bail!(
                    "adamw: gradients of dtype {:?} are not supported",
                    other.dtype()
                ),
            }
        };
    }
    if let Some(key) = sr_key {
        let CpuStorage::BF16(p) = p else {
            bail!("adamw: stochastic rounding needs a bf16 variable")
        };
        let p = &mut p[pa..pb];
        match grad {
            CpuStorage::F32(g) => run_sr(p, contiguous(g, gl, n, "gradient")?, state, step, key),
            CpuStorage::BF16(g) => run_sr(p, contiguous(g, gl, n, "gradient")?, state, step, key),
            CpuStorage::F16(g) => run_sr(p, contiguous(g, gl, n, "gradient")?, state, step, key),
            CpuStorage::F64(g) => run_sr(p, contiguous(g, gl, n, "gradient")?, state, step, key),
            other => bail!(
                "adamw: gradients of dtype {:?} are not supported",
                other.dtype()
            ),
        }
        return Ok(());
    }
    match p {
        CpuStorage::F32(p) => with_grad!(&mut p[pa..pb]),
        CpuStorage::BF16(p) => with_grad!(&mut p[pa..pb]),
        CpuStorage::F16(p) => with_grad!(&mut p[pa..pb]),
        CpuStorage::F64(p) => with_grad!(&mut p[pa..pb]),
        other => bail!(
            "adamw: variables of dtype {:?} are not supported",
            other.dtype()
        ),
    }
    Ok(())
}

fn run<P: Io, G: Io>(p: &mut [P], g: &[G], state: &mut [f32], s: &AdamWStep, has_master: bool) {
    let n = p.len();
    if has_master {
        let (master, rest) = state.split_at_mut(n);
        let (m, v) = rest.split_at_mut(n);
        master
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(p.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((((w, m), v), p), g)| {
                for i in 0..w.len() {
                    let x = s.apply(w[i], &mut m[i], &mut v[i], g[i].get());
                    w[i] = x;
                    p[i] = P::put(x);
                }
            });
    } else {
        let (m, v) = state.split_at_mut(n);
        m.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(p.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((m, v), p), g)| {
                for i in 0..m.len() {
                    p[i] = P::put(s.apply(p[i].get(), &mut m[i], &mut v[i], g[i].get()));
                }
            });
    }
}

/// The update of a bf16 variable that is its own master: `[exp_avg | exp_avg_sq]`, the result
/// rounded stochastically with the bits of (`key`, global element index).
fn run_sr<G: Io>(p: &mut [bf16], g: &[G], state: &mut [f32], s: &AdamWStep, key: u64) {
    let n = p.len();
    let (m, v) = state.split_at_mut(n);
    m.par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .zip(p.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (((m, v), p), g))| {
            let base = (c * CHUNK) as u64;
            for i in 0..m.len() {
                let x = s.apply(p[i].to_f32(), &mut m[i], &mut v[i], g[i].get());
                p[i] = stochastic_bf16(x, sr_bits(key, base + i as u64));
            }
        });
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
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Several steps of the fused update against the composed candle ops, bit for bit; with
    /// `clip`, the fused update scales the gradient itself and the composition is fed the
    /// f32 gradient times `clip` (what clipping did before it moved into the update).
    fn fused_equals_composed(var_dtype: DType, grad_dtype: DType, wd: f64) {
        fused_equals_composed_clipped(var_dtype, grad_dtype, wd, None)
    }

    fn fused_equals_composed_clipped(
        var_dtype: DType,
        grad_dtype: DType,
        wd: f64,
        clip: Option<f64>,
    ) {
        let dev = Device::Cpu;
        // more than one rayon chunk, not a multiple of it
        let shape = (3, CHUNK / 2 + 17);
        let init = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let var = Var::from_tensor(&init.to_dtype(var_dtype).unwrap()).unwrap();
        let state = AdamWState::new(var.as_tensor()).unwrap();
        assert_eq!(state.has_master(), var_dtype != DType::F32);
        // a copy: the update writes the variable in place
        let mut master = var
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .copy()
            .unwrap();
        let mut m = Tensor::zeros(shape, DType::F32, &dev).unwrap();
        let mut v = m.clone();
        let hp = (0.9, 0.999, 1e-8, wd);
        for t in 1..=5u64 {
            let lr = 1e-3 * t as f64;
            let g = (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * (0.1 * t as f64))
                .unwrap()
                .to_dtype(grad_dtype)
                .unwrap();
            let mut step = AdamWStep::new(lr, hp.0, hp.1, hp.2, hp.3, t);
            let mut g32 = g.to_dtype(DType::F32).unwrap();
            if let Some(c) = clip {
                step = step.with_grad_scale(c);
                g32 = (g32 * c).unwrap();
            }
            state.update(&var, &g, &step).unwrap();
            (master, m, v) = reference_update(&master, &m, &v, &g32, lr, hp, t).unwrap();
            let what = format!("{var_dtype:?}/{grad_dtype:?} wd {wd} clip {clip:?} step {t}");
            assert_eq!(max_diff(&state.exp_avg().unwrap(), &m), 0.0, "m {what}");
            assert_eq!(max_diff(&state.exp_avg_sq().unwrap(), &v), 0.0, "v {what}");
            let got = state
                .master()
                .unwrap()
                .unwrap_or_else(|| var.as_tensor().clone());
            assert_eq!(max_diff(&got, &master), 0.0, "master {what}");
            let rounded = master.to_dtype(var_dtype).unwrap();
            assert_eq!(max_diff(var.as_tensor(), &rounded), 0.0, "var {what}");
        }
    }

    #[test]
    fn f32_variables() {
        fused_equals_composed(DType::F32, DType::F32, 0.0);
        fused_equals_composed(DType::F32, DType::F32, 0.1);
        fused_equals_composed(DType::F32, DType::BF16, 0.1);
    }

    #[test]
    fn bf16_variables() {
        fused_equals_composed(DType::BF16, DType::F32, 0.0);
        fused_equals_composed(DType::BF16, DType::F32, 0.1);
        fused_equals_composed(DType::BF16, DType::BF16, 0.0);
    }

    #[test]
    fn a_gradient_scale_equals_scaling_the_f32_gradient_first() {
        fused_equals_composed_clipped(DType::F32, DType::F32, 0.0, Some(0.37));
        fused_equals_composed_clipped(DType::BF16, DType::BF16, 0.1, Some(0.0123));
        fused_equals_composed_clipped(DType::BF16, DType::F32, 0.0, Some(1.0 / 3.0));
    }

    #[test]
    fn f16_and_f64_variables() {
        fused_equals_composed(DType::F16, DType::F32, 0.1);
        fused_equals_composed(DType::F64, DType::F32, 0.1);
    }

    #[test]
    fn state_views_and_setters() {
        let dev = Device::Cpu;
        let init = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap();
        let var = Var::from_tensor(&init.to_dtype(DType::BF16).unwrap()).unwrap();
        let s = AdamWState::new(var.as_tensor()).unwrap();
        assert_eq!(s.buffer().dims(), &[12]);
        let x = Tensor::new(&[[5f32, 6.0], [7.0, 8.0]], &dev).unwrap();
        s.set_exp_avg_sq(&x).unwrap();
        assert_eq!(
            s.exp_avg_sq().unwrap().to_vec2::<f32>().unwrap(),
            x.to_vec2::<f32>().unwrap()
        );
        assert_eq!(
            s.master().unwrap().unwrap().to_vec2::<f32>().unwrap(),
            [[1.0, 2.0], [3.0, 4.0]]
        );
        // a state's own view copied onto itself
        s.set_exp_avg(&s.exp_avg_sq().unwrap()).unwrap();
        assert_eq!(max_diff(&s.exp_avg().unwrap(), &x), 0.0);
        assert!(
            s.set_master(&Tensor::zeros(3, DType::F32, &dev).unwrap())
                .is_err()
        );
        // an empty variable: nothing to do
        let empty = Var::zeros(0, DType::F32, &dev).unwrap();
        let se = AdamWState::new(empty.as_tensor()).unwrap();
        let step = AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.0, 1);
        se.update(&empty, &Tensor::zeros(0, DType::F32, &dev).unwrap(), &step)
            .unwrap();
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_deterministic() {
        // between the bf16 neighbours 1.0 and 1.0078125, and a negative one
        for x in [
            1.0f32 + 0.3 * 0.007_812_5,
            -3.0 - 0.9 * 0.015_625,
            1e-30 * 1.7,
        ] {
            let lo = bf16::from_f32(x);
            let n = 200_000u64;
            let mut sum = 0f64;
            let mut ups = 0u64;
            for i in 0..n {
                let r = stochastic_bf16(x, sr_bits(sr_key(7, 3), i));
                // always one of the two neighbours
                let (a, b) = (
                    bf16::from_bits((x.to_bits() >> 16) as u16),
                    bf16::from_bits(((x.to_bits() >> 16) + 1) as u16),
                );
                assert!(r == a || r == b, "{x}: {r} not in {{{a}, {b}}}");
                ups += (r == b) as u64;
                sum += r.to_f64();
            }
            let mean = sum / n as f64;
            let ulp = (bf16::from_bits(lo.to_bits() + 1).to_f64() - lo.to_f64()).abs();
            // the standard error of the mean is at most ulp / (2·√n) ≈ 0.0011 ulp
            assert!(
                (mean - x as f64).abs() < 0.006 * ulp,
                "{x}: mean {mean}, ulp {ulp}, {ups} up"
            );
        }
        // exact bf16 values never move; NaN stays NaN
        for i in 0..1000 {
            assert_eq!(stochastic_bf16(1.5, sr_bits(1, i)).to_f32(), 1.5);
            assert_eq!(stochastic_bf16(-0.0, sr_bits(1, i)).to_bits(), 0x8000);
        }
        assert!(stochastic_bf16(f32::NAN, 0xFFFF).is_nan());
        // deterministic, and different per seed, step and index
        let bits = |seed, t| {
            (0..64)
                .map(|i| sr_bits(sr_key(seed, t), i))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(5, 9), bits(5, 9));
        assert_ne!(bits(5, 9), bits(6, 9));
        assert_ne!(bits(5, 9), bits(5, 10));
        let b = bits(5, 9);
        assert!(b.iter().any(|&x| x != b[0]));
    }

    /// The stochastic-bf16 layout: no master, the update of each element is the f32 one from
    /// the bf16 value, rounded with the bits of (seed, t, i); deterministic across runs.
    #[test]
    fn stochastic_bf16_master_update() {
        let dev = Device::Cpu;
        let shape = (2, CHUNK + 5);
        let init = Tensor::randn(0f32, 1.0, shape, &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let grads: Vec<Tensor> = (1..=3)
            .map(|t| (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * (0.1 * t as f64)).unwrap())
            .collect();
        let run = |seed: u64| {
            let var = Var::from_tensor(&init).unwrap();
            let state =
                AdamWState::with_master(var.as_tensor(), Master::StochasticBf16 { seed }).unwrap();
            assert!(!state.has_master());
            assert_eq!(state.buffer().elem_count(), 2 * init.elem_count());
            let mut p: Vec<f32> = init
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut m = vec![0f32; p.len()];
            let mut v = vec![0f32; p.len()];
            for (t, g) in grads.iter().enumerate() {
                let t = t as u64 + 1;
                let step = AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.01, t);
                state.update(&var, g, &step).unwrap();
                let gv: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
                let key = sr_key(seed, t);
                for i in 0..p.len() {
                    let x = step.apply(p[i], &mut m[i], &mut v[i], gv[i]);
                    p[i] = stochastic_bf16(x, sr_bits(key, i as u64)).to_f32();
                }
            }
            let got: Vec<f32> = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, p);
            let got_m: Vec<f32> = state
                .exp_avg()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got_m, m);
            got
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
        // an f32 variable ignores the option; an f16 one keeps its f32 master
        let v32 = Var::zeros(4, DType::F32, &dev).unwrap();
        let s =
            AdamWState::with_master(v32.as_tensor(), Master::StochasticBf16 { seed: 1 }).unwrap();
        assert!(!s.has_master() && s.sr_seed().is_none());
        let v16 = Var::zeros(4, DType::F16, &dev).unwrap();
        let s =
            AdamWState::with_master(v16.as_tensor(), Master::StochasticBf16 { seed: 1 }).unwrap();
        assert!(s.has_master() && s.sr_seed().is_none());
    }
}

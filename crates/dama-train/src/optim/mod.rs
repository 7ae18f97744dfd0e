//! AdamW whose update equals fp32 `torch.optim.AdamW`, for variables of any dtype, with
//! gradient accumulation and global-norm clipping as the HF Trainer does them.
//!
//! candle's own AdamW keeps its moments in the variable's dtype, has no fp32 master copy, no
//! clipping and no saved state: with bf16 weights and lr = 5e-7 most updates would round away.
//! Here every variable gets fp32 master weights and fp32 moments; the variable itself is only
//! ever the master rounded to its dtype.
//!
//! The update is `dama_kernels::adamw`'s fused one: per variable one f32 buffer
//! `[master | exp_avg | exp_avg_sq]` (no master for an f32 variable) updated in place and the
//! variable written in its dtype, in one pass (one CUDA kernel, or one rayon loop), with the
//! same f32 operations in the same order as the composition of candle ops it replaced.
//!
//! [`AdamWConfig::master`] = [`Master::StochasticBf16`] is the memory-lean layout: no master
//! copy for bf16 variables (the variable is the master, each update rounded to bf16
//! stochastically), 8 bytes of state per parameter instead of 12. Its random bits are a hash of
//! (seed, step, element index), the seed per variable derived from the configured one and the
//! parameter's name: a checkpoint (weights, moments, step count) resumes it bit for bit.
//!
//! [`AdamWConfig::state`] = [`StateFormat::Dynamic8`] keeps the moments in 8 bits, block-wise
//! (bitsandbytes' 8-bit AdamW; `dama_kernels::quant8`): 2 bytes of moments per parameter
//! instead of 8, for tensors of at least 4096 values other than the vocabulary matrices
//! ([`keeps_f32_moments`]). A checkpoint holds the codes and block
//! absmaxes themselves (`{name}.exp_avg.codes`, `{name}.exp_avg.absmax`, …), so a resumed run
//! continues from the very bits it stopped at.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use dama_kernels::adamw::{AdamWState, AdamWStep, Moment};
pub use dama_kernels::adamw::{Master, StateFormat};

/// AdamW's hyper-parameters other than the learning rate (which the schedule sets per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay; the paper uses 0.
    pub weight_decay: f64,
    /// Master weights of non-f32 variables: an fp32 copy (the default, exactly torch's fp32
    /// AdamW) or, for bf16 variables, none with stochastic rounding (the seed given here is
    /// mixed with each parameter's name).
    pub master: Master,
    /// The moments: f32 (the default) or block-wise 8-bit.
    pub state: StateFormat,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            master: Master::F32,
            state: StateFormat::F32,
        }
    }
}

/// Whether a parameter keeps f32 moments under [`StateFormat::Dynamic8`]: the vocabulary
/// matrices (`embed_tokens`, `lm_head`). Why: a block of 2048 values shares one absmax, and in
/// these matrices a block can span the rows of many tokens whose gradients differ by decades
/// (a token predicted often next to one the model stopped predicting). There the second
/// moment of the quiet rows rounds to 0 while their first moment survives, and the update
/// `m / (√v + ε)` jumps by ~lr·m/ε. Measured on the tiny test model (width 64, 32 rows per
/// block): with the head in 8 bits, 2094 of its 65536 weights drifted by more than 0.01 (up to
/// 3.4) where fp32 AdamW moved no weight by more than 0.032, though the loss curve still
/// tracked. transformers' Trainer likewise keeps embeddings at 32 bits under bitsandbytes'
/// 8-bit optimizers. For LLaVA-7B it costs 6 bytes × 2 × 131 M parameters = 1.6 GB.
pub fn keeps_f32_moments(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight")
}

/// A trainable variable and the name it is saved under.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
}

impl Param {
    /// One `Param` per named variable, in the map's (sorted) order: what a model's
    /// `trainable_vars()` hands the optimizer.
    pub fn all<'a>(vars: impl IntoIterator<Item = (&'a String, &'a Var)>) -> Vec<Param> {
        vars.into_iter()
            .map(|(name, var)| Param {
                name: name.clone(),
                var: var.clone(),
            })
            .collect()
    }
}

/// AdamW over a fixed list of named variables.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    /// fp32 master (for a non-fp32 variable) and moments, one packed buffer per variable.
    moments: Vec<AdamWState>,
    steps: u64,
}

impl AdamW {
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        let moments = params
            .iter()
            .map(|p| {
                let master = match cfg.master {
                    Master::StochasticBf16 { seed } => Master::StochasticBf16 {
                        seed: seed ^ dama_core::hash::fnv1a(&p.name),
                    },
                    m => m,
                };
                let state = if keeps_f32_moments(&p.name) {
                    StateFormat::F32
                } else {
                    cfg.state
                };
                AdamWState::with_options(p.var.as_tensor(), master, state)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            params,
            moments,
            steps: 0,
        })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Bytes of optimizer state (fp32 masters, moments or their 8-bit codes and absmaxes) on
    /// the device.
    pub fn state_bytes(&self) -> usize {
        self.moments.iter().map(AdamWState::bytes).sum()
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update with gradients aligned with [`AdamW::params`] (see [`GradAccumulator`]).
    /// A variable without a gradient is left alone, its moments too, as torch does.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step_clipped(grads, lr, None)
    }

    /// [`AdamW::step`] with every gradient multiplied by `clip` first (the coefficient of
    /// [`clip_grad_norm`]), inside the update: bit for bit the update of the f32 gradients
    /// scaled beforehand, without a pass over them of its own.
    pub fn step_clipped(
        &mut self,
        grads: &[Option<Tensor>],
        lr: f64,
        clip: Option<f64>,
    ) -> Result<()> {
        assert_eq!(
            grads.len(),
            self.params.len(),
            "one gradient slot per parameter"
        );
        self.steps += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } = self.cfg;
        let mut step = AdamWStep::new(lr, beta1, beta2, eps, weight_decay, self.steps);
        if let Some(c) = clip {
            step = step.with_grad_scale(c);
        }
        for ((param, state), grad) in self.params.iter().zip(&self.moments).zip(grads) {
            let Some(grad) = grad else { continue };
            state.update(&param.var, grad, &step)?;
        }
        Ok(())
    }

    /// The optimizer state as named tensors, for a checkpoint: `{name}.master` (non-fp32
    /// variables with an fp32 master), and per moment `{name}.exp_avg` / `{name}.exp_avg_sq`
    /// (f32) or, for 8-bit moments, `{name}.exp_avg.codes` (u8) and `{name}.exp_avg.absmax`
    /// (f32, one per block). They are views of the live state (no copy): the next
    /// [`AdamW::step`] changes them, so save them before it.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (p, s) in self.params.iter().zip(&self.moments) {
            // narrowing and reshaping the packed buffers cannot fail
            const VIEW: &str = "a view of the packed optimizer state";
            for m in [Moment::ExpAvg, Moment::ExpAvgSq] {
                let key = format!("{}.{}", p.name, m.name());
                match (s.codes(m).expect(VIEW), s.absmax(m).expect(VIEW)) {
                    (Some(codes), Some(absmax)) => {
                        out.insert(format!("{key}.codes"), codes);
                        out.insert(format!("{key}.absmax"), absmax);
                    }
                    _ => {
                        out.insert(key, s.moment(m).expect(VIEW));
                    }
                }
            }
            if let Some(m) = s.master().expect(VIEW) {
                out.insert(format!("{}.master", p.name), m);
            }
        }
        out
    }

    /// Restores what [`AdamW::state_tensors`] saved, after `steps` steps. The variables must
    /// already hold the checkpoint's weights; a missing or misshaped entry is an error naming
    /// it. The values are copied into this optimizer's buffers (8-bit codes and absmaxes
    /// exactly). Without master copies ([`Master::StochasticBf16`]) saved masters are ignored:
    /// the weights are the masters.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for (p, s) in self.params.iter().zip(&self.moments) {
            let get = |suffix: &str, len: Option<usize>| -> Result<Tensor> {
                let key = format!("{}.{suffix}", p.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no `{key}`"))
                })?;
                let fits = match len {
                    Some(len) => t.dims() == [len],
                    None => t.dims() == p.var.dims(),
                };
                if !fits {
                    candle_core::bail!(
                        "optimizer state `{key}` has shape {:?}, the parameter {:?}{}",
                        t.dims(),
                        p.var.dims(),
                        len.map_or(String::new(), |l| format!(" ({l} values expected)"))
                    );
                }
                t.to_device(p.var.device())
            };
            for m in [Moment::ExpAvg, Moment::ExpAvgSq] {
                let name = m.name();
                match s.absmax(m)? {
                    Some(absmax) => {
                        let n = p.var.elem_count();
                        s.set_codes(m, &get(&format!("{name}.codes"), Some(n))?)?;
                        let blocks = absmax.elem_count();
                        s.set_absmax(m, &get(&format!("{name}.absmax"), Some(blocks))?)?;
                    }
                    None => s.set_moment(m, &get(name, None)?.to_dtype(DType::F32)?)?,
                }
            }
            if s.has_master() {
                s.set_master(&get("master", None)?.to_dtype(DType::F32)?)?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// Sums the gradients of several backward passes (micro-batches) in fp32.
#[derive(Debug)]
pub struct GradAccumulator {
    sums: Vec<Option<Tensor>>,
}

impl GradAccumulator {
    pub fn new(num_params: usize) -> Self {
        Self {
            sums: vec![None; num_params],
        }
    }

    /// Adds this backward pass's gradients of `params`. The first pass's are kept as they
    /// are (in the model's dtype: the update reads them exactly, and a bf16 7B model's
    /// gradients take 13 GB, not 27); sums of several passes are taken in f32.
    pub fn add(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        for (sum, p) in self.sums.iter_mut().zip(params) {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                *sum = Some(match sum.take() {
                    Some(s) => add_in_f32(&s, g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }

    /// The sums so far, to take some of them out (aligned with the parameters).
    pub fn sums_mut(&mut self) -> &mut [Option<Tensor>] {
        &mut self.sums
    }

    /// The sums so far; the accumulator starts over empty.
    pub fn take(&mut self) -> Vec<Option<Tensor>> {
        let n = self.sums.len();
        std::mem::replace(&mut self.sums, vec![None; n])
    }
}

/// `a + b` in f32: how two parts of one gradient are summed (a bf16 sum would lose the
/// smaller part's low bits).
pub fn add_in_f32(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.to_dtype(DType::F32)? + b.to_dtype(DType::F32)?
}

/// The global L2 norm of `grads` and, when it exceeds `max_norm`, the coefficient
/// `torch.nn.utils.clip_grad_norm_` scales them by, which [`AdamW::step_clipped`] applies
/// inside the update (see [`dama_kernels::adamw::clip_grad_norm`]).
pub fn clip_grad_norm(grads: &[Option<Tensor>], max_norm: f64) -> Result<(f64, Option<f64>)> {
    let present: Vec<&Tensor> = grads.iter().flatten().collect();
    dama_kernels::adamw::clip_grad_norm(&present, max_norm)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests8;

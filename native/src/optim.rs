//! AdamW whose update equals fp32 `torch.optim.AdamW`, for variables of any dtype, with
//! gradient accumulation and global-norm clipping as the HF Trainer does them.
//!
//! candle's own AdamW keeps its moments in the variable's dtype, has no fp32 master copy, no
//! clipping and no saved state: with bf16 weights and lr = 5e-7 most updates would round away.
//! Here every variable gets fp32 master weights and fp32 moments; the variable itself is only
//! ever the master rounded to its dtype.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

/// AdamW's hyper-parameters other than the learning rate (which the schedule sets per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay; the paper uses 0.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// A trainable variable and the name it is saved under.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
}

#[derive(Debug)]
struct Moments {
    /// fp32 copy of a variable stored in a narrower dtype; `None` when the variable is fp32.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over a fixed list of named variables.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    moments: Vec<Moments>,
    steps: u64,
}

impl AdamW {
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        let moments = params
            .iter()
            .map(|p| {
                let t = p.var.as_tensor();
                let master = (t.dtype() != DType::F32)
                    .then(|| t.to_dtype(DType::F32))
                    .transpose()?;
                let zeros = || Tensor::zeros(t.shape(), DType::F32, t.device());
                Ok(Moments {
                    master,
                    exp_avg: zeros()?,
                    exp_avg_sq: zeros()?,
                })
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

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update with fp32 gradients aligned with [`AdamW::params`] (see [`GradAccumulator`]).
    /// A variable without a gradient is left alone, its moments too, as torch does.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
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
        } = self.cfg;
        let t = self.steps as i32;
        let step_size = lr / (1.0 - beta1.powi(t));
        let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        for ((param, state), grad) in self.params.iter().zip(&mut self.moments).zip(grads) {
            let Some(grad) = grad else { continue };
            let master = state
                .master
                .clone()
                .unwrap_or_else(|| param.var.as_tensor().clone());
            let master = if weight_decay != 0.0 {
                master.affine(1.0 - lr * weight_decay, 0.0)?
            } else {
                master
            };
            state.exp_avg = ((&state.exp_avg * beta1)? + (grad * (1.0 - beta1))?)?;
            state.exp_avg_sq = ((&state.exp_avg_sq * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let denom = ((state.exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + eps)?;
            let master = (master - (state.exp_avg.div(&denom)? * step_size)?)?;
            match &mut state.master {
                Some(m) => {
                    param.var.set(&master.to_dtype(param.var.dtype())?)?;
                    *m = master;
                }
                None => param.var.set(&master)?,
            }
        }
        Ok(())
    }

    /// The optimizer state as named fp32 tensors (`{name}.exp_avg`, `{name}.exp_avg_sq`, and
    /// `{name}.master` for non-fp32 variables), for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (p, s) in self.params.iter().zip(&self.moments) {
            out.insert(format!("{}.exp_avg", p.name), s.exp_avg.clone());
            out.insert(format!("{}.exp_avg_sq", p.name), s.exp_avg_sq.clone());
            if let Some(m) = &s.master {
                out.insert(format!("{}.master", p.name), m.clone());
            }
        }
        out
    }

    /// Restores what [`AdamW::state_tensors`] saved, after `steps` steps. The variables must
    /// already hold the checkpoint's weights; a missing or misshaped entry is an error naming it.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for (p, s) in self.params.iter().zip(&mut self.moments) {
            let get = |suffix: &str| -> Result<Tensor> {
                let key = format!("{}.{suffix}", p.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no `{key}`"))
                })?;
                if t.dims() != p.var.dims() {
                    candle_core::bail!(
                        "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                        t.dims(),
                        p.var.dims()
                    );
                }
                t.to_dtype(DType::F32)?.to_device(p.var.device())
            };
            s.exp_avg = get("exp_avg")?;
            s.exp_avg_sq = get("exp_avg_sq")?;
            if s.master.is_some() {
                s.master = Some(get("master")?);
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

    /// Adds this backward pass's gradients of `params`.
    pub fn add(&mut self, params: &[Param], grads: &GradStore) -> Result<()> {
        for (sum, p) in self.sums.iter_mut().zip(params) {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                let g = g.to_dtype(DType::F32)?;
                *sum = Some(match sum.take() {
                    Some(s) => (s + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// The sums so far; the accumulator starts over empty.
    pub fn take(&mut self) -> Vec<Option<Tensor>> {
        let n = self.sums.len();
        std::mem::replace(&mut self.sums, vec![None; n])
    }
}

/// Scales the gradients so that their global L2 norm is at most `max_norm`, exactly as
/// `torch.nn.utils.clip_grad_norm_` (coefficient max_norm / (norm + 1e-6), capped at 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sum_sq = 0f64;
    for g in grads.iter().flatten() {
        sum_sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sum_sq.sqrt();
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CosineSchedule;
    use candle_core::Device;
    use serde_json::Value;

    fn golden() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/adamw.json")).unwrap()
    }

    fn values(v: &Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    /// Runs the golden script's six steps with variables of `dtype`; returns the fp32 masters
    /// (or the variables, for f32) after each step.
    fn run(dtype: DType) -> (Vec<HashMap<String, Vec<f32>>>, AdamW) {
        let g = golden();
        let names = ["proj.weight", "proj.bias", "embed"];
        let params: Vec<Param> = names
            .iter()
            .map(|&name| {
                let shape: Vec<usize> = g["shapes"][name]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                let t = Tensor::from_vec(values(&g["init"][name]), shape, &Device::Cpu).unwrap();
                Param {
                    name: name.into(),
                    var: Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap(),
                }
            })
            .collect();
        let c = &g["config"];
        let cfg = AdamWConfig {
            beta1: c["beta1"].as_f64().unwrap(),
            beta2: c["beta2"].as_f64().unwrap(),
            eps: c["eps"].as_f64().unwrap(),
            weight_decay: c["weight_decay"].as_f64().unwrap(),
        };
        let schedule = CosineSchedule {
            base_lr: c["lr"].as_f64().unwrap(),
            warmup_steps: 2,
            total_steps: 6,
        };
        let mut opt = AdamW::new(params, cfg).unwrap();
        let mut history = Vec::new();
        for step in 0..6 {
            let mut grads: Vec<Option<Tensor>> = opt
                .params()
                .iter()
                .map(|p| {
                    let gv = values(&g["grads"][step][&p.name]);
                    Some(Tensor::from_vec(gv, p.var.shape(), &Device::Cpu).unwrap())
                })
                .collect();
            let norm = clip_grad_norm(&mut grads, c["max_grad_norm"].as_f64().unwrap()).unwrap();
            assert!(
                (norm - g["grad_norm"][step].as_f64().unwrap()).abs() < 1e-5,
                "step {step} norm {norm}"
            );
            let lr = schedule.lr(step as u64);
            assert!((lr - g["lr"][step].as_f64().unwrap()).abs() < 1e-12);
            opt.step(&grads, lr).unwrap();
            let state = opt.state_tensors();
            history.push(
                opt.params()
                    .iter()
                    .map(|p| {
                        let master = state
                            .get(&format!("{}.master", p.name))
                            .cloned()
                            .unwrap_or_else(|| p.var.as_tensor().clone());
                        (
                            p.name.clone(),
                            master.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        )
                    })
                    .collect(),
            );
        }
        (history, opt)
    }

    #[test]
    fn matches_torch_adamw_with_clipping_and_schedule() {
        let g = golden();
        let (history, _) = run(DType::F32);
        for (step, got) in history.iter().enumerate() {
            for (name, values_got) in got {
                let want = values(&g["params_after"][step][name]);
                for (a, b) in values_got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                        "step {step} {name}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_variables_follow_the_fp32_trajectory_through_their_master() {
        let (f32_run, _) = run(DType::F32);
        let (bf16_run, opt) = run(DType::BF16);
        // The masters see the same updates as fp32 weights except for the initial rounding of
        // the weights to bf16; the variables are the masters rounded.
        let (last32, last16) = (f32_run.last().unwrap(), bf16_run.last().unwrap());
        for (name, values32) in last32 {
            for (a, b) in values32.iter().zip(&last16[name]) {
                assert!((a - b).abs() < 2e-2, "{name}: {a} vs {b}");
            }
        }
        for p in opt.params() {
            let master = &opt.state_tensors()[&format!("{}.master", p.name)];
            let rounded = master.to_dtype(DType::BF16).unwrap();
            let diff = (rounded.to_dtype(DType::F32).unwrap()
                - p.var.as_tensor().to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
            assert_eq!(diff, 0.0);
        }
    }

    #[test]
    fn state_round_trips_and_continues_identically() {
        let mk = || {
            let v = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap())
                .unwrap();
            AdamW::new(
                vec![Param {
                    name: "w".into(),
                    var: v,
                }],
                AdamWConfig {
                    weight_decay: 0.01,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let grad = |k: f32| {
            vec![Some(
                Tensor::new(&[0.1f32 * k, -0.3, 0.2], &Device::Cpu).unwrap(),
            )]
        };
        let mut a = mk();
        for k in 0..3 {
            a.step(&grad(k as f32), 1e-2).unwrap();
        }
        let mut b = mk();
        b.params()[0]
            .var
            .set(a.params()[0].var.as_tensor())
            .unwrap();
        b.load_state(&a.state_tensors(), a.steps()).unwrap();
        for k in 3..6 {
            a.step(&grad(k as f32), 1e-2).unwrap();
            b.step(&grad(k as f32), 1e-2).unwrap();
        }
        let va = a.params()[0].var.as_tensor().to_vec1::<f32>().unwrap();
        let vb = b.params()[0].var.as_tensor().to_vec1::<f32>().unwrap();
        assert_eq!(va, vb);
        let mut missing = a.state_tensors();
        missing.remove("w.exp_avg");
        let err = mk().load_state(&missing, 3).unwrap_err().to_string();
        assert!(err.contains("w.exp_avg"), "{err}");
    }

    #[test]
    fn accumulator_sums_micro_batches() {
        let v = Var::from_tensor(&Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap()).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var: v.clone(),
        }];
        let mut acc = GradAccumulator::new(1);
        for k in [1.0, 3.0] {
            let loss = (v.as_tensor() * k).unwrap().sum_all().unwrap();
            acc.add(&params, &loss.backward().unwrap()).unwrap();
        }
        let sums = acc.take();
        assert_eq!(
            sums[0].as_ref().unwrap().to_vec1::<f32>().unwrap(),
            [4.0, 4.0]
        );
        assert!(acc.take()[0].is_none());
    }
}

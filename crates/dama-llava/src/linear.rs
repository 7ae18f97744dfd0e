//! A linear layer on 2-D input (callers flatten `(b, t, d)` to `(b·t, d)`: one plain GEMM,
//! whose backward is two GEMMs, where candle's `broadcast_matmul` is slow), with an optional
//! LoRA adapter.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::names::Prefix;
use crate::params::{Grad, LoraConfig, ParamLoader};

/// `B A` of a LoRA adapter and its scale `alpha / rank`.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

#[derive(Debug, Clone)]
pub struct Linear {
    /// Canonical name of the layer, without `.weight` (e.g. `language_model.model.layers.0.self_attn.q_proj`).
    pub name: String,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Loads `{name}.weight` `(out, inp)` and, with `bias`, `{name}.bias`; adds a LoRA adapter
    /// when `lora` is given.
    pub(crate) fn load(
        p: &mut ParamLoader<'_>,
        name: &str,
        (out, inp): (usize, usize),
        bias: bool,
        trainable: bool,
        lora: Option<&LoraConfig>,
    ) -> Result<Self> {
        let prefix = Prefix::new(name);
        let weight = p.load(&prefix.weight(), &[out, inp], trainable)?;
        let bias = if bias {
            Some(p.load(&prefix.bias(), &[out], trainable)?)
        } else {
            None
        };
        let lora = match lora {
            None => None,
            Some(cfg) => {
                let a = lora_a_init(cfg, name, inp, p.dtype, p.device)?;
                let b = Tensor::zeros((out, cfg.rank), p.dtype, p.device)?;
                Some(LoraAdapter {
                    a: p.new_var(prefix.pp("lora_A").weight(), a)?,
                    b: p.new_var(prefix.pp("lora_B").weight(), b)?,
                    scale: cfg.scale(),
                })
            }
        };
        Ok(Self {
            name: name.to_string(),
            weight,
            bias,
            lora,
        })
    }

    /// `x W^T + b (+ scale · (x A^T) B^T)` for `x` of shape `(n, in)`.
    pub fn forward(&self, x: &Tensor, grad: Grad) -> candle_core::Result<Tensor> {
        let mut y = x.matmul(&grad.w(&self.weight).t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&grad.w(b))?;
        }
        if let Some(l) = &self.lora {
            let low = x.matmul(&grad.w(&l.a).t()?)?;
            y = (y + (low.matmul(&grad.w(&l.b).t()?)? * l.scale)?)?;
        }
        Ok(y)
    }

    /// Every tensor the layer reads, in the order [`Linear::backward`] returns gradients:
    /// weight, bias, LoRA A, LoRA B (those present).
    pub fn tensors(&self) -> Vec<Tensor> {
        let mut out = vec![self.weight.clone()];
        out.extend(self.bias.iter().cloned());
        if let Some(l) = &self.lora {
            out.extend([l.a.clone(), l.b.clone()]);
        }
        out
    }

    /// Gradients of [`Linear::forward`] without a graph: `x` `(n, in)` is the forward's input,
    /// `dy` `(n, out)` the output gradient, `need` one flag per [`Linear::tensors`] entry.
    /// Returns `dx` (when `need_dx`) and one slot per tensor. A frozen weight costs no GEMM.
    pub fn backward(
        &self,
        x: &Tensor,
        dy: &Tensor,
        need: &[bool],
        need_dx: bool,
    ) -> candle_core::Result<(Option<Tensor>, Vec<Option<Tensor>>)> {
        let mut need = need.iter().copied();
        let mut grads = Vec::with_capacity(4);
        let w = self.weight.detach();
        grads.push(match need.next() {
            Some(true) => Some(dy.t()?.matmul(x)?),
            _ => None,
        });
        if self.bias.is_some() {
            grads.push(match need.next() {
                Some(true) => Some(dy.sum(0)?),
                _ => None,
            });
        }
        let mut dx = if need_dx { Some(dy.matmul(&w)?) } else { None };
        if let Some(l) = &self.lora {
            let (a, b) = (l.a.detach(), l.b.detach());
            let (need_a, need_b) = (need.next() == Some(true), need.next() == Some(true));
            // y += scale · (x Aᵀ) Bᵀ: dB = scale · dyᵀ (x Aᵀ), d(x Aᵀ) = scale · dy B
            let db = if need_b {
                Some((dy.t()?.matmul(&x.matmul(&a.t()?)?)? * l.scale)?)
            } else {
                None
            };
            let mut da = None;
            if need_a || dx.is_some() {
                let dlow = (dy.matmul(&b)? * l.scale)?;
                if need_a {
                    da = Some(dlow.t()?.matmul(x)?);
                }
                if let Some(d) = dx.as_mut() {
                    *d = (&*d + dlow.matmul(&a)?)?;
                }
            }
            grads.extend([da, db]);
        }
        Ok((dx, grads))
    }

    /// The weight with the adapter folded in, `W + scale · B A` (computed in f32), as saved.
    pub fn merged_weight(&self) -> candle_core::Result<Tensor> {
        let w = self.weight.detach();
        match &self.lora {
            None => Ok(w),
            Some(l) => {
                let dt = w.dtype();
                let up = if dt == DType::F64 {
                    DType::F64
                } else {
                    DType::F32
                };
                let delta =
                    l.b.detach()
                        .to_dtype(up)?
                        .matmul(&l.a.detach().to_dtype(up)?)?;
                (w.to_dtype(up)? + (delta * l.scale)?)?.to_dtype(dt)
            }
        }
    }

    /// The layer's tensors as saved: `{name}.weight` (LoRA merged) and `{name}.bias` if any.
    pub(crate) fn named_weights(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let prefix = Prefix::new(self.name.as_str());
        let mut out = vec![(prefix.weight(), self.merged_weight()?)];
        if let Some(b) = &self.bias {
            out.push((prefix.bias(), b.detach()));
        }
        Ok(out)
    }
}

/// A's initial values: uniform in ±1/√in (PEFT's kaiming-uniform with a = √5), from a stream
/// seeded by the config's seed and the layer's name, so that runs are reproducible.
fn lora_a_init(
    cfg: &LoraConfig,
    name: &str,
    inp: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut rng = dama_core::Xoshiro256::seed_from(cfg.seed ^ dama_core::hash::fnv1a(name));
    let bound = 1.0 / (inp as f64).sqrt();
    let values: Vec<f32> = (0..cfg.rank * inp)
        .map(|_| ((2.0 * rng.open01() - 1.0) * bound) as f32)
        .collect();
    Ok(Tensor::from_vec(values, (cfg.rank, inp), device)?.to_dtype(dtype)?)
}

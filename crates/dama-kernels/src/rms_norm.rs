//! LLaMA's RMSNorm, `y = round(x·r)·w` with `r = 1/√(mean(x²) + ε)` per row, forward and
//! backward (input and weight gradients) in one pass each.
//!
//! The rounding of `x·r` to the model dtype before the weight multiplies it is transformers'
//! order (it matters in bf16). The backward treats that rounding as the identity, as autograd
//! does for the cast, and accumulates everything (the weight gradient over all rows included)
//! in f32.

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use candle_core::backend::BackendStorage;
use num_traits::{Float, Zero};

use crate::elem::{Acc, Elem, dispatch};
use crate::io;

const NAME: &str = "dama-rms-norm";

/// RMSNorm over the last dimension of `x` (any rank) with `weight` `(d,)` of the same dtype.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    if weight.dims() != [d] || d == 0 {
        bail!(
            "{NAME}: weight has shape {:?}, expected [{d}] (the last dimension of x {:?})",
            weight.dims(),
            x.dims()
        );
    }
    if weight.dtype() != x.dtype() {
        bail!(
            "{NAME}: x is {:?} but weight is {:?}",
            x.dtype(),
            weight.dtype()
        );
    }
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps })
}

struct RmsNorm {
    eps: f64,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            xs: &CpuStorage,
            xl: &Layout,
            ws: &CpuStorage,
            wl: &Layout,
            eps: f64,
        ) -> Result<(CpuStorage, Shape)> {
            let x = io::slice::<T>(xs, xl, NAME)?;
            let w = io::slice::<T>(ws, wl, NAME)?;
            let y = forward_cpu(x, w, eps);
            Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
        }
        dispatch!(NAME, xs.dtype(), run(xs, xl, ws, wl, self.eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::norms::rms_norm_fwd(xs, xl, ws, wl, self.eps)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        rms_norm_backward(x, w, dy, self.eps, x.track_op(), w.track_op())
    }
}

/// Rows per parallel task: enough work per task to amortise scheduling.
pub(crate) fn rows_per_task(d: usize) -> usize {
    (16384 / d.max(1)).max(1)
}

/// `1/√(mean(x²) + ε)` as the composition computes it (sqrt, then reciprocal).
#[inline]
fn inv_rms<T: Elem>(x: &[T], eps: T::Acc) -> T::Acc {
    let ss: T::Acc = x.iter().map(|v| v.acc() * v.acc()).sum();
    (ss / T::Acc::of(x.len() as f64) + eps).sqrt().recip()
}

fn forward_cpu<T: Elem>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let eps = T::Acc::of(eps);
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(rows_per_task(d))
        .for_each(|(yr, xr)| {
            let r = inv_rms(xr, eps);
            for ((yi, &xi), &wi) in yr.iter_mut().zip(xr).zip(w) {
                *yi = T::from_acc(T::rnd(xi.acc() * r) * wi.acc());
            }
        });
    y
}

/// Gradients of [`rms_norm`] for the inputs that need one (`dx`, `dw`), outside candle's
/// graph: what a hand-written layer backward calls. `dy` has `x`'s shape.
pub fn rms_norm_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    eps: f64,
    need_dx: bool,
    need_dw: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if dy.dims() != x.dims() {
        bail!("{NAME}: dy {:?} differs from x {:?}", dy.dims(), x.dims());
    }
    if !need_dx && !need_dw {
        return Ok((None, None));
    }
    let (x, w, dy) = (&x.contiguous()?, &w.contiguous()?, &dy.contiguous()?);
    match x.device() {
        Device::Cpu => {
            fn run<T: Elem>(
                x: &Tensor,
                w: &Tensor,
                dy: &Tensor,
                eps: f64,
                need: (bool, bool),
            ) -> Result<(Option<Tensor>, Option<Tensor>)> {
                let (dx, dw) = io::with_cpu(x, NAME, |xs, xl| {
                    io::with_cpu(w, NAME, |ws, wl| {
                        io::with_cpu(dy, NAME, |gs, gl| {
                            Ok(backward_cpu(
                                io::slice::<T>(xs, xl, NAME)?,
                                io::slice::<T>(ws, wl, NAME)?,
                                io::slice::<T>(gs, gl, NAME)?,
                                eps,
                                need,
                            ))
                        })
                    })
                })?;
                let dx = dx.map(|v| io::cpu_tensor(v, x.shape())).transpose()?;
                let dw = dw.map(|v| io::cpu_tensor(v, w.shape())).transpose()?;
                Ok((dx, dw))
            }
            dispatch!(NAME, x.dtype(), run(x, w, dy, eps, (need_dx, need_dw)))
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => crate::cuda::norms::rms_norm_bwd(x, w, dy, eps, need_dx, need_dw),
        d => bail!("{NAME}: no kernel for device {d:?}"),
    }
}

/// One block of rows: writes `dx` (when asked) and returns the block's partial `dw` sums.
fn backward_rows<T: Elem>(
    x: &[T],
    w: &[T],
    dy: &[T],
    eps: T::Acc,
    mut dx: Option<&mut [T]>,
    need_dw: bool,
) -> Vec<T::Acc> {
    let d = w.len();
    let zero = T::Acc::zero();
    let mut dw = vec![zero; if need_dw { d } else { 0 }];
    let inv_d = T::Acc::of(1.0 / d as f64);
    for (row, (xr, gr)) in x.chunks(d).zip(dy.chunks(d)).enumerate() {
        let r = inv_rms(xr, eps);
        if need_dw {
            for ((acc, &xi), &gi) in dw.iter_mut().zip(xr).zip(gr) {
                *acc += gi.acc() * T::rnd(xi.acc() * r);
            }
        }
        if let Some(dx) = dx.as_deref_mut() {
            // dx = r·(g − n̂·mean(g ⊙ n̂)), g = dy ⊙ w, n̂ = x·r
            let mut c = zero;
            for ((&xi, &gi), &wi) in xr.iter().zip(gr).zip(w) {
                c += gi.acc() * wi.acc() * xi.acc() * r;
            }
            let c = c * inv_d;
            let out = &mut dx[row * d..(row + 1) * d];
            for (((o, &xi), &gi), &wi) in out.iter_mut().zip(xr).zip(gr).zip(w) {
                *o = T::from_acc(r * (gi.acc() * wi.acc() - xi.acc() * r * c));
            }
        }
    }
    dw
}

type Grads<T> = (Option<Vec<T>>, Option<Vec<T>>);

fn backward_cpu<T: Elem>(x: &[T], w: &[T], dy: &[T], eps: f64, need: (bool, bool)) -> Grads<T> {
    let (need_dx, need_dw) = need;
    let d = w.len();
    let eps = T::Acc::of(eps);
    let block = rows_per_task(d) * d;
    let add = |mut a: Vec<T::Acc>, b: Vec<T::Acc>| {
        if a.is_empty() {
            return b;
        }
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
        a
    };
    let mut dx = need_dx.then(|| vec![T::zero(); x.len()]);
    let dw = match dx.as_mut() {
        Some(dx) => dx
            .par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .zip(dy.par_chunks(block))
            .map(|((o, xc), gc)| backward_rows(xc, w, gc, eps, Some(o), need_dw))
            .reduce(Vec::new, add),
        None => x
            .par_chunks(block)
            .zip(dy.par_chunks(block))
            .map(|(xc, gc)| backward_rows(xc, w, gc, eps, None, need_dw))
            .reduce(Vec::new, add),
    };
    let dw = need_dw.then(|| {
        if dw.is_empty() {
            vec![T::zero(); d]
        } else {
            dw.into_iter().map(T::from_acc).collect()
        }
    });
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composed;
    use crate::testing::{Rng, finite_difference_error, grads, objective, rel_err};
    use candle_core::{DType, Var};

    fn case(rows: &[usize], d: usize, dtype: DType, seed: u64) -> (Var, Var, Tensor) {
        let mut rng = Rng::new(seed);
        let mut shape = rows.to_vec();
        shape.push(d);
        let x = rng.var(&shape, 1.5, dtype).unwrap();
        let w = Var::from_tensor(&(rng.randn(&[d], 0.3, dtype).unwrap() + 1.0).unwrap()).unwrap();
        let c = rng.randn(&shape, 1.0, DType::F64).unwrap();
        (x, w, c)
    }

    /// f32: outputs and both gradients equal the composition to float rounding.
    #[test]
    fn matches_the_composition_in_f32_on_odd_shapes() {
        for (i, (rows, d)) in [
            (vec![1], 2),
            (vec![3], 13),
            (vec![2, 5], 37),
            (vec![129], 64),
        ]
        .into_iter()
        .enumerate()
        {
            let (x, w, c) = case(&rows, d, DType::F32, i as u64);
            let y = rms_norm(&x, &w, 1e-5).unwrap();
            let want = composed::rms_norm(&x, &w, 1e-5).unwrap();
            assert!(
                rel_err(&y, &want) < 1e-6,
                "{rows:?}×{d}: {:e}",
                rel_err(&y, &want)
            );
            let g = grads(&y, &c, &[&x, &w]).unwrap();
            let gw = grads(&want, &c, &[&x, &w]).unwrap();
            for (k, (a, b)) in g.iter().zip(&gw).enumerate() {
                let e = rel_err(a, b);
                assert!(e < 1e-5, "{rows:?}×{d} grad {k}: {e:e}");
            }
        }
    }

    /// bf16: both are compared with the f32 composition on the same (bf16-representable)
    /// inputs. The forward rounds exactly where the composition does, so it matches the bf16
    /// composition to one rounding; the gradients accumulate in f32 and land within bf16's
    /// resolution (2⁻⁸ relative) of the f32 values.
    #[test]
    fn bf16_rounds_like_the_composition_and_gradients_stay_within_bf16_resolution() {
        let (x, w, c) = case(&[37], 96, DType::BF16, 7);
        let y = rms_norm(&x, &w, 1e-6).unwrap();
        let want16 = composed::rms_norm(&x, &w, 1e-6).unwrap();
        assert!(rel_err(&y, &want16) < 8e-3, "{:e}", rel_err(&y, &want16));
        let x32 = Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap();
        let w32 = Var::from_tensor(&w.to_dtype(DType::F32).unwrap()).unwrap();
        let want32 = composed::rms_norm(&x32, &w32, 1e-6).unwrap();
        let g = grads(&y, &c, &[&x, &w]).unwrap();
        let g32 = grads(&want32, &c, &[&x32, &w32]).unwrap();
        assert_eq!(g[0].dtype(), DType::BF16);
        for (k, (a, b)) in g.iter().zip(&g32).enumerate() {
            let e = rel_err(a, b);
            assert!(e < 1e-2, "grad {k}: {e:e}");
        }
    }

    #[test]
    fn gradients_equal_central_finite_differences_in_f64() {
        let (x, w, c) = case(&[4], 11, DType::F64, 3);
        let loss =
            || -> Result<f64> { objective(&rms_norm(&x, &w, 1e-5)?, &c)?.to_scalar::<f64>() };
        let g = grads(&rms_norm(&x, &w, 1e-5).unwrap(), &c, &[&x, &w]).unwrap();
        for (var, grad) in [(&x, &g[0]), (&w, &g[1])] {
            let e = finite_difference_error(var, grad, 6, 1e-6, 1e-2, &loss).unwrap();
            assert!(e < 1e-6, "{e:e}");
        }
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient_and_bad_shapes_are_errors() {
        let (x, w, c) = case(&[5], 8, DType::F32, 1);
        let frozen = w.as_tensor().detach();
        let y = rms_norm(&x, &frozen, 1e-5).unwrap();
        let g = objective(&y, &c).unwrap().backward().unwrap();
        assert!(g.get(&frozen).is_none() && g.get(x.as_tensor()).is_some());
        let e = rms_norm(&x, &frozen.narrow(0, 0, 7).unwrap(), 1e-5).unwrap_err();
        assert!(e.to_string().contains("expected [8]"), "{e}");
    }
}

//! LLaMA's gated MLP activation `silu(a)·b`, forward and backward in one pass each.
//!
//! The forward rounds `silu(a)` to the model dtype before multiplying (candle's and
//! transformers' two bf16 ops); the backward computes both gradients from `a` and `b` in f32:
//! `da = dy·b·σ(a)·(1 + a·(1 − σ(a)))`, `db = dy·silu(a)`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor, bail};
use num_traits::{Float, One};
use rayon::prelude::*;

use crate::elem::{Elem, dispatch};
use crate::io;

const NAME: &str = "dama-swiglu";
const CHUNK: usize = 8192;

/// `silu(a)·b` for two tensors of the same shape and dtype.
pub fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        bail!(
            "{NAME}: a is {:?} {:?} but b is {:?} {:?}",
            a.dtype(),
            a.dims(),
            b.dtype(),
            b.dims()
        );
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, Swiglu)
}

struct Swiglu;

#[inline]
fn sigmoid<A: Float>(x: A) -> A {
    A::one() / (A::one() + (-x).exp())
}

impl CustomOp2 for Swiglu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let a = io::slice::<T>(s1, l1, NAME)?;
            let b = io::slice::<T>(s2, l2, NAME)?;
            let mut y = vec![T::zero(); a.len()];
            y.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                .for_each(|(y, (a, b))| {
                    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                        let a = a.acc();
                        *y = T::from_acc(T::rnd(a * sigmoid(a)) * b.acc());
                    }
                });
            Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
        }
        dispatch!(NAME, s1.dtype(), run(s1, l1, s2, l2))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::pointwise::swiglu_fwd(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        swiglu_backward(a, b, dy, a.track_op(), b.track_op())
    }
}

/// Gradients of [`swiglu`] for the inputs that need one (`da`, `db`), outside candle's graph.
pub fn swiglu_backward(
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    need_da: bool,
    need_db: bool,
) -> Result<Grads> {
    if !need_da && !need_db {
        return Ok((None, None));
    }
    if dy.dims() != a.dims() || b.dims() != a.dims() {
        bail!(
            "{NAME}: a {:?}, b {:?} and dy {:?} must have one shape",
            a.dims(),
            b.dims(),
            dy.dims()
        );
    }
    let (a, b, dy) = (a.contiguous()?, b.contiguous()?, dy.contiguous()?);
    let need = (need_da, need_db);
    match a.device() {
        Device::Cpu => dispatch!(NAME, a.dtype(), backward_cpu(&a, &b, &dy, need)),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => crate::cuda::pointwise::swiglu_bwd(&a, &b, &dy, need),
        d => bail!("{NAME}: no kernel for device {d:?}"),
    }
}

type Grads = (Option<Tensor>, Option<Tensor>);

fn backward_cpu<T: Elem>(a: &Tensor, b: &Tensor, dy: &Tensor, need: (bool, bool)) -> Result<Grads> {
    let (need_da, need_db) = need;
    let n = a.elem_count();
    let mut da = vec![T::zero(); if need_da { n } else { 0 }];
    let mut db = vec![T::zero(); if need_db { n } else { 0 }];
    io::with_cpu(a, NAME, |sa, la| {
        io::with_cpu(b, NAME, |sb, lb| {
            io::with_cpu(dy, NAME, |sg, lg| {
                let (a, b) = (io::slice::<T>(sa, la, NAME)?, io::slice::<T>(sb, lb, NAME)?);
                let g = io::slice::<T>(sg, lg, NAME)?;
                let one = <T::Acc as One>::one();
                let chunks = n.div_ceil(CHUNK);
                // Empty outputs are split into empty chunks so that the zips stay aligned.
                fn split<T>(v: &mut [T], chunks: usize) -> Vec<&mut [T]> {
                    if v.is_empty() {
                        (0..chunks).map(|_| <&mut [T]>::default()).collect()
                    } else {
                        v.chunks_mut(CHUNK).collect()
                    }
                }
                let (das, dbs) = (split(&mut da, chunks), split(&mut db, chunks));
                das.into_par_iter()
                    .zip(dbs)
                    .enumerate()
                    .for_each(|(c, (da, db))| {
                        let r = c * CHUNK..(c * CHUNK + CHUNK).min(n);
                        for (i, k) in r.enumerate() {
                            let (x, y, gy) = (a[k].acc(), b[k].acc(), g[k].acc());
                            let s = sigmoid(x);
                            if !da.is_empty() {
                                da[i] = T::from_acc(gy * y * s * (one + x * (one - s)));
                            }
                            if !db.is_empty() {
                                db[i] = T::from_acc(gy * T::rnd(x * s));
                            }
                        }
                    });
                Ok(())
            })
        })
    })?;
    let wrap = |v: Vec<T>, want: bool| -> Result<Option<Tensor>> {
        if want {
            Ok(Some(io::cpu_tensor(v, a.shape())?))
        } else {
            Ok(None)
        }
    };
    Ok((wrap(da, need_da)?, wrap(db, need_db)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composed;
    use crate::testing::{Rng, finite_difference_error, grads, objective, rel_err};
    use candle_core::{DType, Var};

    #[test]
    fn matches_the_composition_in_f32_including_a_frozen_input() {
        let mut rng = Rng::new(4);
        for shape in [vec![1usize], vec![3, 17], vec![2, 4099]] {
            let a = rng.var(&shape, 3.0, DType::F32).unwrap();
            let b = rng.var(&shape, 1.0, DType::F32).unwrap();
            let c = rng.randn(&shape, 1.0, DType::F64).unwrap();
            let y = swiglu(&a, &b).unwrap();
            let want = composed::swiglu(&a, &b).unwrap();
            assert!(rel_err(&y, &want) < 1e-6, "{:e}", rel_err(&y, &want));
            let g = grads(&y, &c, &[&a, &b]).unwrap();
            let gw = grads(&want, &c, &[&a, &b]).unwrap();
            for (k, (x, w)) in g.iter().zip(&gw).enumerate() {
                assert!(
                    rel_err(x, w) < 1e-6,
                    "{shape:?} grad {k}: {:e}",
                    rel_err(x, w)
                );
            }
        }
        let a = rng.var(&[9], 1.0, DType::F32).unwrap();
        let frozen = rng.randn(&[9], 1.0, DType::F32).unwrap();
        let g = swiglu(&a, &frozen)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&frozen).is_none() && g.get(a.as_tensor()).is_some());
    }

    #[test]
    fn bf16_equals_the_bf16_composition_and_gradients_are_within_bf16_resolution() {
        let mut rng = Rng::new(8);
        let a = rng.var(&[5, 33], 3.0, DType::BF16).unwrap();
        let b = rng.var(&[5, 33], 1.0, DType::BF16).unwrap();
        let c = rng.randn(&[5, 33], 1.0, DType::F64).unwrap();
        let y = swiglu(&a, &b).unwrap();
        assert!(rel_err(&y, &composed::swiglu(&a, &b).unwrap()) < 8e-3);
        let a32 = Var::from_tensor(&a.to_dtype(DType::F32).unwrap()).unwrap();
        let b32 = Var::from_tensor(&b.to_dtype(DType::F32).unwrap()).unwrap();
        let g = grads(&y, &c, &[&a, &b]).unwrap();
        let g32 = grads(&composed::swiglu(&a32, &b32).unwrap(), &c, &[&a32, &b32]).unwrap();
        for (x, w) in g.iter().zip(&g32) {
            assert!(rel_err(x, w) < 8e-3, "{:e}", rel_err(x, w));
        }
    }

    #[test]
    fn gradients_equal_central_finite_differences_in_f64() {
        let mut rng = Rng::new(6);
        let a = rng.var(&[3, 7], 2.0, DType::F64).unwrap();
        let b = rng.var(&[3, 7], 1.0, DType::F64).unwrap();
        let c = rng.randn(&[3, 7], 1.0, DType::F64).unwrap();
        let loss = || objective(&swiglu(&a, &b)?, &c)?.to_scalar::<f64>();
        let g = grads(&swiglu(&a, &b).unwrap(), &c, &[&a, &b]).unwrap();
        for (v, gr) in [(&a, &g[0]), (&b, &g[1])] {
            let e = finite_difference_error(v, gr, 6, 1e-6, 1e-2, &loss).unwrap();
            assert!(e < 1e-6, "{e:e}");
        }
    }
}

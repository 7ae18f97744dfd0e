//! Forward-only ops of the frozen CLIP vision tower: LayerNorm and quick-GELU, each one pass
//! over the data in f32 with a single rounding to the model dtype at the end.
//!
//! They have no backward on purpose: the tower never trains. Should a graph ever reach them
//! (a tracked input), candle's backward stops with "backward not supported" naming the op
//! instead of silently dropping the gradient, as candle's own fused norms do.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, bail};
use num_traits::Float;
use rayon::prelude::*;

use crate::elem::{Acc, Elem, dispatch};
use crate::io;

const LN: &str = "dama-layer-norm";
const GELU: &str = "dama-quick-gelu";

/// LayerNorm over the last dimension with `weight` and `bias` `(d,)` (same dtype as `x`).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    if weight.dims() != [d] || bias.dims() != [d] || d == 0 {
        bail!(
            "{LN}: weight {:?} and bias {:?} must be [{d}] for x {:?}",
            weight.dims(),
            bias.dims(),
            x.dims()
        );
    }
    if weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        bail!("{LN}: x, weight and bias dtypes differ");
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { eps },
    )
}

/// `x·σ(1.702·x)`, CLIP's activation.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(QuickGelu)
}

struct LayerNorm {
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        LN
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            (xs, xl): (&CpuStorage, &Layout),
            (ws, wl): (&CpuStorage, &Layout),
            (bs, bl): (&CpuStorage, &Layout),
            eps: f64,
        ) -> Result<(CpuStorage, Shape)> {
            let x = io::slice::<T>(xs, xl, LN)?;
            let w = io::slice::<T>(ws, wl, LN)?;
            let b = io::slice::<T>(bs, bl, LN)?;
            let d = w.len();
            let eps = T::Acc::of(eps);
            let inv_d = T::Acc::of(1.0 / d as f64);
            let mut y = vec![T::zero(); x.len()];
            y.par_chunks_mut(d)
                .zip(x.par_chunks(d))
                .with_min_len(crate::rms_norm::rows_per_task(d))
                .for_each(|(y, x)| {
                    let mean = x.iter().map(|v| v.acc()).sum::<T::Acc>() * inv_d;
                    let var = x
                        .iter()
                        .map(|v| (v.acc() - mean) * (v.acc() - mean))
                        .sum::<T::Acc>()
                        * inv_d;
                    let r = (var + eps).sqrt().recip();
                    for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                        *y = T::from_acc((x.acc() - mean) * r * w.acc() + b.acc());
                    }
                });
            Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
        }
        dispatch!(LN, xs.dtype(), run((xs, xl), (ws, wl), (bs, bl), self.eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::norms::layer_norm_fwd((xs, xl), (ws, wl), (bs, bl), self.eps)
    }
}

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        GELU
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let x = io::slice::<T>(s, l, GELU)?;
            let k = T::Acc::of(1.702);
            let one = T::Acc::of(1.0);
            let mut y = vec![T::zero(); x.len()];
            y.par_chunks_mut(8192)
                .zip(x.par_chunks(8192))
                .for_each(|(y, x)| {
                    for (y, x) in y.iter_mut().zip(x) {
                        let v = x.acc();
                        *y = T::from_acc(v / (one + (-k * v).exp()));
                    }
                });
            Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
        }
        dispatch!(GELU, s.dtype(), run(s, l))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::pointwise::quick_gelu_fwd(s, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composed;
    use crate::testing::{Rng, rel_err};
    use candle_core::{DType, Device, Var};

    #[test]
    fn layer_norm_matches_the_composition_in_f32_and_bf16() {
        let mut rng = Rng::new(12);
        for (shape, dtype, tol) in [
            (vec![1, 1], DType::F32, 1e-6),
            (vec![3, 5, 37], DType::F32, 1e-6),
            (vec![2, 50, 64], DType::BF16, 8e-3),
            (vec![4, 9], DType::F64, 1e-12),
        ] {
            let d = *shape.last().unwrap();
            let x = (rng.randn(&shape, 2.0, dtype).unwrap() + 0.5).unwrap();
            let w = rng.randn(&[d], 1.0, dtype).unwrap();
            let b = rng.randn(&[d], 1.0, dtype).unwrap();
            let y = layer_norm(&x, &w, &b, 1e-5).unwrap();
            let want = composed::layer_norm(&x, &w, &b, 1e-5).unwrap();
            assert_eq!(y.dtype(), dtype);
            assert!(
                rel_err(&y, &want) < tol,
                "{shape:?} {dtype:?}: {:e}",
                rel_err(&y, &want)
            );
        }
    }

    #[test]
    fn quick_gelu_matches_the_composition_and_large_inputs_stay_finite() {
        let mut rng = Rng::new(13);
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::BF16, 8e-3), (DType::F16, 2e-3)] {
            let x = rng.randn(&[7, 1001], 4.0, dtype).unwrap();
            let y = quick_gelu(&x).unwrap();
            let want = composed::quick_gelu(&x).unwrap();
            assert!(
                rel_err(&y, &want) < tol,
                "{dtype:?}: {:e}",
                rel_err(&y, &want)
            );
        }
        let big = Tensor::new(&[-1e4f32, 1e4, 0.0], &Device::Cpu).unwrap();
        assert_eq!(
            quick_gelu(&big).unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1e4, 0.0]
        );
    }

    #[test]
    fn a_graph_through_the_forward_only_ops_is_an_error_not_a_silent_zero() {
        let x = Var::from_tensor(&Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
        let e = quick_gelu(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap_err();
        assert!(e.to_string().contains(GELU), "{e}");
        let one = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        let y = layer_norm(&x, &one, &one, 1e-5).unwrap();
        let e = y.sum_all().unwrap().backward().unwrap_err();
        assert!(e.to_string().contains(LN), "{e}");
        assert!(layer_norm(&x, &one.narrow(0, 0, 2).unwrap(), &one, 1e-5).is_err());
    }
}

//! Rotary position embedding in LLaMA's rotate-half layout, `y = x·cos + rotate_half(x)·sin`
//! with `rotate_half([x₁, x₂]) = [−x₂, x₁]`, on `(b, t, heads, d)` tensors.
//!
//! The input is read through its strides (a `(b, t, h, d)` view of a projection's output, or a
//! transposed `(b, h, t, d)` tensor), so no copy precedes the op. The forward rounds
//! `x·cos` and `rotate_half(x)·sin` to the model dtype before adding them, as transformers'
//! three bf16 ops do; the backward (the rotation by −θ) accumulates in f32 and rounds once.
//! `cos`/`sin` are position tables, constants: they get no gradient.

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use candle_core::backend::BackendStorage;

use crate::elem::{Elem, dispatch};
use crate::io::{self, View4};

const NAME: &str = "dama-rope";

/// RoPE on `x` `(b, t, h, d)` (any strides over the first three dimensions) with `cos`/`sin`
/// `(b, t, d)` (one row per token, so packed rows can carry their own positions) or `(t, d)`
/// (shared by every row). `d` must be even. Returns a contiguous `(b, t, h, d)` tensor.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check(x, cos, sin)?;
    let x = io::last_dim_contiguous(x)?;
    x.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope)
}

/// The gradient of [`rope`] with respect to `x` (a rotation by −θ), outside candle's graph:
/// `dy` `(b, t, h, d)` (any strides over the first three dimensions), tables as for [`rope`].
/// Returns a contiguous `(b, t, h, d)` tensor.
pub fn rope_backward(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check(dy, cos, sin)?;
    rotate_back(
        &io::last_dim_contiguous(dy)?,
        &cos.contiguous()?,
        &sin.contiguous()?,
    )
}

fn check(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
    let (b, t, _, d) = x.dims4()?;
    if d % 2 != 0 {
        bail!("{NAME}: head dimension {d} is odd");
    }
    for (name, table) in [("cos", cos), ("sin", sin)] {
        let ok = table.dims() == [b, t, d] || table.dims() == [t, d];
        if !ok {
            bail!(
                "{NAME}: {name} has shape {:?}, expected [{b}, {t}, {d}] or [{t}, {d}] for x {:?}",
                table.dims(),
                x.dims()
            );
        }
        if table.dtype() != x.dtype() {
            bail!(
                "{NAME}: x is {:?} but {name} is {:?}",
                x.dtype(),
                table.dtype()
            );
        }
    }
    if cos.dims() != sin.dims() {
        bail!(
            "{NAME}: cos {:?} and sin {:?} differ in shape",
            cos.dims(),
            sin.dims()
        );
    }
    Ok(())
}

/// Rotates a last-dim-contiguous `dy` by −θ; contiguous tables.
fn rotate_back(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    match dy.device() {
        Device::Cpu => {
            fn run<T: Elem>(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
                let view = View4::of(dy.layout()).expect("checked by last_dim_contiguous");
                let dx = io::with_cpu(dy, NAME, |gs, gl| {
                    io::with_cpu(cos, NAME, |cs, cl| {
                        io::with_cpu(sin, NAME, |ss, sl| {
                            Ok(rotate_cpu(
                                io::from_offset::<T>(gs, gl)?,
                                view,
                                io::slice::<T>(cs, cl, NAME)?,
                                io::slice::<T>(ss, sl, NAME)?,
                                Direction::Backward,
                            ))
                        })
                    })
                })?;
                io::cpu_tensor(dx, view.dims.as_slice())
            }
            dispatch!(NAME, dy.dtype(), run(dy, cos, sin))
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => crate::cuda::pointwise::rope_tensors(dy, cos, sin, Direction::Backward),
        d => bail!("{NAME}: no kernel for device {d:?}"),
    }
}

struct Rope;

/// Which way to rotate: the forward (θ) or its transpose, the backward (−θ).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Direction {
    Forward,
    Backward,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            xs: &CpuStorage,
            xl: &Layout,
            cs: &CpuStorage,
            cl: &Layout,
            ss: &CpuStorage,
            sl: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let view = View4::of(xl)
                .ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: strided last dim")))?;
            let y = rotate_cpu(
                io::from_offset::<T>(xs, xl)?,
                view,
                io::slice::<T>(cs, cl, NAME)?,
                io::slice::<T>(ss, sl, NAME)?,
                Direction::Forward,
            );
            Ok((T::to_cpu_storage_owned(y), Shape::from(view.dims.to_vec())))
        }
        dispatch!(NAME, xs.dtype(), run(xs, xl, cs, cl, ss, sl))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        cs: &candle_core::CudaStorage,
        cl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::pointwise::rope(xs, xl, cs, cl, ss, sl, Direction::Forward)
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !x.track_op() {
            return Ok((None, None, None));
        }
        let dx = rotate_back(&io::last_dim_contiguous(dy)?, cos, sin)?;
        // The op's input may be a view with other strides; the gradient has its shape.
        Ok((Some(dx.reshape(x.shape())?), None, None))
    }
}

/// Rotates every `d`-vector of `src` (read through `view`) by the table row of its token.
fn rotate_cpu<T: Elem>(src: &[T], view: View4, cos: &[T], sin: &[T], dir: Direction) -> Vec<T> {
    let [b, t, h, d] = view.dims;
    let half = d / 2;
    let batched = cos.len() == b * t * d;
    let zero = T::zero();
    let mut out = vec![zero; b * t * h * d];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(h * d)
        .enumerate()
        .with_min_len((4096 / (h * d)).max(1))
        .for_each(|(row, o)| {
            let (bi, ti) = (row / t, row % t);
            let tab = if batched { row * d } else { ti * d };
            let (c, s) = (&cos[tab..tab + d], &sin[tab..tab + d]);
            for k in 0..h {
                let x = &src[view.at(bi, ti, k)..][..d];
                let y = &mut o[k * d..(k + 1) * d];
                for i in 0..d {
                    let xi = x[i].acc();
                    let v = match dir {
                        Direction::Forward => {
                            let rot = if i < half {
                                -x[i + half].acc()
                            } else {
                                x[i - half].acc()
                            };
                            T::rnd(xi * c[i].acc()) + T::rnd(rot * s[i].acc())
                        }
                        Direction::Backward => {
                            let other = if i < half {
                                x[i + half].acc() * s[i + half].acc()
                            } else {
                                -(x[i - half].acc() * s[i - half].acc())
                            };
                            xi * c[i].acc() + other
                        }
                    };
                    y[i] = T::from_acc(v);
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composed;
    use crate::testing::{Rng, finite_difference_error, grads, objective, rel_err};
    use candle_core::{DType, Var};

    /// Real tables (cos/sin of position × frequency, halves repeated) for packed rows whose
    /// positions restart, like the shared-prefix layout's rejected tail.
    fn tables(b: usize, t: usize, d: usize, dtype: DType) -> (Tensor, Tensor) {
        let (mut c, mut s) = (Vec::new(), Vec::new());
        for r in 0..b {
            for p in 0..t {
                let pos = if r % 2 == 1 && p > t / 2 { p - 2 } else { p } as f64;
                for i in 0..d {
                    let f = 1.0 / 10000f64.powf((2 * (i % (d / 2))) as f64 / d as f64);
                    c.push((pos * f).cos());
                    s.push((pos * f).sin());
                }
            }
        }
        let mk = |v| {
            Tensor::from_vec(v, (b, t, d), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        (mk(c), mk(s))
    }

    #[test]
    fn matches_the_composition_on_strided_views_in_f32() {
        let mut rng = Rng::new(11);
        for (b, t, h, d) in [(1, 1, 1, 2), (2, 7, 3, 10), (3, 5, 4, 64)] {
            let (c, s) = tables(b, t, d, DType::F32);
            // a transposed (b, h, t, d) buffer viewed as (b, t, h, d), as attention's caller has
            let x = rng.var(&[b, h, t, d], 1.0, DType::F32).unwrap();
            let xv = x.as_tensor().transpose(1, 2).unwrap();
            assert!(!xv.is_contiguous() || h == 1 || t == 1);
            let y = rope(&xv, &c, &s).unwrap();
            let want = composed::rope(&xv, &c, &s).unwrap();
            assert!(rel_err(&y, &want) < 1e-6, "{:e}", rel_err(&y, &want));
            let cot = rng.randn(&[b, t, h, d], 1.0, DType::F64).unwrap();
            let g = grads(&y, &cot, &[&x]).unwrap();
            let gw = grads(&want, &cot, &[&x]).unwrap();
            assert!(
                rel_err(&g[0], &gw[0]) < 1e-6,
                "{:e}",
                rel_err(&g[0], &gw[0])
            );
        }
    }

    #[test]
    fn shared_tables_broadcast_over_rows_and_random_tables_are_exact_too() {
        let mut rng = Rng::new(5);
        let x = rng.var(&[2, 6, 2, 8], 1.0, DType::F32).unwrap();
        // arbitrary tables (not a rotation) exercise each index of the backward formula
        let c = rng.randn(&[6, 8], 1.0, DType::F32).unwrap();
        let s = rng.randn(&[6, 8], 1.0, DType::F32).unwrap();
        let y = rope(&x, &c, &s).unwrap();
        let cb = c.unsqueeze(0).unwrap().broadcast_as((2, 6, 8)).unwrap();
        let sb = s.unsqueeze(0).unwrap().broadcast_as((2, 6, 8)).unwrap();
        let want = composed::rope(&x, &cb, &sb).unwrap();
        assert!(rel_err(&y, &want) < 1e-6);
        assert_eq!(rel_err(&composed::rope(&x, &c, &s).unwrap(), &want), 0.0);
        let cot = rng.randn(&[2, 6, 2, 8], 1.0, DType::F64).unwrap();
        let (g, gw) = (
            grads(&y, &cot, &[&x]).unwrap(),
            grads(&want, &cot, &[&x]).unwrap(),
        );
        assert!(rel_err(&g[0], &gw[0]) < 1e-6);
    }

    /// bf16: the forward rounds where transformers does, so it equals the bf16 composition
    /// exactly; the gradient (one rounding instead of three) is within bf16 resolution of the
    /// f32 gradient.
    #[test]
    fn bf16_forward_is_bit_exact_and_gradient_within_bf16_resolution() {
        let mut rng = Rng::new(9);
        let (c, s) = tables(2, 9, 16, DType::BF16);
        let x = rng.var(&[2, 9, 3, 16], 2.0, DType::BF16).unwrap();
        let y = rope(&x, &c, &s).unwrap();
        let want = composed::rope(&x, &c, &s).unwrap();
        assert_eq!(rel_err(&y, &want), 0.0);
        let cot = rng.randn(&[2, 9, 3, 16], 1.0, DType::F64).unwrap();
        let x32 = Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap();
        let (c32, s32) = (
            c.to_dtype(DType::F32).unwrap(),
            s.to_dtype(DType::F32).unwrap(),
        );
        let g = grads(&y, &cot, &[&x]).unwrap();
        let g32 = grads(&composed::rope(&x32, &c32, &s32).unwrap(), &cot, &[&x32]).unwrap();
        assert!(
            rel_err(&g[0], &g32[0]) < 8e-3,
            "{:e}",
            rel_err(&g[0], &g32[0])
        );
    }

    #[test]
    fn gradient_equals_central_finite_differences_in_f64() {
        let mut rng = Rng::new(2);
        let x = rng.var(&[2, 3, 2, 6], 1.0, DType::F64).unwrap();
        let c = rng.randn(&[2, 3, 6], 1.0, DType::F64).unwrap();
        let s = rng.randn(&[2, 3, 6], 1.0, DType::F64).unwrap();
        let cot = rng.randn(&[2, 3, 2, 6], 1.0, DType::F64).unwrap();
        let loss = || objective(&rope(&x, &c, &s)?, &cot)?.to_scalar::<f64>();
        let g = grads(&rope(&x, &c, &s).unwrap(), &cot, &[&x]).unwrap();
        let e = finite_difference_error(&x, &g[0], 8, 1e-6, 1e-2, &loss).unwrap();
        assert!(e < 1e-6, "{e:e}");
    }

    #[test]
    fn bad_tables_are_errors() {
        let x = Tensor::zeros((1, 4, 2, 6), DType::F32, &Device::Cpu).unwrap();
        let c = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        let e = rope(&x, &c, &c).unwrap_err().to_string();
        assert!(e.contains("cos has shape [4, 4]"), "{e}");
        let odd = Tensor::zeros((1, 4, 2, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(rope(&odd, &c, &c).unwrap_err().to_string().contains("odd"));
    }
}

//! Layers with a backward written by hand, and recomputation in the backward (activation
//! checkpointing, as other frameworks call it) built on them.
//!
//! candle has no hook for either: a `CustomOp` returns gradients only for its (at most three)
//! arguments, while a layer has many weights. So the parameters are attached through tiny side
//! nodes: each tracked parameter `p_i` feeds an op returning a zero scalar, the scalars are
//! summed into `s`, and the result is `layer(x, s)`. In the backward, candle reaches `layer`
//! before `s` and the side nodes (they are its inputs), so its backward can compute every
//! gradient at once, return `dx`, and leave each parameter's gradient where the side nodes
//! pick it up. Inside the layer no candle graph exists: no per-node zero-fill and add, no
//! gradient for a frozen weight, no copy for a transposed view.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, Var, bail,
};

use crate::{grad_ready, io};

const NAME: &str = "dama-layer";

/// What a layer's backward returns: the input gradient (when asked for) and one slot per
/// parameter, in the order the parameters were given (`None` where none was asked for).
pub struct LayerGrads {
    pub dx: Option<Tensor>,
    pub params: Vec<Option<Tensor>>,
}

/// A layer's backward: `(dy, which parameters need a gradient, whether x needs one)`.
pub type Backward = dyn Fn(&Tensor, &[bool], bool) -> Result<LayerGrads> + Send + Sync;

/// Puts `y`, computed from `x` and `params` without a graph, into candle's graph with `bwd` as
/// its backward. Parameters that track no gradient are never asked for one; when nothing
/// tracks, `y` is returned as it is.
pub fn with_backward(
    x: &Tensor,
    y: Tensor,
    params: &[Tensor],
    bwd: Arc<Backward>,
) -> Result<Tensor> {
    let need: Vec<bool> = params.iter().map(|p| p.track_op()).collect();
    if !need.iter().any(|&n| n) && !x.track_op() {
        return Ok(y);
    }
    let grads = Arc::new(Mutex::new(vec![None; params.len()]));
    // Under a gradient tracker the backward hands the parameters' gradients to it instead.
    let tracker = grad_ready::recording().map(|state| {
        let needed: Vec<Tensor> = params
            .iter()
            .zip(&need)
            .filter(|(_, n)| **n)
            .map(|(p, _)| p.clone())
            .collect();
        grad_ready::register(&state, &needed.iter().collect::<Vec<_>>());
        (state, needed)
    });
    let mut s = Tensor::zeros(1, DType::F32, x.device())?;
    for (i, p) in params.iter().enumerate().filter(|(i, _)| need[*i]) {
        s = (s + p.apply_op1(Attach {
            index: i,
            grads: grads.clone(),
        })?)?;
    }
    x.apply_op2(
        &s,
        Layer {
            bwd,
            output: Mutex::new(Some(y)),
            need,
            grads,
            tracker,
        },
    )
}

/// The recomputed function: `(input, track)` → output. With `track = false` it must record no
/// graph (read its weights through `detach`); with `track = true` it must read the same
/// weights as they are, so that gradients reach them.
pub type Recompute = dyn Fn(&Tensor, bool) -> Result<Tensor> + Send + Sync;

/// `f(x)` whose backward recomputes `f` (activation checkpointing): memory per layer drops
/// from everything the layer's backward needs to its input and output, for a second forward.
/// `params` are the tensors `f` reads that may need a gradient. Values and gradients equal
/// `f(x, true)` with a graph; only the memory and the time differ.
pub fn recompute(x: &Tensor, params: &[Tensor], f: Arc<Recompute>) -> Result<Tensor> {
    let input = x.detach();
    let y = f(&input, false)?;
    let params_kept = params.to_vec();
    let bwd: Arc<Backward> = Arc::new(move |dy: &Tensor, need: &[bool], need_dx: bool| {
        let leaf = Var::from_tensor(&input)?;
        let y = f(leaf.as_tensor(), true)?;
        let g = (y * dy.detach())?.sum_all()?.backward()?;
        let params = params_kept
            .iter()
            .zip(need)
            .map(|(p, &n)| if n { g.get(p).cloned() } else { None })
            .collect();
        let dx = if need_dx {
            g.get(leaf.as_tensor()).cloned()
        } else {
            None
        };
        Ok(LayerGrads { dx, params })
    });
    with_backward(x, y, params, bwd)
}

/// Returns the precomputed output; its backward runs the layer's.
struct Layer {
    bwd: Arc<Backward>,
    /// Taken by the forward (one copy of the output, not two).
    output: Mutex<Option<Tensor>>,
    need: Vec<bool>,
    grads: Arc<Mutex<Vec<Option<Tensor>>>>,
    /// The tracker the forward registered with and the parameters it registered (those in
    /// `need`, in order); their gradients go there, not to the side nodes.
    tracker: Option<(Arc<Mutex<grad_ready::State>>, Vec<Tensor>)>,
}

impl Layer {
    fn take_output(&self) -> Result<Tensor> {
        match self.output.lock().expect("layer output lock").take() {
            Some(y) => Ok(y),
            None => bail!("{NAME}: forward ran twice"),
        }
    }
}

impl CustomOp2 for Layer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match io::precomputed(&self.take_output()?)? {
            (Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => bail!("{NAME}: output not on the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        match io::precomputed(&self.take_output()?)? {
            (Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => bail!("{NAME}: output not on the GPU"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let out = (self.bwd)(dy, &self.need, x.track_op())?;
        if out.params.len() != self.need.len() {
            bail!(
                "{NAME}: the backward returned {} parameter gradients for {} parameters",
                out.params.len(),
                self.need.len()
            );
        }
        if let Some((state, needed)) = &self.tracker {
            let grads: Vec<Tensor> = out
                .params
                .into_iter()
                .zip(&self.need)
                .filter(|(_, n)| **n)
                .map(|(g, _)| g)
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "{NAME}: the backward gave no gradient for a parameter it was asked for"
                    ))
                })?;
            grad_ready::deliver(state, &needed.iter().collect::<Vec<_>>(), grads)?;
        } else {
            let mut slots = self.grads.lock().expect("layer gradients lock");
            for ((slot, g), &n) in slots.iter_mut().zip(out.params).zip(&self.need) {
                *slot = if n { g } else { None };
            }
        }
        let dx = if x.track_op() { out.dx } else { None };
        Ok((dx, Some(s.zeros_like()?)))
    }
}

/// A zero scalar depending on parameter `index`; its backward hands over the gradient the
/// recomputation left for it.
struct Attach {
    index: usize,
    grads: Arc<Mutex<Vec<Option<Tensor>>>>,
}

impl CustomOp1 for Attach {
    fn name(&self) -> &'static str {
        "dama-layer-param"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(1)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let dev = s.device();
        let z = dev.alloc_zeros::<f32>(1)?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(z, dev.clone()),
            Shape::from(1),
        ))
    }

    fn bwd(&self, _p: &Tensor, _res: &Tensor, _grad: &Tensor) -> Result<Option<Tensor>> {
        let mut slots = self.grads.lock().expect("layer gradients lock");
        match slots.get_mut(self.index) {
            Some(slot) => Ok(slot.take()),
            None => bail!("{NAME}: no gradient slot {}", self.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, grads, objective, rel_err};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A two-layer MLP block with a residual, reading its weights tracked or detached.
    fn block(w1: Tensor, w2: Tensor, calls: Arc<AtomicUsize>) -> Arc<Recompute> {
        Arc::new(move |x: &Tensor, track: bool| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (a, b) = if track {
                (w1.clone(), w2.clone())
            } else {
                (w1.detach(), w2.detach())
            };
            let h = crate::swiglu(&x.matmul(&a)?, &x.matmul(&a)?.neg()?)?;
            x + crate::rms_norm(
                &h.matmul(&b)?,
                &Tensor::ones(b.dim(1)?, x.dtype(), x.device())?,
                1e-5,
            )?
        })
    }

    #[test]
    fn values_and_gradients_equal_the_plain_graph_and_the_layer_runs_twice() {
        let mut rng = Rng::new(21);
        let x = rng.var(&[5, 8], 1.0, DType::F32).unwrap();
        let w1 = rng.var(&[8, 12], 0.3, DType::F32).unwrap();
        let w2 = rng.var(&[12, 8], 0.3, DType::F32).unwrap();
        let frozen = rng.randn(&[8, 8], 0.3, DType::F32).unwrap();
        let c = rng.randn(&[5, 8], 1.0, DType::F64).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let f = block(
            w1.as_tensor().clone(),
            w2.as_tensor().clone(),
            calls.clone(),
        );
        // two recomputed layers in a row, with a frozen matmul between them
        let h = recompute(
            &x,
            &[
                w1.as_tensor().clone(),
                w2.as_tensor().clone(),
                frozen.clone(),
            ],
            f.clone(),
        )
        .unwrap();
        let h = h.matmul(&frozen).unwrap();
        let y = recompute(
            &h,
            &[w1.as_tensor().clone(), w2.as_tensor().clone()],
            f.clone(),
        )
        .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "forward runs each layer once"
        );
        let want = f(&f(&x, true).unwrap().matmul(&frozen).unwrap(), true).unwrap();
        assert_eq!(rel_err(&y, &want), 0.0);
        calls.store(0, Ordering::SeqCst);
        let g = grads(&y, &c, &[&x, &w1, &w2]).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the backward recomputes each layer once"
        );
        let gw = grads(&want, &c, &[&x, &w1, &w2]).unwrap();
        for (k, (a, b)) in g.iter().zip(&gw).enumerate() {
            assert!(rel_err(a, b) < 1e-6, "grad {k}: {:e}", rel_err(a, b));
        }
    }

    #[test]
    fn an_output_that_is_a_view_comes_out_whole() {
        let mut rng = Rng::new(3);
        let x = rng.var(&[4, 6], 1.0, DType::F32).unwrap();
        let big = rng.randn(&[3, 4, 6], 1.0, DType::F32).unwrap();
        // rows 2.. of a larger buffer (offset ≠ 0), and a transposed view
        for y in [
            big.narrow(0, 2, 1).unwrap().squeeze(0).unwrap(),
            big.get(1).unwrap().t().unwrap().t().unwrap(),
        ] {
            let bwd: Arc<Backward> = Arc::new(|dy: &Tensor, _: &[bool], _: bool| {
                Ok(LayerGrads {
                    dx: Some(dy.clone()),
                    params: vec![],
                })
            });
            let got = with_backward(x.as_tensor(), y.clone(), &[], bwd).unwrap();
            assert_eq!(rel_err(&got, &y), 0.0);
        }
    }

    #[test]
    fn nothing_tracked_means_no_graph() {
        let mut rng = Rng::new(2);
        let x = rng.randn(&[3, 8], 1.0, DType::F32).unwrap();
        let (w1, w2) = (
            rng.randn(&[8, 4], 1.0, DType::F32).unwrap(),
            rng.randn(&[4, 8], 1.0, DType::F32).unwrap(),
        );
        let y = recompute(
            &x,
            &[w1.clone(), w2.clone()],
            block(w1, w2, Arc::new(AtomicUsize::new(0))),
        )
        .unwrap();
        assert!(!y.track_op());
    }

    /// A small attention + MLP layer on `(b·t, d)` rows, built from the fused ops: with candle's
    /// autograd, and outside the graph with a backward written from the explicit backward
    /// functions, wired in by `with_backward`.
    struct Mini {
        b: usize,
        t: usize,
        h: usize,
        hd: usize,
        cos: Tensor,
        sin: Tensor,
        mask: crate::AttnMask,
    }

    impl Mini {
        fn autograd(&self, x: &Tensor, p: &[Tensor]) -> Result<Tensor> {
            let [norm, wq, wk, wv, wa, wb] = p else {
                bail!("six parameters")
            };
            let n = crate::rms_norm(x, norm, 1e-5)?;
            let heads = |y: Tensor| y.reshape((self.b, self.t, self.h, self.hd));
            let q = crate::rope(&heads(n.matmul(wq)?)?, &self.cos, &self.sin)?;
            let k = crate::rope(&heads(n.matmul(wk)?)?, &self.cos, &self.sin)?;
            let v = heads(n.matmul(wv)?)?;
            let a = crate::attention(&q, &k, &v, &self.mask, 0.5)?;
            let x2 = (x + a.reshape(x.shape())?)?;
            x2.clone() + crate::swiglu(&x2.matmul(wa)?, &x2.matmul(wb)?)?
        }

        fn manual(self: &Arc<Self>, x: &Tensor, p: &[Tensor]) -> Result<Tensor> {
            let d: Vec<Tensor> = p.iter().map(|t| t.detach()).collect();
            let x0 = x.detach();
            let n = crate::rms_norm(&x0, &d[0], 1e-5)?;
            let heads = |y: Tensor| y.reshape((self.b, self.t, self.h, self.hd));
            let q = crate::rope(&heads(n.matmul(&d[1])?)?, &self.cos, &self.sin)?;
            let k = crate::rope(&heads(n.matmul(&d[2])?)?, &self.cos, &self.sin)?;
            let v = heads(n.matmul(&d[3])?)?.contiguous()?;
            let (a, lse) = crate::attention_forward(&q, &k, &v, &self.mask, 0.5)?;
            let x2 = (&x0 + a.reshape(x0.shape())?)?;
            let (g, u) = (x2.matmul(&d[4])?, x2.matmul(&d[5])?);
            let y = (&x2 + crate::swiglu(&g, &u)?)?;
            let me = self.clone();
            let bwd: Arc<Backward> = Arc::new(move |dy: &Tensor, need: &[bool], need_dx: bool| {
                let mut params = vec![None; 6];
                let (dg, du) = crate::swiglu_backward(&g, &u, dy, true, true)?;
                let (dg, du) = (dg.unwrap(), du.unwrap());
                params[4] = need[4].then(|| x2.t()?.matmul(&dg)).transpose()?;
                params[5] = need[5].then(|| x2.t()?.matmul(&du)).transpose()?;
                let dx2 = ((dy + dg.matmul(&d[4].t()?)?)? + du.matmul(&d[5].t()?)?)?;
                let da = dx2.reshape(a.shape())?;
                let (dq, dk, dv) =
                    crate::attention_backward(&q, &k, &v, &a, &lse, &da, &me.mask, 0.5)?;
                let flat = |t: Tensor| t.reshape(x2.shape());
                let dq = flat(crate::rope_backward(&dq, &me.cos, &me.sin)?)?;
                let dk = flat(crate::rope_backward(&dk, &me.cos, &me.sin)?)?;
                let dv = flat(dv)?;
                for (i, g) in [(1, &dq), (2, &dk), (3, &dv)] {
                    params[i] = need[i].then(|| n.t()?.matmul(g)).transpose()?;
                }
                let dn = ((dq.matmul(&d[1].t()?)? + dk.matmul(&d[2].t()?)?)?
                    + dv.matmul(&d[3].t()?)?)?;
                let (dxn, dw) = crate::rms_norm_backward(&x0, &d[0], &dn, 1e-5, need_dx, need[0])?;
                params[0] = dw;
                let dx = dxn.map(|g| g + &dx2).transpose()?;
                Ok(LayerGrads { dx, params })
            });
            with_backward(x, y, p, bwd)
        }
    }

    #[test]
    fn explicit_backward_functions_in_a_hand_written_layer_match_autograd() {
        let (b, t, h, hd) = (2, 5, 2, 4);
        let dm = h * hd;
        for dtype in [DType::F64, DType::F32] {
            let mut rng = Rng::new(8);
            let x = rng.var(&[b * t, dm], 1.0, dtype).unwrap();
            let mut vars = vec![
                Var::from_tensor(&(rng.randn(&[dm], 0.1, dtype).unwrap() + 1.0).unwrap()).unwrap(),
            ];
            for _ in 0..5 {
                vars.push(rng.var(&[dm, dm], 0.4, dtype).unwrap());
            }
            let (cos, sin) = (
                rng.randn(&[b, t, hd], 1.0, dtype).unwrap(),
                rng.randn(&[b, t, hd], 1.0, dtype).unwrap(),
            );
            // row 1 is padded after 3 tokens
            let mask = crate::AttnMask::causal(t, &[t, 3]).unwrap();
            let mini = Arc::new(Mini {
                b,
                t,
                h,
                hd,
                cos,
                sin,
                mask,
            });
            let c = rng.randn(&[b * t, dm], 1.0, DType::F64).unwrap();
            // all parameters tracked; then weight 2 frozen and x untracked
            for frozen in [false, true] {
                let params: Vec<Tensor> = vars
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if frozen && i == 2 {
                            v.as_tensor().detach()
                        } else {
                            v.as_tensor().clone()
                        }
                    })
                    .collect();
                let xin = if frozen {
                    x.as_tensor().detach()
                } else {
                    x.as_tensor().clone()
                };
                let want = mini.autograd(&xin, &params).unwrap();
                let got = mini.manual(&xin, &params).unwrap();
                assert!(rel_err(&want, &got) < 1e-6);
                let gw = objective(&want, &c).unwrap().backward().unwrap();
                let gg = objective(&got, &c).unwrap().backward().unwrap();
                for (i, p) in std::iter::once(&xin).chain(&params).enumerate() {
                    // candle's autograd also stores gradients for untracked inputs of its ops
                    if !p.track_op() {
                        assert!(gg.get(p).is_none(), "{i}: untracked, no gradient");
                        assert!(frozen && (i == 0 || i == 3), "{i}");
                        continue;
                    }
                    let e = rel_err(gw.get(p).unwrap(), gg.get(p).expect("a gradient"));
                    let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                    assert!(e < tol, "{dtype:?} {i}: {e:e}");
                }
            }
        }
    }
}

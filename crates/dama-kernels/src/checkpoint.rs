//! Activation checkpointing: run a function (a decoder layer) without keeping its intermediate
//! activations for the backward, and run it again, with a graph, when the backward reaches it.
//! Memory per layer drops from everything the layer's backward needs to its input and output;
//! the price is a second forward of the layer.
//!
//! candle has no hook for this, and a `CustomOp` returns gradients only for its (at most three)
//! arguments, while a layer has many weights. So the parameters are attached through tiny side
//! nodes: each tracked parameter `p_i` feeds an op returning a zero scalar, the scalars are
//! summed into `s`, and the result is `recompute(x, s)`. In the backward, candle reaches
//! `recompute` before `s` and the side nodes (they are its inputs), so its backward can run the
//! layer again from the saved `x`, backpropagate the output gradient through it once, return
//! `dx`, and leave each parameter's gradient where the side nodes pick it up.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, Var, bail,
};

use crate::io;

const NAME: &str = "dama-checkpoint";

/// The checkpointed function: `(input, track)` → output. With `track = false` it must record no
/// graph (read its weights through `detach`); with `track = true` it must read the same
/// weights as they are, so that gradients reach them.
pub type Recompute = dyn Fn(&Tensor, bool) -> Result<Tensor> + Send + Sync;

/// `f(x)` whose backward recomputes `f`. `params` are the tensors `f` reads that may need a
/// gradient (those that do not track one are skipped). Values and gradients equal `f(x, true)`
/// with a graph; only the memory and the time differ.
pub fn checkpoint(x: &Tensor, params: &[Tensor], f: Arc<Recompute>) -> Result<Tensor> {
    let y = f(&x.detach(), false)?;
    let tracked: Vec<Tensor> = params.iter().filter(|p| p.track_op()).cloned().collect();
    if tracked.is_empty() && !x.track_op() {
        return Ok(y);
    }
    let grads = Arc::new(Mutex::new(vec![None; tracked.len()]));
    let mut s = Tensor::zeros(1, DType::F32, x.device())?;
    for (i, p) in tracked.iter().enumerate() {
        s = (s + p.apply_op1(Attach {
            index: i,
            grads: grads.clone(),
        })?)?;
    }
    x.apply_op2(
        &s,
        Recomputed {
            f,
            output: y,
            params: tracked,
            grads,
        },
    )
}

/// Returns the precomputed output; its backward runs `f` again.
struct Recomputed {
    f: Arc<Recompute>,
    output: Tensor,
    params: Vec<Tensor>,
    grads: Arc<Mutex<Vec<Option<Tensor>>>>,
}

impl CustomOp2 for Recomputed {
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
        match io::clone_storage(&self.output)? {
            Storage::Cpu(s) => Ok((s, self.output.shape().clone())),
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
        match io::clone_storage(&self.output)? {
            Storage::Cuda(s) => Ok((s, self.output.shape().clone())),
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
        let leaf = Var::from_tensor(&x.detach())?;
        let y = (self.f)(leaf.as_tensor(), true)?;
        let g = (y * dy.detach())?.sum_all()?.backward()?;
        let mut slots = self.grads.lock().expect("checkpoint gradients lock");
        for (slot, p) in slots.iter_mut().zip(&self.params) {
            *slot = g.get(p).cloned();
        }
        let dx = if x.track_op() {
            g.get(leaf.as_tensor()).cloned()
        } else {
            None
        };
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
        "dama-checkpoint-param"
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
        let mut slots = self.grads.lock().expect("checkpoint gradients lock");
        match slots.get_mut(self.index) {
            Some(slot) => Ok(slot.take()),
            None => bail!("{NAME}: no gradient slot {}", self.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, grads, rel_err};
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
        // two checkpointed layers in a row, with a frozen matmul between them
        let h = checkpoint(
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
        let y = checkpoint(
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
    fn nothing_tracked_means_no_graph() {
        let mut rng = Rng::new(2);
        let x = rng.randn(&[3, 8], 1.0, DType::F32).unwrap();
        let (w1, w2) = (
            rng.randn(&[8, 4], 1.0, DType::F32).unwrap(),
            rng.randn(&[4, 8], 1.0, DType::F32).unwrap(),
        );
        let y = checkpoint(
            &x,
            &[w1.clone(), w2.clone()],
            block(w1, w2, Arc::new(AtomicUsize::new(0))),
        )
        .unwrap();
        assert!(!y.track_op());
    }
}

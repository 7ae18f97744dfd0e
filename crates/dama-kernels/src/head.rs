//! The answer-token log-prob head: `log softmax(h·Wᵀ)[y]` for each scored position, chunked
//! over the vocabulary so that the `(n, V)` logits never exist at once (LLaVA-7B: 32064
//! entries per token; a 16-pair step scores a few thousand tokens).
//!
//! Forward: per vocabulary chunk, one GEMM (`h·W_cᵀ`, in the model dtype, as transformers'
//! logits are) and one small kernel that folds the chunk into a running max, sum of
//! exponentials and the target's logit (an online log-sum-exp, in f32). Backward: the same
//! GEMM again, a kernel forming `G = g·(onehot(y) − softmax)` from the saved log-sum-exp, then
//! `dh += G·W_c` and `dW_c = Gᵀ·h`. The GEMMs are candle's (cuBLAS on the GPU, gemm on the
//! CPU); only the two chunk kernels are ours.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, bail};
use num_traits::Float;
use rayon::prelude::*;

use crate::elem::{Acc, Elem, acc_dtype, dispatch};
use crate::io;

const NAME: &str = "dama-token-logprobs";

/// Vocabulary rows per chunk: 8192 keeps a chunk of logits for a thousand scored tokens at
/// 32 MiB (f32) while each GEMM stays large enough to run at full speed.
pub const DEFAULT_VOCAB_CHUNK: usize = 8192;

/// Per-token log-probs `(n,)` (f32; f64 for f64 inputs) of `targets` `(n,)` (u32) under
/// `softmax(hidden·weightᵀ)`, `hidden` `(n, d)`, `weight` `(V, d)`, computed `chunk`
/// vocabulary rows at a time. Differentiable w.r.t. `hidden` and `weight`.
pub fn token_logprobs(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    chunk: usize,
) -> Result<Tensor> {
    let (n, d) = hidden.dims2()?;
    let (vocab, dw) = weight.dims2()?;
    if dw != d || targets.dims() != [n] || targets.dtype() != DType::U32 || chunk == 0 {
        bail!(
            "{NAME}: hidden {:?}, weight {:?}, targets {:?} {:?}, chunk {chunk}: expected (n, d), (V, d), (n,) u32, chunk > 0",
            hidden.dims(),
            weight.dims(),
            targets.dims(),
            targets.dtype()
        );
    }
    if hidden.dtype() != weight.dtype() {
        bail!(
            "{NAME}: hidden is {:?} but weight is {:?}",
            hidden.dtype(),
            weight.dtype()
        );
    }
    if let Some((i, y)) = targets
        .to_vec1::<u32>()?
        .into_iter()
        .enumerate()
        .find(|&(_, y)| y as usize >= vocab)
    {
        bail!("{NAME}: target {i} is token {y}, outside the vocabulary of {vocab}");
    }
    let targets = targets.contiguous()?;
    let (h, w) = (hidden.detach().contiguous()?, weight.detach().contiguous()?);
    let adt = acc_dtype(hidden.dtype());
    // state (n, 3): running max, running Σ exp(logit − max), target logit
    let mut state = Tensor::cat(
        &[
            Tensor::full(f32::NEG_INFINITY, (n, 1), hidden.device())?.to_dtype(adt)?,
            Tensor::zeros((n, 2), adt, hidden.device())?,
        ],
        1,
    )?;
    for c0 in (0..vocab).step_by(chunk) {
        let cs = chunk.min(vocab - c0);
        let logits = h.matmul(&w.narrow(0, c0, cs)?.t()?)?;
        state = fold_chunk(&state, &logits, &targets, c0)?;
    }
    let lse = (state.narrow(1, 0, 1)? + state.narrow(1, 1, 1)?.log()?)?.squeeze(1)?;
    let logp = (state.narrow(1, 2, 1)?.squeeze(1)? - &lse)?.contiguous()?;
    if !(hidden.track_op() || weight.track_op()) {
        return Ok(logp);
    }
    hidden.apply_op2(
        weight,
        TokenLogprobs {
            targets,
            chunk,
            result: logp,
            lse: Mutex::new(Some(lse)),
        },
    )
}

/// Attaches the precomputed forward to the graph; the backward redoes the chunked GEMMs.
struct TokenLogprobs {
    targets: Tensor,
    chunk: usize,
    result: Tensor,
    lse: Mutex<Option<Tensor>>,
}

impl CustomOp2 for TokenLogprobs {
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
        match io::precomputed(&self.result)? {
            (candle_core::Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => bail!("{NAME}: result is not on the CPU"),
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
        match io::precomputed(&self.result)? {
            (candle_core::Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => bail!("{NAME}: result is not on the GPU"),
        }
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (need_h, need_w) = (hidden.track_op(), weight.track_op());
        let lse = self.lse.lock().expect("lse lock").clone();
        let Some(lse) = lse else {
            bail!("{NAME}: backward without a saved log-sum-exp");
        };
        crate::profile::span(hidden.device(), "head.bwd", || {
            let (h, w) = (hidden.detach(), weight.detach());
            let (n, d) = h.dims2()?;
            let vocab = w.dim(0)?;
            let grad = grad.to_dtype(lse.dtype())?.contiguous()?;
            let mut dh = need_h
                .then(|| Tensor::zeros((n, d), lse.dtype(), h.device()))
                .transpose()?;
            let mut dw = Vec::new();
            for c0 in (0..vocab).step_by(self.chunk) {
                let cs = self.chunk.min(vocab - c0);
                let wc = w.narrow(0, c0, cs)?;
                let logits = h.matmul(&wc.t()?)?;
                let g = chunk_grad(&logits, &self.targets, c0, &lse, &grad)?;
                if let Some(acc) = dh.as_mut() {
                    *acc = (&*acc + g.matmul(&wc)?.to_dtype(lse.dtype())?)?;
                }
                if need_w {
                    dw.push(g.t()?.matmul(&h)?);
                }
            }
            let dh = dh.map(|t| t.to_dtype(h.dtype())).transpose()?;
            let dw = need_w.then(|| Tensor::cat(&dw, 0)).transpose()?;
            Ok((dh, dw))
        })
    }
}

/// Folds one chunk of logits `(n, cs)` (vocabulary ids `c0..c0 + cs`) into the state.
fn fold_chunk(state: &Tensor, logits: &Tensor, targets: &Tensor, c0: usize) -> Result<Tensor> {
    match logits.device() {
        Device::Cpu => dispatch!(
            NAME,
            logits.dtype(),
            fold_chunk_cpu(state, logits, targets, c0)
        ),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => crate::cuda::head::fold_chunk(state, logits, targets, c0),
        d => bail!("{NAME}: no kernel for device {d:?}"),
    }
}

/// `G = g·(onehot(y) − exp(logits − lse))` for one chunk, in the logits' dtype.
fn chunk_grad(
    logits: &Tensor,
    targets: &Tensor,
    c0: usize,
    lse: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    match logits.device() {
        Device::Cpu => dispatch!(
            NAME,
            logits.dtype(),
            chunk_grad_cpu(logits, targets, c0, lse, g)
        ),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => crate::cuda::head::chunk_grad(logits, targets, c0, lse, g),
        d => bail!("{NAME}: no kernel for device {d:?}"),
    }
}

fn rows_per_task(cs: usize) -> usize {
    (32768 / cs.max(1)).max(1)
}

fn fold_chunk_cpu<T: Elem>(
    state: &Tensor,
    logits: &Tensor,
    targets: &Tensor,
    c0: usize,
) -> Result<Tensor> {
    let (n, cs) = logits.dims2()?;
    let mut st: Vec<T::Acc> = state.flatten_all()?.to_vec1()?;
    let ys: Vec<u32> = targets.to_vec1()?;
    io::with_cpu(logits, NAME, |s, l| {
        let x = io::slice::<T>(s, l, NAME)?;
        st.par_chunks_mut(3)
            .zip(x.par_chunks(cs))
            .zip(ys.par_iter())
            .with_min_len(rows_per_task(cs))
            .for_each(|((st, row), &y)| {
                let m_chunk = row
                    .iter()
                    .fold(T::Acc::neg_infinity(), |m, v| m.max(v.acc()));
                let m = st[0].max(m_chunk);
                let s: T::Acc = row.iter().map(|v| (v.acc() - m).exp()).sum();
                st[1] = st[1] * (st[0] - m).exp() + s;
                st[0] = m;
                let y = y as usize;
                if (c0..c0 + cs).contains(&y) {
                    st[2] = row[y - c0].acc();
                }
            });
        Ok(())
    })?;
    io::cpu_tensor(st, (n, 3))
}

fn chunk_grad_cpu<T: Elem>(
    logits: &Tensor,
    targets: &Tensor,
    c0: usize,
    lse: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let (n, cs) = logits.dims2()?;
    let ys: Vec<u32> = targets.to_vec1()?;
    let lse: Vec<T::Acc> = lse.to_vec1()?;
    let g: Vec<T::Acc> = g.to_vec1()?;
    let mut out = vec![T::zero(); n * cs];
    io::with_cpu(logits, NAME, |s, l| {
        let x = io::slice::<T>(s, l, NAME)?;
        out.par_chunks_mut(cs)
            .zip(x.par_chunks(cs))
            .enumerate()
            .with_min_len(rows_per_task(cs))
            .for_each(|(i, (o, row))| {
                let (l, gi) = (lse[i], g[i]);
                for (o, v) in o.iter_mut().zip(row) {
                    *o = T::from_acc(-gi * (v.acc() - l).exp());
                }
                let y = ys[i] as usize;
                if (c0..c0 + cs).contains(&y) {
                    let p = (row[y - c0].acc() - l).exp();
                    o[y - c0] = T::from_acc(gi * (T::Acc::of(1.0) - p));
                }
            });
        Ok(())
    })?;
    io::cpu_tensor(out, (n, cs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composed;
    use crate::testing::{Rng, finite_difference_error, grads, objective, rel_err};
    use candle_core::Var;

    fn case(
        n: usize,
        d: usize,
        vocab: usize,
        dtype: DType,
        seed: u64,
    ) -> (Var, Var, Tensor, Tensor) {
        let mut rng = Rng::new(seed);
        let h = rng.var(&[n, d], 1.0, dtype).unwrap();
        let w = rng.var(&[vocab, d], 0.5, dtype).unwrap();
        let y: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        let y = Tensor::from_vec(y, n, &Device::Cpu).unwrap();
        let c = rng.randn(&[n], 1.0, DType::F64).unwrap();
        (h, w, y, c)
    }

    /// f32, chunk sizes that do and do not divide the vocabulary (and one chunk larger than
    /// it): log-probs and both gradients equal the full-logits composition.
    #[test]
    fn matches_the_full_logits_composition_for_any_chunking_in_f32() {
        for (n, d, vocab, chunk) in [
            (1, 3, 5, 2),
            (7, 16, 101, 32),
            (13, 9, 64, 64),
            (4, 8, 50, 1000),
        ] {
            let (h, w, y, c) = case(n, d, vocab, DType::F32, vocab as u64);
            let lp = token_logprobs(&h, &w, &y, chunk).unwrap();
            let want = composed::token_logprobs(&h, &w, &y).unwrap();
            assert_eq!(lp.dtype(), DType::F32);
            assert!(rel_err(&lp, &want) < 1e-6, "{:e}", rel_err(&lp, &want));
            let g = grads(&lp, &c, &[&h, &w]).unwrap();
            let gw = grads(&want, &c, &[&h, &w]).unwrap();
            for (k, (a, b)) in g.iter().zip(&gw).enumerate() {
                assert!(
                    rel_err(a, b) < 1e-5,
                    "chunk {chunk} grad {k}: {:e}",
                    rel_err(a, b)
                );
            }
        }
    }

    /// bf16: logits are rounded to bf16 like transformers' (the GEMM's output dtype), then
    /// everything is f32: log-probs match the bf16 composition to f32 rounding; gradients are
    /// within bf16 resolution of it.
    #[test]
    fn bf16_equals_the_bf16_composition() {
        let (h, w, y, c) = case(9, 32, 300, DType::BF16, 5);
        let lp = token_logprobs(&h, &w, &y, 128).unwrap();
        let want = composed::token_logprobs(&h, &w, &y).unwrap();
        assert_eq!(lp.dtype(), DType::F32);
        assert!(rel_err(&lp, &want) < 1e-5, "{:e}", rel_err(&lp, &want));
        let g = grads(&lp, &c, &[&h, &w]).unwrap();
        let gw = grads(&want, &c, &[&h, &w]).unwrap();
        for (a, b) in g.iter().zip(&gw) {
            assert_eq!(a.dtype(), DType::BF16);
            assert!(rel_err(a, b) < 1e-2, "{:e}", rel_err(a, b));
        }
    }

    #[test]
    fn gradients_equal_central_finite_differences_in_f64() {
        let (h, w, y, c) = case(3, 4, 11, DType::F64, 9);
        let lp = token_logprobs(&h, &w, &y, 4).unwrap();
        assert_eq!(lp.dtype(), DType::F64);
        let loss = || objective(&token_logprobs(&h, &w, &y, 4)?, &c)?.to_scalar::<f64>();
        let g = grads(&lp, &c, &[&h, &w]).unwrap();
        for (v, gr) in [(&h, &g[0]), (&w, &g[1])] {
            let e = finite_difference_error(v, gr, 8, 1e-6, 1e-2, &loss).unwrap();
            assert!(e < 1e-6, "{e:e}");
        }
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient_no_graph_without_vars_and_bad_targets_are_errors() {
        let (h, w, y, c) = case(4, 6, 20, DType::F32, 2);
        let frozen = w.as_tensor().detach();
        let lp = token_logprobs(&h, &frozen, &y, 8).unwrap();
        let g = objective(&lp, &c).unwrap().backward().unwrap();
        assert!(g.get(&frozen).is_none() && g.get(h.as_tensor()).is_some());
        let plain = token_logprobs(&h.as_tensor().detach(), &frozen, &y, 8).unwrap();
        assert!(!plain.track_op());
        let bad = Tensor::new(&[0u32, 1, 20, 3], &Device::Cpu).unwrap();
        let e = token_logprobs(&h, &w, &bad, 8).unwrap_err().to_string();
        assert!(e.contains("target 2 is token 20"), "{e}");
    }
}

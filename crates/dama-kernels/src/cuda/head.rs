//! The chunked log-prob head's two per-chunk kernels on CUDA (`kernels/head.cu`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::{DType, Result, Tensor, bail};

use super::{HEAD, blocks_for, cuda_dispatch, grid, kname, launch, tensor, view, with_cuda};

fn f32_only(t: &Tensor, what: &str) -> Result<()> {
    if t.dtype() != DType::F32 {
        bail!("token_logprobs on CUDA: {what} must be f32 (f64 models run on the CPU)");
    }
    Ok(())
}

pub(crate) fn fold_chunk(
    state: &Tensor,
    logits: &Tensor,
    targets: &Tensor,
    c0: usize,
) -> Result<Tensor> {
    fn run<T: CudaDType + DeviceRepr>(
        state: &Tensor,
        logits: &Tensor,
        targets: &Tensor,
        c0: usize,
    ) -> Result<Tensor> {
        f32_only(state, "the running state")?;
        let (n, cs) = logits.dims2()?;
        let state = state.contiguous()?;
        with_cuda(&state, "token_logprobs", |ss, sl| {
            with_cuda(logits, "token_logprobs", |ls, ll| {
                with_cuda(targets, "token_logprobs", |ts, tl| {
                    let dev = ls.device();
                    let sv = view::<f32>(ss, sl, "token_logprobs")?;
                    let lv = view::<T>(ls, ll, "token_logprobs")?;
                    let tv = view::<u32>(ts, tl, "token_logprobs")?;
                    // SAFETY: the kernel writes all three entries of every row.
                    let out = unsafe { dev.alloc::<f32>(n * 3)? };
                    let name = kname("fold_chunk", logits.dtype(), "")?;
                    let cfg = grid((blocks_for(n, 1), 1, 1), 256);
                    launch!(
                        dev,
                        HEAD,
                        name,
                        cfg,
                        [&lv, &tv, &sv, &out],
                        [n as i32, cs as i32, c0 as i32]
                    );
                    Ok(tensor(out, dev, (n, 3)))
                })
            })
        })
    }
    let logits = logits.contiguous()?;
    cuda_dispatch!(
        "token_logprobs",
        logits.dtype(),
        run(state, &logits, targets, c0)
    )
}

pub(crate) fn chunk_grad(
    logits: &Tensor,
    targets: &Tensor,
    c0: usize,
    lse: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    fn run<T: CudaDType + DeviceRepr>(
        logits: &Tensor,
        targets: &Tensor,
        c0: usize,
        lse: &Tensor,
        g: &Tensor,
    ) -> Result<Tensor> {
        f32_only(lse, "the log-sum-exp")?;
        f32_only(g, "the incoming gradient")?;
        let (n, cs) = logits.dims2()?;
        let (lse, g) = (lse.contiguous()?, g.contiguous()?);
        with_cuda(logits, "token_logprobs", |ls, ll| {
            with_cuda(targets, "token_logprobs", |ts, tl| {
                with_cuda(&lse, "token_logprobs", |es, el| {
                    with_cuda(&g, "token_logprobs", |gs, gl| {
                        let dev = ls.device();
                        let lv = view::<T>(ls, ll, "token_logprobs")?;
                        let tv = view::<u32>(ts, tl, "token_logprobs")?;
                        let ev = view::<f32>(es, el, "token_logprobs")?;
                        let gv = view::<f32>(gs, gl, "token_logprobs")?;
                        // SAFETY: every element is written by the kernel.
                        let out = unsafe { dev.alloc::<T>((n * cs).max(1))? };
                        let name = kname("chunk_grad", logits.dtype(), "")?;
                        let cfg = grid((blocks_for(n * cs, 256), 1, 1), 256);
                        launch!(
                            dev,
                            HEAD,
                            name,
                            cfg,
                            [&lv, &tv, &ev, &gv, &out],
                            [n as i32, cs as i32, c0 as i32]
                        );
                        Ok(tensor(out, dev, (n, cs)))
                    })
                })
            })
        })
    }
    let logits = logits.contiguous()?;
    cuda_dispatch!(
        "token_logprobs",
        logits.dtype(),
        run(&logits, targets, c0, lse, g)
    )
}

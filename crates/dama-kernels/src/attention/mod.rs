//! Masked scaled-dot-product attention, flash-style: an online softmax over blocks of keys in
//! the forward, and a backward that recomputes the probabilities from the saved log-sum-exp,
//! so that no `t×t` matrix is ever kept (the eager composition keeps three per head).
//!
//! Layout `(b, t, heads, d)` for queries, keys, values and output (read through strides, so the
//! projections' outputs need no transpose); grouped-query attention when k/v have fewer heads
//! (query head `h` uses key/value head `h / (heads_q / heads_kv)`, transformers' `repeat_kv`).
//! The mask is an [`AttnMask`]. A query with no allowed key gets a zero output and no gradient
//! (the eager composition, whose −1e30 mask makes its softmax uniform, outputs the mean value
//! there; both are padding positions nobody reads).

mod cpu;

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, bail};

use crate::elem::{Elem, dispatch};
use crate::io::{self, View4};
use crate::mask::AttnMask;

const NAME: &str = "dama-attention";

/// Which CUDA attention kernels run (CPU attention is unaffected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaAttention {
    /// The plain-FMA kernels (`kernels/attention.cu`): any head dimension ≤ 256, f32 and bf16.
    Fma,
    /// The tensor-core kernels (`kernels/attention_mma.cu`, `mma.sync` bf16 with f32
    /// accumulation) where they apply: bf16 with a head dimension in
    /// [`MMA_HEAD_DIMS`]; everything else still runs [`CudaAttention::Fma`].
    Mma,
    /// The same tensor-core kernels with their mma fragments loaded from shared memory by
    /// `ldmatrix` (one instruction per four 8×8 matrices, instead of four to eight scalar
    /// loads each), and forward and dQ kernels whose key/value tiles are double-buffered with
    /// `cp.async`.
    /// Checked against a double-precision reference in the CPU emulation (`kernels/emu`), not
    /// yet on a GPU: opt-in (`DAMA_CUDA_ATTN=ldmatrix`) until it is.
    Ldmatrix,
}

/// Head dimensions the tensor-core attention kernels are compiled for.
pub const MMA_HEAD_DIMS: [usize; 5] = [32, 64, 80, 96, 128];

/// 0: not set (read `DAMA_CUDA_ATTN`), 1: Fma, 2: Mma, 3: Ldmatrix.
static CUDA_ATTENTION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The default while `DAMA_CUDA_ATTN` is unset: the tensor-core kernels (where they apply),
/// since they passed the CUDA-vs-CPU checks on an H200 (2026-11-26, 20/20) and run the
/// attention 5–6× faster than the FMA ones. `DAMA_CUDA_ATTN=fma` keeps the FMA kernels.
const DEFAULT_CUDA_ATTENTION: CudaAttention = CudaAttention::Mma;

/// Selects the CUDA attention kernels for the whole process (`None`: back to the environment
/// variable `DAMA_CUDA_ATTN=fma|mma|ldmatrix`, else the default).
pub fn set_cuda_attention(kind: Option<CudaAttention>) {
    let v = match kind {
        None => 0,
        Some(CudaAttention::Fma) => 1,
        Some(CudaAttention::Mma) => 2,
        Some(CudaAttention::Ldmatrix) => 3,
    };
    CUDA_ATTENTION.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The CUDA attention kernels selected: [`set_cuda_attention`], else `DAMA_CUDA_ATTN`
/// (`fma`, `mma` or `ldmatrix`), else the default ([`CudaAttention::Mma`]; bf16 with a head dimension
/// outside [`MMA_HEAD_DIMS`], and f32, run the FMA kernels either way).
pub fn cuda_attention() -> CudaAttention {
    match CUDA_ATTENTION.load(std::sync::atomic::Ordering::Relaxed) {
        1 => CudaAttention::Fma,
        2 => CudaAttention::Mma,
        3 => CudaAttention::Ldmatrix,
        _ => match std::env::var("DAMA_CUDA_ATTN").as_deref() {
            Ok("mma") => CudaAttention::Mma,
            Ok("ldmatrix") => CudaAttention::Ldmatrix,
            Ok("fma") => CudaAttention::Fma,
            _ => DEFAULT_CUDA_ATTENTION,
        },
    }
}

/// The CUDA kernels attention on `dtype` inputs with head dimension `d` runs under the
/// current selection: `"mma"`, `"mma_ldsm"` (tensor cores, fragments by `ldmatrix`) or
/// `"fma"`.
pub fn cuda_attention_path(dtype: candle_core::DType, d: usize) -> &'static str {
    let tensor_cores = dtype == candle_core::DType::BF16 && MMA_HEAD_DIMS.contains(&d);
    match cuda_attention() {
        CudaAttention::Mma if tensor_cores => "mma",
        CudaAttention::Ldmatrix if tensor_cores => "mma_ldsm",
        _ => "fma",
    }
}

/// `softmax(scale·q·kᵀ + mask)·v` for `q` `(b, t, hq, d)`, `k`/`v` `(b, t, hkv, d)` with `hkv`
/// dividing `hq`. Returns a contiguous `(b, t, hq, d)` tensor in the input dtype; scores,
/// softmax and the value sum run in f32 (f64 for f64).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    scale: f64,
) -> Result<Tensor> {
    check(q, k, v, mask)?;
    let (q, k, v) = (
        io::last_dim_contiguous(q)?,
        io::last_dim_contiguous(k)?,
        io::last_dim_contiguous(v)?,
    );
    q.apply_op3(
        &k,
        &v,
        FlashAttention {
            mask: mask.clone(),
            scale,
            lse: Mutex::new(None),
        },
    )
}

/// [`attention`] outside candle's graph, for a hand-written layer backward: returns the
/// output and the log-sum-exp `(b, t, hq)` (f32, f64 for f64) that [`attention_backward`]
/// recomputes the probabilities from.
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    scale: f64,
) -> Result<(Tensor, Tensor)> {
    check(q, k, v, mask)?;
    let op = FlashAttention {
        mask: mask.clone(),
        scale,
        lse: Mutex::new(None),
    };
    let out = io::last_dim_contiguous(q)?.apply_op3_no_bwd(
        &io::last_dim_contiguous(k)?,
        &io::last_dim_contiguous(v)?,
        &op,
    )?;
    let lse = op.lse.lock().expect("lse lock").take();
    match lse {
        Some(lse) => Ok((out, lse)),
        None => bail!("{NAME}: the forward kept no log-sum-exp"),
    }
}

/// Gradients `(dq, dk, dv)` of [`attention`], outside candle's graph, from the inputs, the
/// output and log-sum-exp of [`attention_forward`], and the output gradient `dout`. Each is
/// contiguous in its input's `(b, t, heads, d)` shape.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    mask: &AttnMask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    check(q, k, v, mask)?;
    if out.dims() != q.dims() || dout.dims() != q.dims() {
        bail!(
            "{NAME}: out {:?} and dout {:?} must have q's shape {:?}",
            out.dims(),
            dout.dims(),
            q.dims()
        );
    }
    let c = io::last_dim_contiguous;
    let (q, k, v, out, dout) = (c(q)?, c(k)?, c(v)?, c(out)?, c(dout)?);
    match q.device() {
        Device::Cpu => dispatch!(
            NAME,
            q.dtype(),
            backward_cpu(&q, &k, &v, &out, &dout, lse, mask, scale)
        ),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            crate::cuda::attention::backward(&q, &k, &v, &out, &dout, lse, mask, scale)
        }
        d => bail!("{NAME}: no kernel for device {d:?}"),
    }
}

fn check(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttnMask) -> Result<()> {
    let (b, t, hq, d) = q.dims4()?;
    let (bk, tk, hkv, dk) = k.dims4()?;
    if (bk, tk, dk) != (b, t, d) || v.dims() != k.dims() {
        bail!(
            "{NAME}: q {:?}, k {:?} and v {:?} must share batch, length and head dimension, k and v their shape",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if hkv == 0 || hq % hkv != 0 {
        bail!("{NAME}: {hq} query heads are not a multiple of {hkv} key/value heads");
    }
    if (mask.rows(), mask.seq_len()) != (b, t) {
        bail!(
            "{NAME}: the mask is for {} rows × {} tokens, the inputs have {b} × {t}",
            mask.rows(),
            mask.seq_len()
        );
    }
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        bail!(
            "{NAME}: q, k, v dtypes differ ({:?}, {:?}, {:?})",
            q.dtype(),
            k.dtype(),
            v.dtype()
        );
    }
    Ok(())
}

struct FlashAttention {
    mask: AttnMask,
    scale: f64,
    /// Log-sum-exp of every (row, query, head), `(b, t, hq)` in f32 (f64): what the backward
    /// recomputes the probabilities from. Written by the forward.
    lse: Mutex<Option<Tensor>>,
}

fn view(l: &Layout) -> Result<View4> {
    View4::of(l).ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: strided last dim")))
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            op: &FlashAttention,
            (qs, ql): (&CpuStorage, &Layout),
            (ks, kl): (&CpuStorage, &Layout),
            (vs, vl): (&CpuStorage, &Layout),
        ) -> Result<(CpuStorage, Shape)> {
            let (qv, kv, vv) = (view(ql)?, view(kl)?, view(vl)?);
            let (out, lse) = cpu::forward(
                cpu::Input::new(io::from_offset::<T>(qs, ql)?, qv),
                cpu::Input::new(io::from_offset::<T>(ks, kl)?, kv),
                cpu::Input::new(io::from_offset::<T>(vs, vl)?, vv),
                op.mask.spans(),
                op.scale,
            );
            let [b, t, hq, _] = qv.dims;
            *op.lse.lock().expect("lse lock") = Some(io::cpu_tensor(lse, (b, t, hq))?);
            Ok((T::to_cpu_storage_owned(out), Shape::from(qv.dims.to_vec())))
        }
        use candle_core::backend::BackendStorage;
        dispatch!(NAME, qs.dtype(), run(self, (qs, ql), (ks, kl), (vs, vl)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (out, lse) =
            crate::cuda::attention::forward((qs, ql), (ks, kl), (vs, vl), &self.mask, self.scale)?;
        *self.lse.lock().expect("lse lock") = Some(lse);
        Ok(out)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !(q.track_op() || k.track_op() || v.track_op()) {
            return Ok((None, None, None));
        }
        let lse = self.lse.lock().expect("lse lock").clone();
        let Some(lse) = lse else {
            bail!("{NAME}: backward before forward (no saved log-sum-exp)");
        };
        let (dq, dk, dv) = attention_backward(q, k, v, out, &lse, dout, &self.mask, self.scale)?;
        let keep = |g: Tensor, arg: &Tensor| -> Result<Option<Tensor>> {
            Ok(arg.track_op().then_some(g.reshape(arg.shape())?))
        };
        Ok((keep(dq, q)?, keep(dk, k)?, keep(dv, v)?))
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_cpu<T: Elem>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    dout: &Tensor,
    lse: &Tensor,
    mask: &AttnMask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let lse: Vec<T::Acc> = lse.flatten_all()?.to_vec1()?;
    // Read locks on the five inputs for the duration of the kernel (nothing writes them).
    let locked: Vec<_> = [q, k, v, out, dout]
        .iter()
        .map(|t| t.storage_and_layout())
        .collect();
    let mut inputs = Vec::with_capacity(5);
    for (storage, layout) in &locked {
        let Storage::Cpu(s) = &**storage else {
            bail!("{NAME}: expected CPU tensors");
        };
        inputs.push(cpu::Input::new(
            io::from_offset::<T>(s, layout)?,
            view(layout)?,
        ));
    }
    let [qi, ki, vi, oi, gi] = <[cpu::Input<'_, T>; 5]>::try_from(inputs)
        .map_err(|_| candle_core::Error::Msg("five inputs".into()))?;
    let (qd, kd) = (qi.view.dims, ki.view.dims);
    let (dq, dk, dv) = cpu::backward(qi, ki, vi, oi, gi, &lse, mask.spans(), scale);
    drop(locked);
    Ok((
        io::cpu_tensor(dq, qd.to_vec())?,
        io::cpu_tensor(dk, kd.to_vec())?,
        io::cpu_tensor(dv, kd.to_vec())?,
    ))
}

#[cfg(test)]
mod tests;

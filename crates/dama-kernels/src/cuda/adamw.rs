//! The fused AdamW update on CUDA (`kernels/adamw.cu`): one kernel per variable, `adamw_*`
//! for f32 moments, `adamw8_*` for 8-bit ones.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::{CudaStorage, DType, Layout, Result, bail};

use super::{ADAMW, blocks_for, grid, launch, suffix, view};
use crate::adamw::state::Args;
use crate::quant8;

const THREADS: usize = 256;
/// Threads per block of the 8-bit kernel (`ADAMW8_THREADS`: 8 elements each, one
/// quantisation block of 2048 per CUDA block).
const THREADS8: usize = 256;

/// `state` (f32, contiguous: `[master | m | v]`, or `[master | absmax_m | absmax_v]` with
/// `codes`), the 8-bit codes (u8, `2·n`), the variable `p` (f32 or bf16, contiguous) and the
/// gradient (f32 or bf16, contiguous): see `adamw::AdamWState::update`.
pub(crate) fn update(
    state: (&mut CudaStorage, &Layout),
    grad: (&CudaStorage, &Layout),
    codes: Option<(&mut CudaStorage, &Layout)>,
    p: (&mut CudaStorage, &Layout),
    args: &Args<'_>,
) -> Result<()> {
    match p.0.dtype() {
        DType::F32 => run::<f32>(state, grad, codes, p, args),
        DType::BF16 => run::<half::bf16>(state, grad, codes, p, args),
        d => bail!("adamw: the CUDA kernel takes f32 or bf16 variables, not {d:?}"),
    }
}

fn run<P: CudaDType + DeviceRepr>(
    (state, sl): (&mut CudaStorage, &Layout),
    (grad, gl): (&CudaStorage, &Layout),
    codes: Option<(&mut CudaStorage, &Layout)>,
    (p, pl): (&mut CudaStorage, &Layout),
    args: &Args<'_>,
) -> Result<()> {
    let (s, has_master, sr_key) = (args.step, args.has_master, args.sr_key);
    if sr_key.is_some() && (has_master || p.dtype() != DType::BF16) {
        bail!("adamw: stochastic rounding needs a bf16 variable without a master copy");
    }
    let n = pl.shape().elem_count();
    let eight = codes.is_some();
    let len = if eight { 2 * quant8::blocks(n) } else { 2 * n } + if has_master { n } else { 0 };
    let dev = state.device().clone();
    let name = format!(
        "{}_{}_{}",
        if eight { "adamw8" } else { "adamw" },
        suffix(p.dtype(), "adamw")?,
        suffix(grad.dtype(), "adamw")?
    );
    if gl.shape().elem_count() != n {
        bail!("adamw: gradient and variable sizes differ");
    }
    let Some((a, b)) = sl.contiguous_offsets().filter(|(a, b)| b - a == len) else {
        bail!("adamw: the state buffer must be contiguous, {len} elements")
    };
    let Some((pa, pb)) = pl.contiguous_offsets() else {
        bail!("adamw: the variable must be contiguous")
    };
    let mut sv = state.as_cuda_slice_mut::<f32>()?.slice_mut(a..b);
    let mut pv = p.as_cuda_slice_mut::<P>()?.slice_mut(pa..pb);
    let scalars = (
        n as i64,
        has_master as i32,
        s.weight_decay as i32,
        s.decay,
        s.beta1,
        s.one_minus_beta1,
        s.beta2,
        s.one_minus_beta2,
        s.inv_bias_correction2_sqrt,
        s.eps,
        s.step_size,
        sr_key.is_some() as i32,
        sr_key.unwrap_or(0),
        s.grad_scale.is_some() as i32,
        s.grad_scale.unwrap_or(1.0),
    );
    macro_rules! go {
        ($cfg:expr, [$($buf:expr),*]) => {{
            let cfg = $cfg;
            match grad.dtype() {
                DType::F32 => {
                    let g = view::<f32>(grad, gl, "adamw")?;
                    launch!(dev, ADAMW, name, cfg, [$($buf,)* &g], [
                        scalars.0, scalars.1, scalars.2, scalars.3, scalars.4, scalars.5,
                        scalars.6, scalars.7, scalars.8, scalars.9, scalars.10, scalars.11,
                        scalars.12, scalars.13, scalars.14
                    ])
                }
                DType::BF16 => {
                    let g = view::<half::bf16>(grad, gl, "adamw")?;
                    launch!(dev, ADAMW, name, cfg, [$($buf,)* &g], [
                        scalars.0, scalars.1, scalars.2, scalars.3, scalars.4, scalars.5,
                        scalars.6, scalars.7, scalars.8, scalars.9, scalars.10, scalars.11,
                        scalars.12, scalars.13, scalars.14
                    ])
                }
                d => bail!("adamw: the CUDA kernel takes f32 or bf16 gradients, not {d:?}"),
            }
        }};
    }
    match codes {
        Some((c, cl)) => {
            let Some((ca, cb)) = cl.contiguous_offsets().filter(|(a, b)| b - a == 2 * n) else {
                bail!("adamw: the codes must be contiguous, 2·n elements")
            };
            let mut cv = c.as_cuda_slice_mut::<u8>()?.slice_mut(ca..cb);
            // one CUDA block per quantisation block (a grid-stride loop past 65535·16)
            let cfg = grid((blocks_for(quant8::blocks(n), 1), 1, 1), THREADS8 as u32);
            go!(cfg, [&mut sv, &mut cv, &mut pv])
        }
        None => {
            // ADAMW_U (4) elements per thread (kernels/adamw.cu)
            let cfg = grid((blocks_for(n.div_ceil(4), THREADS), 1, 1), THREADS as u32);
            go!(cfg, [&mut sv, &mut pv])
        }
    }
    Ok(())
}

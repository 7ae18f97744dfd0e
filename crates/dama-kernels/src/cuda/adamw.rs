//! The fused AdamW update on CUDA (`kernels/adamw.cu`): one kernel per variable.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::{CudaStorage, DType, Layout, Result, bail};

use super::{ADAMW, blocks_for, grid, launch, suffix, view};
use crate::adamw::AdamWStep;

const THREADS: usize = 256;

/// `state` (f32, `k·n` contiguous elements), the variable `p` (f32 or bf16, contiguous) and the
/// gradient (f32 or bf16, contiguous): see `adamw::AdamWState::update`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn update(
    state: &mut CudaStorage,
    sl: &Layout,
    grad: &CudaStorage,
    gl: &Layout,
    p: &mut CudaStorage,
    pl: &Layout,
    s: &AdamWStep,
    has_master: bool,
    sr_key: Option<u64>,
) -> Result<()> {
    #[allow(clippy::too_many_arguments)]
    fn run<P: CudaDType + DeviceRepr>(
        state: &mut CudaStorage,
        sl: &Layout,
        grad: &CudaStorage,
        gl: &Layout,
        p: &mut CudaStorage,
        pl: &Layout,
        s: &AdamWStep,
        has_master: bool,
        sr_key: Option<u64>,
    ) -> Result<()> {
        if sr_key.is_some() && (has_master || p.dtype() != DType::BF16) {
            bail!("adamw: stochastic rounding needs a bf16 variable without a master copy");
        }
        let n = pl.shape().elem_count();
        let k = if has_master { 3 } else { 2 };
        let dev = state.device().clone();
        let name = format!(
            "adamw_{}_{}",
            suffix(p.dtype(), "adamw")?,
            suffix(grad.dtype(), "adamw")?
        );
        if gl.shape().elem_count() != n {
            bail!("adamw: gradient and variable sizes differ");
        }
        let Some((a, b)) = sl.contiguous_offsets().filter(|(a, b)| b - a == k * n) else {
            bail!("adamw: the state buffer must be contiguous, {k}·n elements")
        };
        let Some((pa, pb)) = pl.contiguous_offsets() else {
            bail!("adamw: the variable must be contiguous")
        };
        let mut sv = state.as_cuda_slice_mut::<f32>()?.slice_mut(a..b);
        let mut pv = p.as_cuda_slice_mut::<P>()?.slice_mut(pa..pb);
        // ADAMW_U (4) elements per thread (kernels/adamw.cu)
        let cfg = grid((blocks_for(n.div_ceil(4), THREADS), 1, 1), THREADS as u32);
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
            ($g:expr) => {{
                let g = $g;
                launch!(
                    dev,
                    ADAMW,
                    name,
                    cfg,
                    [&mut sv, &mut pv, &g],
                    [
                        scalars.0, scalars.1, scalars.2, scalars.3, scalars.4, scalars.5,
                        scalars.6, scalars.7, scalars.8, scalars.9, scalars.10, scalars.11,
                        scalars.12, scalars.13, scalars.14
                    ]
                )
            }};
        }
        match grad.dtype() {
            DType::F32 => go!(view::<f32>(grad, gl, "adamw")?),
            DType::BF16 => go!(view::<half::bf16>(grad, gl, "adamw")?),
            d => bail!("adamw: the CUDA kernel takes f32 or bf16 gradients, not {d:?}"),
        }
        Ok(())
    }
    match p.dtype() {
        DType::F32 => run::<f32>(state, sl, grad, gl, p, pl, s, has_master, sr_key),
        DType::BF16 => run::<half::bf16>(state, sl, grad, gl, p, pl, s, has_master, sr_key),
        d => bail!("adamw: the CUDA kernel takes f32 or bf16 variables, not {d:?}"),
    }
}

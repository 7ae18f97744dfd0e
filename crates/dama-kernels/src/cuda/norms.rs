//! RMSNorm forward / backward and LayerNorm forward on CUDA (`kernels/norms.cu`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::{CudaStorage, Layout, Result, Shape, Tensor, bail};

use super::{NORMS, blocks_for, cuda_dispatch, grid, kname, launch, tensor, view, with_cuda};

/// Largest row the backward keeps in registers (256 threads × 32 columns).
const MAX_BWD_D: usize = 8192;
/// Blocks of the backward's row loop: each writes one partial weight-gradient row.
const BWD_BLOCKS: usize = 264;

pub(crate) fn rms_norm_fwd(
    xs: &CudaStorage,
    xl: &Layout,
    ws: &CudaStorage,
    wl: &Layout,
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        eps: f64,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = xs.device();
        let x = view::<T>(xs, xl, "rms_norm")?;
        let w = view::<T>(ws, wl, "rms_norm")?;
        let (n, d) = (xl.shape().elem_count(), wl.shape().elem_count());
        let rows = n / d;
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<T>(n)? };
        let name = kname("rms_norm_fwd", xs.dtype(), "")?;
        let cfg = grid((blocks_for(rows, 1), 1, 1), 256);
        launch!(
            dev,
            NORMS,
            name,
            cfg,
            [&x, &w, &y],
            [rows as i32, d as i32, eps as f32]
        );
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }
    cuda_dispatch!("rms_norm", xs.dtype(), run(xs, xl, ws, wl, eps))
}

pub(crate) fn rms_norm_bwd(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    eps: f64,
    need_dx: bool,
    need_dw: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    fn run<T: CudaDType + DeviceRepr>(
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        eps: f64,
        need_dx: bool,
        need_dw: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let rows = x.elem_count() / d;
        if d > MAX_BWD_D {
            bail!("rms_norm backward on CUDA: rows of {d} > {MAX_BWD_D}");
        }
        let blocks = rows.clamp(1, BWD_BLOCKS);
        with_cuda(x, "rms_norm", |xs, xl| {
            with_cuda(w, "rms_norm", |ws, wl| {
                with_cuda(dy, "rms_norm", |gs, gl| {
                    let dev = xs.device();
                    let (xv, wv) = (
                        view::<T>(xs, xl, "rms_norm")?,
                        view::<T>(ws, wl, "rms_norm")?,
                    );
                    let gv = view::<T>(gs, gl, "rms_norm")?;
                    // SAFETY: written by the kernel where used (need_dx / need_dw), else unread.
                    let dx = unsafe { dev.alloc::<T>(if need_dx { rows * d } else { 1 })? };
                    let partial =
                        unsafe { dev.alloc::<f32>(if need_dw { blocks * d } else { 1 })? };
                    let name = kname("rms_norm_bwd", x.dtype(), "")?;
                    let cfg = grid((blocks as u32, 1, 1), 256);
                    launch!(
                        dev,
                        NORMS,
                        name,
                        cfg,
                        [&xv, &wv, &gv, &dx, &partial],
                        [
                            rows as i32,
                            d as i32,
                            eps as f32,
                            need_dx as i32,
                            need_dw as i32
                        ]
                    );
                    let dw = if need_dw {
                        let dw = unsafe { dev.alloc::<T>(d)? };
                        let name = kname("column_sum", x.dtype(), "")?;
                        let cfg = grid((blocks_for(d, 256), 1, 1), 256);
                        launch!(
                            dev,
                            NORMS,
                            name,
                            cfg,
                            [&partial, &dw],
                            [blocks as i32, d as i32]
                        );
                        Some(tensor(dw, dev, w.shape()))
                    } else {
                        None
                    };
                    let dx = need_dx.then(|| tensor(dx, dev, x.shape()));
                    Ok((dx, dw))
                })
            })
        })
    }
    cuda_dispatch!("rms_norm", x.dtype(), run(x, w, dy, eps, need_dx, need_dw))
}

pub(crate) fn layer_norm_fwd(
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        (xs, xl): (&CudaStorage, &Layout),
        (ws, wl): (&CudaStorage, &Layout),
        (bs, bl): (&CudaStorage, &Layout),
        eps: f64,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = xs.device();
        let x = view::<T>(xs, xl, "layer_norm")?;
        let w = view::<T>(ws, wl, "layer_norm")?;
        let b = view::<T>(bs, bl, "layer_norm")?;
        let (n, d) = (xl.shape().elem_count(), wl.shape().elem_count());
        let rows = n / d;
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<T>(n)? };
        let name = kname("layer_norm_fwd", xs.dtype(), "")?;
        let cfg = grid((blocks_for(rows, 1), 1, 1), 256);
        launch!(
            dev,
            NORMS,
            name,
            cfg,
            [&x, &w, &b, &y],
            [rows as i32, d as i32, eps as f32]
        );
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }
    cuda_dispatch!(
        "layer_norm",
        xs.dtype(),
        run((xs, xl), (ws, wl), (bs, bl), eps)
    )
}

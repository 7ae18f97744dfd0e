//! RoPE, SwiGLU and quick-GELU on CUDA (`kernels/pointwise.cu`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Tensor};

use super::{
    POINTWISE, blocks_for, cuda_dispatch, from_offset, grid, kname, launch, tensor, view, with_cuda,
};
use crate::io::View4;
use crate::rope::Direction;

const THREADS: usize = 256;

#[allow(clippy::too_many_arguments)]
fn rope_launch<T: CudaDType + DeviceRepr>(
    dev: &CudaDevice,
    dtype: DType,
    src: &CudaView<'_, T>,
    v: View4,
    cos: &CudaView<'_, T>,
    sin: &CudaView<'_, T>,
    batched: bool,
    dir: Direction,
) -> Result<CudaSlice<T>> {
    let [b, t, h, d] = v.dims;
    let n = b * t * h * d;
    // SAFETY: every element is written by the kernel (one thread per pair of halves).
    let out = unsafe { dev.alloc::<T>(n.max(1))? };
    let name = kname("rope", dtype, "")?;
    let cfg = grid((blocks_for(n / 2, THREADS), 1, 1), THREADS as u32);
    let [s0, s1, s2] = v.strides.map(|s| s as i64);
    launch!(
        dev,
        POINTWISE,
        name,
        cfg,
        [src, cos, sin, &out],
        [
            b as i32,
            t as i32,
            h as i32,
            d as i32,
            s0,
            s1,
            s2,
            batched as i32,
            (dir == Direction::Backward) as i32
        ]
    );
    Ok(out)
}

/// The op's forward: `x` read through its strides, tables contiguous.
pub(crate) fn rope(
    xs: &CudaStorage,
    xl: &Layout,
    cs: &CudaStorage,
    cl: &Layout,
    ss: &CudaStorage,
    sl: &Layout,
    dir: Direction,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        (xs, xl): (&CudaStorage, &Layout),
        (cs, cl): (&CudaStorage, &Layout),
        (ss, sl): (&CudaStorage, &Layout),
        dir: Direction,
    ) -> Result<(CudaStorage, Shape)> {
        let v = View4::of(xl)
            .ok_or_else(|| candle_core::Error::Msg("rope: strided last dim".into()))?;
        let dev = xs.device();
        let batched = cl.shape().rank() == 3;
        let out = rope_launch(
            dev,
            xs.dtype(),
            &from_offset::<T>(xs, xl)?,
            v,
            &view::<T>(cs, cl, "rope")?,
            &view::<T>(ss, sl, "rope")?,
            batched,
            dir,
        )?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from(v.dims.to_vec()),
        ))
    }
    cuda_dispatch!("rope", xs.dtype(), run((xs, xl), (cs, cl), (ss, sl), dir))
}

/// The backward on tensors: `dy` `(b, t, h, d)` through its strides.
pub(crate) fn rope_tensors(
    dy: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    dir: Direction,
) -> Result<Tensor> {
    with_cuda(dy, "rope", |gs, gl| {
        with_cuda(cos, "rope", |cs, cl| {
            with_cuda(sin, "rope", |ss, sl| {
                let (out, shape) = rope(gs, gl, cs, cl, ss, sl, dir)?;
                Ok(crate::io::wrap(candle_core::Storage::Cuda(out), shape))
            })
        })
    })
}

pub(crate) fn swiglu_fwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = s1.device();
        let (a, b) = (view::<T>(s1, l1, "swiglu")?, view::<T>(s2, l2, "swiglu")?);
        let n = l1.shape().elem_count();
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<T>(n.max(1))? };
        let name = kname("swiglu_fwd", s1.dtype(), "")?;
        let cfg = grid((blocks_for(n, THREADS), 1, 1), THREADS as u32);
        launch!(dev, POINTWISE, name, cfg, [&a, &b, &y], [n as i64]);
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            l1.shape().clone(),
        ))
    }
    cuda_dispatch!("swiglu", s1.dtype(), run(s1, l1, s2, l2))
}

pub(crate) fn swiglu_bwd(
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    need: (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    fn run<T: CudaDType + DeviceRepr>(
        a: &Tensor,
        b: &Tensor,
        dy: &Tensor,
        (need_da, need_db): (bool, bool),
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = a.elem_count();
        with_cuda(a, "swiglu", |sa, la| {
            with_cuda(b, "swiglu", |sb, lb| {
                with_cuda(dy, "swiglu", |sg, lg| {
                    let dev = sa.device();
                    let (av, bv) = (view::<T>(sa, la, "swiglu")?, view::<T>(sb, lb, "swiglu")?);
                    let gv = view::<T>(sg, lg, "swiglu")?;
                    // SAFETY: written where asked for, else a one-element placeholder never read.
                    let da = unsafe { dev.alloc::<T>(if need_da { n.max(1) } else { 1 })? };
                    let db = unsafe { dev.alloc::<T>(if need_db { n.max(1) } else { 1 })? };
                    let name = kname("swiglu_bwd", a.dtype(), "")?;
                    let cfg = grid((blocks_for(n, THREADS), 1, 1), THREADS as u32);
                    launch!(
                        dev,
                        POINTWISE,
                        name,
                        cfg,
                        [&av, &bv, &gv, &da, &db],
                        [n as i64, need_da as i32, need_db as i32]
                    );
                    Ok((
                        need_da.then(|| tensor(da, dev, a.shape())),
                        need_db.then(|| tensor(db, dev, a.shape())),
                    ))
                })
            })
        })
    }
    cuda_dispatch!("swiglu", a.dtype(), run(a, b, dy, need))
}

pub(crate) fn quick_gelu_fwd(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = s.device();
        let x = view::<T>(s, l, "quick_gelu")?;
        let n = l.shape().elem_count();
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<T>(n.max(1))? };
        let name = kname("quick_gelu_fwd", s.dtype(), "")?;
        let cfg = grid((blocks_for(n, THREADS), 1, 1), THREADS as u32);
        launch!(dev, POINTWISE, name, cfg, [&x, &y], [n as i64]);
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            l.shape().clone(),
        ))
    }
    cuda_dispatch!("quick_gelu", s.dtype(), run(s, l))
}

pub(crate) fn embedding_fwd(
    ts: &CudaStorage,
    tl: &Layout,
    is: &CudaStorage,
    il: &Layout,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr>(
        ts: &CudaStorage,
        tl: &Layout,
        is: &CudaStorage,
        il: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = ts.device();
        let (v, d) = tl.shape().dims2()?;
        let table = view::<T>(ts, tl, "embedding")?;
        let ids = view::<u32>(is, il, "embedding")?;
        let n = il.shape().elem_count();
        // SAFETY: every element is written by the kernel.
        let y = unsafe { dev.alloc::<T>((n * d).max(1))? };
        let name = kname("embedding_fwd", ts.dtype(), "")?;
        let cfg = grid((blocks_for(n * d, THREADS), 1, 1), THREADS as u32);
        launch!(
            dev,
            POINTWISE,
            name,
            cfg,
            [&table, &ids, &y],
            [n as i64, d as i32, v as u32]
        );
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            Shape::from((n, d)),
        ))
    }
    cuda_dispatch!("embedding", ts.dtype(), run(ts, tl, is, il))
}

/// The table's gradient: f32 atomic adds into a zeroed `(vocab, d)` buffer, then one rounding.
pub(crate) fn embedding_bwd(table: &Tensor, ids: &Tensor, dy: &Tensor) -> Result<Tensor> {
    fn run<T: CudaDType + DeviceRepr>(table: &Tensor, ids: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (v, d) = table.dims2()?;
        let n = ids.elem_count();
        with_cuda(ids, "embedding", |is, il| {
            with_cuda(dy, "embedding", |gs, gl| {
                let dev = gs.device();
                let iv = view::<u32>(is, il, "embedding")?;
                let gv = view::<T>(gs, gl, "embedding")?;
                let acc = dev.alloc_zeros::<f32>((v * d).max(1))?;
                let name = kname("embedding_bwd", table.dtype(), "")?;
                let cfg = grid((blocks_for(n * d, THREADS), 1, 1), THREADS as u32);
                launch!(
                    dev,
                    POINTWISE,
                    name,
                    cfg,
                    [&gv, &iv, &acc],
                    [n as i64, d as i32, v as u32]
                );
                if table.dtype() == DType::F32 {
                    return Ok(tensor(acc, dev, (v, d)));
                }
                // SAFETY: every element is written by the kernel.
                let out = unsafe { dev.alloc::<T>((v * d).max(1))? };
                let name = kname("cast_from_f32", table.dtype(), "")?;
                let cfg = grid((blocks_for(v * d, THREADS), 1, 1), THREADS as u32);
                launch!(dev, POINTWISE, name, cfg, [&acc, &out], [(v * d) as i64]);
                Ok(tensor(out, dev, (v, d)))
            })
        })
    }
    cuda_dispatch!("embedding", table.dtype(), run(table, ids, dy))
}

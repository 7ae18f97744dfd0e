//! Flash-style attention forward and backward on CUDA (`kernels/attention.cu`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::{CudaStorage, Device, Layout, Result, Shape, Storage, Tensor, bail};

use super::{
    ATTENTION, ATTENTION_MMA, blocks_for, cuda_dispatch, from_offset, grid, kname, launch, tensor,
    view,
};
use crate::io::View4;
use crate::mask::AttnMask;

/// Rows (warps) per block; must equal WARPS in attention.cu.
const WARPS: usize = 16;

/// Queries per block of the tensor-core forward and dQ kernels, keys per block of their dK/dV
/// kernel (FWD_BQ = DQ_BQ and KV_BK in attention_mma.cu); warps per block of each.
const MMA_BQ: usize = 64;
const MMA_BK: usize = 32;

/// The name prefix of the tensor-core kernels that run (`attn_mma` or `attn_mma_ldsm`:
/// `DAMA_CUDA_ATTN` / `set_cuda_attention`, bf16, a head dimension they are compiled for), or
/// `None` for the FMA kernels.
fn mma_kernels(dtype: candle_core::DType, d: usize) -> Option<&'static str> {
    match crate::attention::cuda_attention_path(dtype, d) {
        "mma" => Some("attn_mma"),
        "mma_ldsm" => Some("attn_mma_ldsm"),
        _ => None,
    }
}

/// Head-dimension values per lane, the kernels' template parameter M.
fn lanes(d: usize) -> Result<usize> {
    match d.div_ceil(32) {
        0 | 1 => Ok(1),
        2 => Ok(2),
        3 | 4 => Ok(4),
        5..=8 => Ok(8),
        _ => bail!("attention on CUDA: head dimension {d} > 256"),
    }
}

fn view4(l: &Layout) -> Result<View4> {
    View4::of(l).ok_or_else(|| candle_core::Error::Msg("attention: strided last dim".into()))
}

fn strides(v: &View4) -> [i64; 3] {
    v.strides.map(|s| s as i64)
}

type Input<'a> = (&'a CudaStorage, &'a Layout);

/// Output `(b, t, hq, d)` and the log-sum-exp `(b, t, hq)` f32 tensor.
pub(crate) fn forward(
    q: Input<'_>,
    k: Input<'_>,
    v: Input<'_>,
    mask: &AttnMask,
    scale: f64,
) -> Result<((CudaStorage, Shape), Tensor)> {
    fn run<T: CudaDType + DeviceRepr>(
        (qs, ql): Input<'_>,
        (ks, kl): Input<'_>,
        (vs, vl): Input<'_>,
        mask: &AttnMask,
        scale: f64,
    ) -> Result<((CudaStorage, Shape), Tensor)> {
        let (qv, kv, vv) = (view4(ql)?, view4(kl)?, view4(vl)?);
        let [b, t, hq, d] = qv.dims;
        let hkv = kv.dims[2];
        let m = lanes(d)?;
        let dev = qs.device();
        let spans = mask.spans_on(&Device::Cuda(dev.clone()))?;
        let (sg, sl) = spans.storage_and_layout();
        let Storage::Cuda(ss) = &*sg else {
            bail!("attention: mask spans are not on the GPU");
        };
        let sp = view::<u32>(ss, sl, "attention")?;
        let (qd, kd, vd) = (
            from_offset::<T>(qs, ql)?,
            from_offset::<T>(ks, kl)?,
            from_offset::<T>(vs, vl)?,
        );
        // SAFETY: the kernel writes every output row and log-sum-exp.
        let out = unsafe { dev.alloc::<T>((b * t * hq * d).max(1))? };
        let lse = unsafe { dev.alloc::<f32>((b * t * hq).max(1))? };
        let ([q0, q1, q2], [k0, k1, k2], [v0, v1, v2]) = (strides(&qv), strides(&kv), strides(&vv));
        if let Some(pre) = mma_kernels(qs.dtype(), d) {
            let name = format!("{pre}_fwd_d{d}");
            let cfg = grid((t.div_ceil(MMA_BQ) as u32, hq as u32, b as u32), 128);
            launch!(
                dev,
                ATTENTION_MMA,
                name,
                cfg,
                [&qd, &kd, &vd, &sp, &out, &lse],
                [
                    t as i32,
                    hq as i32,
                    hkv as i32,
                    q0,
                    q1,
                    q2,
                    k0,
                    k1,
                    k2,
                    v0,
                    v1,
                    v2,
                    scale as f32
                ]
            );
            let lse = tensor(lse, dev, (b, t, hq));
            return Ok((
                (
                    CudaStorage::wrap_cuda_slice(out, dev.clone()),
                    Shape::from(qv.dims.to_vec()),
                ),
                lse,
            ));
        }
        let name = kname("attn_fwd", qs.dtype(), &format!("_m{m}"))?;
        let cfg = grid(
            (t.div_ceil(WARPS) as u32, hq as u32, b as u32),
            (WARPS * 32) as u32,
        );
        launch!(
            dev,
            ATTENTION,
            name,
            cfg,
            [&qd, &kd, &vd, &sp, &out, &lse],
            [
                t as i32,
                hq as i32,
                hkv as i32,
                d as i32,
                q0,
                q1,
                q2,
                k0,
                k1,
                k2,
                v0,
                v1,
                v2,
                scale as f32
            ]
        );
        let lse = tensor(lse, dev, (b, t, hq));
        Ok((
            (
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                Shape::from(qv.dims.to_vec()),
            ),
            lse,
        ))
    }
    if q.1.dims().contains(&0) {
        bail!("attention on CUDA: empty input {:?}", q.1.dims());
    }
    cuda_dispatch!("attention", q.0.dtype(), run(q, k, v, mask, scale))
}

/// `(dq, dk, dv)`, contiguous `(b, t, heads, d)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    dout: &Tensor,
    lse: &Tensor,
    mask: &AttnMask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    fn run<T: CudaDType + DeviceRepr>(
        ts: [&Tensor; 6],
        mask: &AttnMask,
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let [q, _, _, _, _, _] = ts;
        let spans = mask.spans_on(q.device())?;
        let locked: Vec<_> = ts
            .iter()
            .copied()
            .chain(std::iter::once(&spans))
            .map(|t| t.storage_and_layout())
            .collect();
        let mut st = Vec::with_capacity(7);
        for (g, l) in &locked {
            let Storage::Cuda(s) = &**g else {
                bail!("attention backward: expected CUDA tensors");
            };
            st.push((s, *l));
        }
        let (qv, kv, vv, gv) = (
            view4(st[0].1)?,
            view4(st[1].1)?,
            view4(st[2].1)?,
            view4(st[4].1)?,
        );
        let [b, t, hq, d] = qv.dims;
        let hkv = kv.dims[2];
        let m = lanes(d)?;
        let dev = st[0].0.device();
        let dtype = q.dtype();
        let qd = from_offset::<T>(st[0].0, st[0].1)?;
        let kd = from_offset::<T>(st[1].0, st[1].1)?;
        let vd = from_offset::<T>(st[2].0, st[2].1)?;
        let od = view::<T>(st[3].0, st[3].1, "attention backward")?;
        let gd = from_offset::<T>(st[4].0, st[4].1)?;
        let ld = view::<f32>(st[5].0, st[5].1, "attention backward")?;
        let sp = view::<u32>(st[6].0, st[6].1, "attention backward")?;
        let ([q0, q1, q2], [k0, k1, k2]) = (strides(&qv), strides(&kv));
        let ([v0, v1, v2], [g0, g1, g2]) = (strides(&vv), strides(&gv));
        let (ti, hqi, hkvi, di) = (t as i32, hq as i32, hkv as i32, d as i32);
        let sc = scale as f32;

        // SAFETY: each buffer below is fully written by the kernel that produces it.
        let delta = unsafe { dev.alloc::<f32>(b * t * hq)? };
        let name = kname("attn_bwd_delta", dtype, "")?;
        let cfg = grid((blocks_for(b * t * hq, WARPS), 1, 1), (WARPS * 32) as u32);
        launch!(
            dev,
            ATTENTION,
            name,
            cfg,
            [&od, &gd, &delta],
            [g0, g1, g2, b as i32, ti, hqi, di]
        );

        let dq = unsafe { dev.alloc::<T>(b * t * hq * d)? };
        let dk = unsafe { dev.alloc::<T>(b * t * hkv * d)? };
        let dv = unsafe { dev.alloc::<T>(b * t * hkv * d)? };
        if let Some(pre) = mma_kernels(dtype, d) {
            let name = format!("{pre}_bwd_dq_d{d}");
            let cfg = grid((t.div_ceil(MMA_BQ) as u32, hq as u32, b as u32), 128);
            launch!(
                dev,
                ATTENTION_MMA,
                name,
                cfg,
                [&qd, &kd, &vd, &gd, &sp, &ld, &delta, &dq],
                [
                    ti, hqi, hkvi, q0, q1, q2, k0, k1, k2, v0, v1, v2, g0, g1, g2, sc
                ]
            );
            let name = format!("{pre}_bwd_dkdv_d{d}");
            let cfg = grid((t.div_ceil(MMA_BK) as u32, hkv as u32, b as u32), 64);
            launch!(
                dev,
                ATTENTION_MMA,
                name,
                cfg,
                [&qd, &kd, &vd, &gd, &sp, &ld, &delta, &dk, &dv],
                [
                    ti, hqi, hkvi, q0, q1, q2, k0, k1, k2, v0, v1, v2, g0, g1, g2, sc
                ]
            );
            return Ok((
                tensor(dq, dev, (b, t, hq, d)),
                tensor(dk, dev, (b, t, hkv, d)),
                tensor(dv, dev, (b, t, hkv, d)),
            ));
        }
        let name = kname("attn_bwd_dq", dtype, &format!("_m{m}"))?;
        let cfg = grid(
            (t.div_ceil(WARPS) as u32, hq as u32, b as u32),
            (WARPS * 32) as u32,
        );
        launch!(
            dev,
            ATTENTION,
            name,
            cfg,
            [&qd, &kd, &vd, &gd, &sp, &ld, &delta, &dq],
            [
                ti, hqi, hkvi, di, q0, q1, q2, k0, k1, k2, v0, v1, v2, g0, g1, g2, sc
            ]
        );

        let name = kname("attn_bwd_dkdv", dtype, &format!("_m{m}"))?;
        let cfg = grid(
            (t.div_ceil(WARPS) as u32, hkv as u32, b as u32),
            (WARPS * 32) as u32,
        );
        launch!(
            dev,
            ATTENTION,
            name,
            cfg,
            [&qd, &kd, &vd, &gd, &sp, &ld, &delta, &dk, &dv],
            [
                ti, hqi, hkvi, di, q0, q1, q2, k0, k1, k2, v0, v1, v2, g0, g1, g2, sc
            ]
        );
        Ok((
            tensor(dq, dev, (b, t, hq, d)),
            tensor(dk, dev, (b, t, hkv, d)),
            tensor(dv, dev, (b, t, hkv, d)),
        ))
    }
    let lse = lse.contiguous()?;
    cuda_dispatch!(
        "attention",
        q.dtype(),
        run([q, k, v, out, dout, &lse], mask, scale)
    )
}

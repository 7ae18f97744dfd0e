//! CPU fast paths for the element-wise ops around CLIP's matmuls, done in place on buffers the
//! encoder has just allocated and alone holds (the output of a linear layer). candle's generic
//! ops allocate a new tensor per op (quick_gelu is three: scale, sigmoid, multiply) and call
//! libm's scalar `expf`; on a CPU forward those allocations and passes cost a sizeable share of
//! the time next to the matmuls.
//!
//! Every function falls back to candle's ops for other devices, dtypes or layouts, so the
//! encoder stays device-generic. The exponential is a branch-free Cephes-style polynomial
//! (relative error ≈ 2e-7, close to libm's) that the compiler vectorises; on x86-64 it is
//! compiled a second time for AVX2+FMA and chosen at run time.

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// e^x for x in f32's range, without branches: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6
/// polynomial (Cephes `expf`), 2^n by building the exponent bits.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n for the integer-valued n in [-126, 127]: adding 1.5·2^23 puts n in the low mantissa
    // bits (two's complement), avoiding a float→int cast, which Rust saturates and which then
    // stops the loop from vectorising.
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    er * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// x·σ(1.702x) = x / (1 + e^(−1.702x)).
#[inline(always)]
fn quick_gelu_slice(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x /= 1.0 + exp_approx(-1.702 * *x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quick_gelu_avx2(xs: &mut [f32]) {
    quick_gelu_slice(xs)
}

fn quick_gelu_dispatch(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { quick_gelu_avx2(xs) };
    }
    quick_gelu_slice(xs)
}

/// Softmax of each `row`-long row, in place.
#[inline(always)]
fn softmax_rows(xs: &mut [f32], row: usize) {
    for r in xs.chunks_exact_mut(row) {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for x in r.iter_mut() {
            *x = exp_approx(*x - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in r.iter_mut() {
            *x *= inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(xs: &mut [f32], row: usize) {
    softmax_rows(xs, row)
}

fn softmax_dispatch(xs: &mut [f32], row: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { softmax_rows_avx2(xs, row) };
    }
    softmax_rows(xs, row)
}

struct SoftmaxInPlace;

impl candle_core::InplaceOp1 for SoftmaxInPlace {
    fn name(&self) -> &'static str {
        "softmax-last-dim-inplace"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("softmax-inplace: contiguous f32 only");
        };
        let row = layout.dims().last().copied().unwrap_or(1).max(1);
        softmax_dispatch(&mut data[start..end], row);
        Ok(())
    }
}

/// Softmax over the last dimension of a tensor the caller owns alone (fresh attention scores),
/// in place on the CPU in f32; elsewhere candle's fused op, computed in f32 as transformers'
/// eager attention does (`softmax(..., dtype=torch.float32)`).
pub(crate) fn softmax_owned(x: Tensor) -> Result<Tensor> {
    if cpu_f32_contiguous(&x) {
        x.inplace_op1(&SoftmaxInPlace)?;
        Ok(x)
    } else if x.dtype() == DType::F32 {
        candle_nn::ops::softmax_last_dim(&x)
    } else {
        candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
    }
}

/// `dst[i] += src[i]`, and with `src` shorter, repeated over `dst` (a bias row).
#[inline(always)]
fn add_rows(dst: &mut [f32], src: &[f32]) {
    for chunk in dst.chunks_exact_mut(src.len()) {
        for (a, b) in chunk.iter_mut().zip(src) {
            *a += b;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn add_rows_avx2(dst: &mut [f32], src: &[f32]) {
    add_rows(dst, src)
}

fn add_rows_dispatch(dst: &mut [f32], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { add_rows_avx2(dst, src) };
    }
    add_rows(dst, src)
}

struct QuickGeluInPlace;

impl candle_core::InplaceOp1 for QuickGeluInPlace {
    fn name(&self) -> &'static str {
        "quick-gelu-inplace"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("quick-gelu-inplace: contiguous f32 only");
        };
        quick_gelu_dispatch(&mut data[start..end]);
        Ok(())
    }
}

fn cpu_f32_contiguous(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous()
}

/// quick_gelu of a tensor the caller owns alone (fresh from a linear layer): in place on the
/// CPU in f32, dama-kernels' kernel on CUDA (feature `kernels`), candle's ops elsewhere.
pub(crate) fn quick_gelu_owned(x: Tensor) -> Result<Tensor> {
    #[cfg(feature = "kernels")]
    if x.device().is_cuda() {
        return dama_kernels::quick_gelu(&x);
    }
    if cpu_f32_contiguous(&x) {
        x.inplace_op1(&QuickGeluInPlace)?;
        Ok(x)
    } else {
        &x * candle_nn::ops::sigmoid(&(&x * 1.702)?)?
    }
}

struct AddInPlace;

impl candle_core::InplaceOp2 for AddInPlace {
    fn name(&self) -> &'static str {
        "add-inplace"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(d), CpuStorage::F32(s), Some((d0, d1)), Some((s0, s1))) = (
            dst,
            src,
            dst_l.contiguous_offsets(),
            src_l.contiguous_offsets(),
        ) else {
            candle_core::bail!("add-inplace: contiguous f32 only");
        };
        if d1 - d0 != s1 - s0 {
            candle_core::bail!("add-inplace: {} vs {} elements", d1 - d0, s1 - s0);
        }
        add_rows_dispatch(&mut d[d0..d1], &s[s0..s1]);
        Ok(())
    }
}

/// `owned + other` for same-shaped tensors, written into `owned`, which the caller holds alone
/// (fresh from a linear layer); candle's add elsewhere. Used for the residual connections.
pub(crate) fn add_owned(owned: Tensor, other: &Tensor) -> Result<Tensor> {
    if cpu_f32_contiguous(&owned) && cpu_f32_contiguous(other) && owned.shape() == other.shape() {
        owned.inplace_op2(other, &AddInPlace)?;
        Ok(owned)
    } else {
        owned + other
    }
}

struct AddRowInPlace;

impl candle_core::InplaceOp2 for AddRowInPlace {
    fn name(&self) -> &'static str {
        "add-row-inplace"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        row: &CpuStorage,
        row_l: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(d), CpuStorage::F32(r), Some((d0, d1)), Some((r0, r1))) = (
            dst,
            row,
            dst_l.contiguous_offsets(),
            row_l.contiguous_offsets(),
        ) else {
            candle_core::bail!("add-row-inplace: contiguous f32 only");
        };
        let row = &r[r0..r1];
        if row.is_empty() || (d1 - d0) % row.len() != 0 {
            candle_core::bail!(
                "add-row-inplace: {} elements, row of {}",
                d1 - d0,
                row.len()
            );
        }
        add_rows_dispatch(&mut d[d0..d1], row);
        Ok(())
    }
}

/// `owned + bias` with `bias` (n,) broadcast over the rows of `owned` (…, n), written into
/// `owned`, which the caller holds alone (fresh from a matmul); candle's broadcast add
/// elsewhere.
pub(crate) fn add_bias_owned(owned: Tensor, bias: &Tensor) -> Result<Tensor> {
    if cpu_f32_contiguous(&owned)
        && cpu_f32_contiguous(bias)
        && owned.dims().last() == Some(&bias.elem_count())
    {
        owned.inplace_op2(bias, &AddRowInPlace)?;
        Ok(owned)
    } else {
        owned.broadcast_add(bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let rel = ((exp_approx(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "{worst}");
    }

    #[test]
    fn fast_ops_equal_candle_ops() {
        let x = Tensor::randn(0f32, 3.0, (7, 33), &Device::Cpu).unwrap();
        let want = (&x * candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap()).unwrap();
        let got = quick_gelu_owned(x.copy().unwrap()).unwrap();
        let d = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
        let y = Tensor::randn(0f32, 1.0, (7, 33), &Device::Cpu).unwrap();
        let sum = add_owned(x.copy().unwrap(), &y).unwrap();
        let d = (sum - (&x + &y).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
        let bias = Tensor::randn(0f32, 1.0, 33, &Device::Cpu).unwrap();
        let got = add_bias_owned(x.copy().unwrap(), &bias).unwrap();
        let d = (got - x.broadcast_add(&bias).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        let scores = Tensor::randn(0f32, 4.0, (3, 5, 7), &Device::Cpu).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let got = softmax_owned(scores.copy().unwrap()).unwrap();
        let d = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{d}");
        // Other dtypes take candle's path.
        let h = x.to_dtype(DType::F16).unwrap();
        assert_eq!(quick_gelu_owned(h).unwrap().dtype(), DType::F16);
    }
}

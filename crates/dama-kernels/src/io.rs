//! Reading tensors' storage inside kernels and wrapping kernel results as tensors.
//!
//! Backward passes return plain (detached) tensors built straight from the kernels' buffers:
//! candle detaches every gradient anyway, and this lets one kernel produce several gradients
//! at once (a `CustomOp` has a single output).

use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, Device, Layout, Result, Shape, Storage, Tensor, WithDType, bail};

/// The contiguous slice of `storage` that `layout` describes.
pub(crate) fn slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// All of `storage` from the layout's start offset on (for strided reads).
pub(crate) fn from_offset<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [T]> {
    Ok(&storage.as_slice::<T>()?[layout.start_offset()..])
}

/// Runs `f` on the CPU storage of `t` and its layout.
pub(crate) fn with_cpu<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CpuStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(s, layout),
        _ => bail!("{what}: expected a CPU tensor"),
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
/// A detached tensor holding `storage`, contiguous with `shape`.
pub(crate) fn wrap(storage: Storage, shape: impl Into<Shape>) -> Tensor {
    Tensor::from_storage(storage, shape, BackpropOp::none(), false)
}

/// A detached CPU tensor from a kernel's output vector.
pub(crate) fn cpu_tensor<T: WithDType>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// What a `CustomOp` forward returns when its result `t` was computed beforehand with tensor
/// ops: a copy of `t`'s buffer and its shape. The op's output reads that buffer from its
/// start, so a view into a larger buffer (an offset, other strides) is copied out first.
pub(crate) fn precomputed(t: &Tensor) -> Result<(Storage, Shape)> {
    let own = match t.layout().contiguous_offsets() {
        Some((0, _)) => t.clone(),
        _ => t.force_contiguous()?,
    };
    let (storage, layout) = own.storage_and_layout();
    let copy = match &*storage {
        Storage::Cpu(s) => Storage::Cpu(s.try_clone(layout)?),
        Storage::Cuda(s) => Storage::Cuda(s.try_clone(layout)?),
        Storage::Metal(s) => Storage::Metal(s.try_clone(layout)?),
    };
    Ok((copy, own.shape().clone()))
}

/// A rank-4 tensor read through its strides, the last dimension contiguous: what lets RoPE
/// and attention read `(b, t, heads, d)` views of a projection's output without a copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View4 {
    pub dims: [usize; 4],
    pub strides: [usize; 3],
}

impl View4 {
    /// `None` when the last dimension is not contiguous (the caller copies first).
    pub fn of(layout: &Layout) -> Option<Self> {
        let (d, s) = (layout.dims(), layout.stride());
        if d.len() != 4 || (s[3] != 1 && d[3] > 1) {
            return None;
        }
        Some(Self {
            dims: [d[0], d[1], d[2], d[3]],
            strides: [s[0], s[1], s[2]],
        })
    }

    /// Offset (from the layout's start) of element `[i, j, k, 0]`.
    #[inline]
    pub fn at(&self, i: usize, j: usize, k: usize) -> usize {
        i * self.strides[0] + j * self.strides[1] + k * self.strides[2]
    }
}

/// `t` itself when its last dimension is contiguous, else a contiguous copy.
pub(crate) fn last_dim_contiguous(t: &Tensor) -> Result<Tensor> {
    if View4::of(t.layout()).is_some() {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

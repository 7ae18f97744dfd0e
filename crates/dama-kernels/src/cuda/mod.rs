//! Launching `kernels/*.cu` (PTX compiled by `build.rs`) through candle's cudarc: one module
//! per source file, loaded once per device, one entry point per (kernel, dtype).
//!
//! The kernels take f32 or bf16 and compute in f32. `scripts/gpu-bench.sh` checks every op
//! against the CPU kernels on the GPU machine; all have passed it on an H200 (2026-11-26),
//! the tensor-core attention (`attention_mma.cu`, the default; `DAMA_CUDA_ATTN=fma` selects
//! the FMA kernels instead) included.

pub(crate) mod adamw;
pub(crate) mod attention;
pub(crate) mod head;
pub(crate) mod norms;
pub(crate) mod pointwise;

use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Storage, Tensor, bail};

pub(crate) struct Module {
    name: &'static str,
    ptx: &'static str,
}

pub(crate) const NORMS: Module = Module {
    name: "dama_kernels_norms",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/norms.ptx")),
};
pub(crate) const POINTWISE: Module = Module {
    name: "dama_kernels_pointwise",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/pointwise.ptx")),
};
pub(crate) const HEAD: Module = Module {
    name: "dama_kernels_head",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/head.ptx")),
};
pub(crate) const ATTENTION: Module = Module {
    name: "dama_kernels_attention",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/attention.ptx")),
};
pub(crate) const ADAMW: Module = Module {
    name: "dama_kernels_adamw",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/adamw.ptx")),
};
pub(crate) const ATTENTION_MMA: Module = Module {
    name: "dama_kernels_attention_mma",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/attention_mma.ptx")),
};

/// The name of a kernel entry point: `{root}_{f32|bf16}{tail}`.
pub(crate) fn kname(root: &str, dtype: DType, tail: &str) -> Result<String> {
    Ok(format!("{root}_{}{tail}", suffix(dtype, root)?))
}

/// Launches entry point `$name` of `$module` on `$dev` with `$cfg`: the buffers (references to
/// `CudaSlice`s / `CudaView`s) first, then the scalars, the order every kernel declares them.
macro_rules! launch {
    ($dev:expr, $module:expr, $name:expr, $cfg:expr, [$($buf:expr),* $(,)?], [$($val:expr),* $(,)?]) => {{
        #[allow(unused_imports)]
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let f = $dev.get_or_load_custom_func(&$name, $module.name, $module.ptx)?;
        let mut b = f.builder();
        $( b.arg($buf); )*
        candle_core::builder_arg!(b $(, $val)*);
        // SAFETY: the argument list matches the kernel's signature in kernels/*.cu, and every
        // buffer holds the elements the launch geometry makes the kernel touch.
        unsafe { b.launch($cfg) }.w()?;
    }};
}
pub(crate) use launch;

pub(crate) fn suffix(dtype: DType, op: &str) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        d => bail!("{op}: the CUDA kernels take f32 or bf16, not {d:?}"),
    }
}

/// The contiguous part of `s` that `l` describes.
pub(crate) fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let slice = s.as_cuda_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// `s` from the layout's start offset on (read through strides by the kernel).
pub(crate) fn from_offset<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
) -> Result<CudaView<'a, T>> {
    Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
}

/// Runs `f` on the CUDA storage of `t` and its layout (holding the read lock).
pub(crate) fn with_cuda<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => f(s, layout),
        _ => bail!("{what}: expected a CUDA tensor"),
    }
}

/// A detached tensor owning `slice`.
pub(crate) fn tensor<T: CudaDType>(
    slice: CudaSlice<T>,
    dev: &CudaDevice,
    shape: impl Into<candle_core::Shape>,
) -> Tensor {
    crate::io::wrap(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())),
        shape,
    )
}

/// `blocks` blocks of `threads` threads, no dynamic shared memory.
pub(crate) fn grid(blocks: (u32, u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: blocks,
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Blocks for a grid-stride loop over `n` items, `threads` per block.
pub(crate) fn blocks_for(n: usize, threads: usize) -> u32 {
    n.div_ceil(threads).clamp(1, 65535 * 16) as u32
}

/// Calls `$f::<T>(args)` with T = f32 or bf16 for `$dtype`, else an error naming the op.
macro_rules! cuda_dispatch {
    ($name:expr, $dtype:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16>($($arg),*),
            d => candle_core::bail!("{}: the CUDA kernels take f32 or bf16, not {d:?}", $name),
        }
    };
}
pub(crate) use cuda_dispatch;

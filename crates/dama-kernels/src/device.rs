//! Opening the CUDA device the way a training loop wants it.
//!
//! candle allocates with `cuMemAllocAsync` from the device's default memory pool, whose
//! release threshold is 0: at every synchronisation (each read-back of a loss or a norm) the
//! pool hands its free memory back to the driver, and the next step maps it again, tens of
//! milliseconds per GiB, for the activations and gradients of every step. [`cuda_device`]
//! raises the threshold so freed memory stays in the pool for reuse (what PyTorch's caching
//! allocator does). It also turns off cudarc's per-allocation event tracking, which only
//! orders work across several streams; candle runs one stream per device and never waits on
//! those events, but creates and destroys two of them with every tensor.
//! `DAMA_CUDA_DEFAULTS=1` keeps CUDA's and cudarc's defaults (for before/after measurements).

use candle_core::{Device, Result};

/// Device `ordinal` on CUDA, its memory pool keeping freed memory and without event tracking
/// (see the module doc). Without the `cuda` feature this is candle's error for a CPU build.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    if std::env::var("DAMA_CUDA_DEFAULTS").as_deref() != Ok("1") {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = &device {
            tune(cuda)?;
        }
    }
    Ok(device)
}

#[cfg(feature = "cuda")]
fn tune(cuda: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let err = |what: &str, e: sys::CUresult| {
        candle_core::Error::Msg(format!("cuda_device: {what} failed ({e:?})"))
    };
    let stream = cuda.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread()
        .map_err(|e| candle_core::Error::Msg(format!("cuda_device: {e}")))?;
    // SAFETY: the device handle comes from the live context; the attribute takes a cuuint64_t.
    unsafe {
        let pool = result::device::get_mem_pool(ctx.cu_device())
            .map_err(|e| candle_core::Error::Msg(format!("cuda_device: memory pool: {e}")))?;
        let mut keep: u64 = u64::MAX;
        let r = sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut keep as *mut u64).cast(),
        );
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(err("setting the pool's release threshold", r));
        }
        cuda.disable_event_tracking();
    }
    Ok(())
}

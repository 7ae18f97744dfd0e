//! Which device and dtype a command runs on.

use anyhow::{Result, bail};
use candle_core::Device;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// CUDA when this binary was built with `--features cuda` and a GPU is present, else CPU.
    Auto,
    Cpu,
    Cuda,
}

/// `--device` and `--gpu`, shared by every command that runs a model.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
    /// Which GPU, with `--device cuda`.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
}

impl DeviceArgs {
    pub fn device(&self) -> Result<Device> {
        match self.device {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda => {
                if !cfg!(feature = "cuda") {
                    bail!(
                        "this dama-native was built without CUDA: rebuild with `--features cuda`, or use --device cpu"
                    );
                }
                Ok(dama_kernels::cuda_device(self.gpu)?)
            }
            // candle's `cuda_if_available` answers CUDA whenever the binary was built with it,
            // GPU or not; asking the driver is what tells whether one is there.
            DeviceKind::Auto if cfg!(feature = "cuda") => match dama_kernels::cuda_device(self.gpu)
            {
                Ok(device) => Ok(device),
                Err(e) => {
                    eprintln!("no usable GPU {} ({e}); running on the CPU", self.gpu);
                    Ok(Device::Cpu)
                }
            },
            DeviceKind::Auto => Ok(Device::Cpu),
        }
    }
}

impl DeviceArgs {
    /// The device of a data-parallel rank: on CUDA the GPU `--gpu + local_rank`, modulo the
    /// GPUs this process sees (several ranks then share one GPU where there are fewer GPUs
    /// than ranks: NCCL ≥ 2.30 with `NCCL_MULTI_RANK_GPU_ENABLE=1`).
    pub fn device_for_rank(&self, local_rank: usize, world: usize) -> Result<Device> {
        if world == 1 || self.device == DeviceKind::Cpu {
            return self.device();
        }
        let gpus = gpu_count();
        if gpus == 0 {
            return self.device();
        }
        DeviceArgs {
            gpu: (self.gpu + local_rank) % gpus,
            ..self.clone()
        }
        .device()
    }
}

#[cfg(feature = "cuda")]
fn gpu_count() -> usize {
    candle_core::cuda_backend::cudarc::driver::CudaContext::device_count()
        .map_or(0, |n| n.max(0) as usize)
}

#[cfg(not(feature = "cuda"))]
fn gpu_count() -> usize {
    0
}

/// A short name for logs: `cpu`, `cuda:0`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// The GPU's total memory in bytes; `None` on the CPU (what `train` plans against when
/// `--gpu-memory` is not given).
pub fn memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        // the device's context is current on this thread since `cuda_device` opened it
        return candle_core::cuda_backend::cudarc::driver::result::mem_get_info()
            .ok()
            .map(|(_, total)| total as u64);
    }
    let _ = device;
    None
}

//! With the `cuda` feature, compiles `kernels/*.cu` to PTX with nvcc (what candle's own kernels
//! do, without a build-time download: everything needed is in `kernels/`). The PTX is embedded
//! in the library and loaded through candle's cudarc at first use.
//!
//! nvcc is `$CUDA_PATH/bin/nvcc` (or `$CUDA_ROOT`, `$CUDA_TOOLKIT_ROOT_DIR`), else the one on
//! `PATH`. The virtual architecture is `compute_$CUDA_COMPUTE_CAP` (digits only, "90a" → 90),
//! default 80: the kernels use nothing newer than sm_80, so the default PTX runs on A100 and is
//! JIT-compiled for H100/H200 by the driver; `source scripts/setup-cuda13.sh` sets 90.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 6] = [
    "norms",
    "pointwise",
    "head",
    "attention",
    "attention_mma",
    "adamw",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    for var in [
        "CUDA_PATH",
        "CUDA_ROOT",
        "CUDA_TOOLKIT_ROOT_DIR",
        "CUDA_COMPUTE_CAP",
        "NVCC_FLAGS",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = ["CUDA_PATH", "CUDA_ROOT", "CUDA_TOOLKIT_ROOT_DIR"]
        .iter()
        .filter_map(env::var_os)
        .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap: String = env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "80".into())
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let cap = if cap.is_empty() {
        "80".to_string()
    } else {
        cap
    };
    for name in SOURCES {
        let src = PathBuf::from("kernels").join(format!("{name}.cu"));
        let ptx = out.join(format!("{name}.ptx"));
        let mut cmd = Command::new(&nvcc);
        cmd.args(["--ptx", "-O3", "-std=c++17", "--expt-relaxed-constexpr"])
            .arg(format!("--gpu-architecture=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src);
        if let Ok(extra) = env::var("NVCC_FLAGS") {
            cmd.args(extra.split_whitespace());
        }
        let status = cmd.status().unwrap_or_else(|e| {
            panic!(
                "dama-kernels: cannot run {} ({e}); set CUDA_PATH or put nvcc on PATH \
                 (`source scripts/setup-cuda13.sh`)",
                nvcc.display()
            )
        });
        if !status.success() {
            panic!("dama-kernels: nvcc failed on {} ({status})", src.display());
        }
    }
}

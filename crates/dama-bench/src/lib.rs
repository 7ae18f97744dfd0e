//! What the bench binaries share: [`ops`], each fused op next to the composition of candle
//! ops it replaces. The binaries are `gpu_bench` (what `scripts/gpu-bench.sh` runs on a GPU
//! machine) and `bench_cpu`.

pub mod ops;

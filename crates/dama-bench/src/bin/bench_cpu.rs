//! Fused ops against the compositions of differentiable candle ops they replace, forward +
//! backward, on the CPU, at the ~100M LLaMA-shaped model of dama-llava's `bench_pair` (one
//! shared-prefix pair: 867 tokens, width 640, 10 heads, SwiGLU 1728, vocabulary 32064, ~180
//! scored tokens), plus one whole decoder layer built either way.
//!
//! ```text
//! cargo run -p dama-bench --release --bin bench_cpu -- [--iters N] [--dtype f32|bf16]
//! ```
//!
//! The whole-model numbers (forward + backward of a pair, before and after the swap) come from
//! dama-llava's `bench_pair`; see this crate's README.

use candle_core::{DType, Device};
use dama_bench::ops;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let iters: usize = get("--iters").map_or(Ok(3), |s| s.parse())?;
    let dtype = match get("--dtype").map(String::as_str) {
        None | Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some(o) => anyhow::bail!("--dtype {o}: f32 or bf16"),
    };
    let shape = ops::Shape {
        rows: 1,
        tokens: 867,
        hidden: 640,
        heads: 10,
        kv_heads: 10,
        ffn: 1728,
        vocab: 32064,
        scored: 180,
    };
    println!(
        "CPU, {dtype:?}, {} threads, {shape:?}; fastest of {iters} runs",
        candle_core::utils::get_num_threads()
    );
    ops::print_rows(&ops::bench_ops(shape, dtype, &Device::Cpu, iters)?);
    Ok(())
}

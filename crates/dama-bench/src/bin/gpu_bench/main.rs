//! What `scripts/gpu-bench.sh` runs on the GPU machine (built here with `--features cuda`;
//! there is no cargo there). Prints one JSON object per line.
//!
//! ```text
//! gpu_bench check [--only PREFIX]     CUDA vs CPU, every op (or those whose name starts with
//!                                      PREFIX), f32 and bf16 (exit 1 on a failure); attention
//!                                      runs the kernels DAMA_CUDA_ATTN=fma|mma selects; without
//!                                      --only, then the tiny LLaVA's log-probs and gradients
//! gpu_bench ops [--iters N]            fused vs composed fwd+bwd per op at the block's shapes
//! gpu_bench block [--iters N]          the block probe (fused and composed), vs torch_block.py
//! gpu_bench step --model 1b|7b [--pairs N] [--steps N] [--optim fused|fused-sr|fused-8bit|fused-sr-8bit|candle]
//!                [--layer-backward manual|autograd] [--recompute-activations]
//!                                      one DAMA step, vs torch_dpo_step.py, then one more
//!                                      timed phase by phase (`phases_ms`); AdamW fused (fp32
//!                                      master + moments, the default), fused-sr (bf16 master,
//!                                      stochastic rounding, fp32 moments) or candle_nn's (bf16);
//!                                      decoder layers with the hand-written backward (the
//!                                      default) or candle's autograd
//! gpu_bench generate [--model 7b|1b|tiny] [--new-tokens N]
//!                                      the tiny model's answers on CUDA against the CPU's
//!                                      (greedy and 3 beams; f32 ids must be equal, exit 1
//!                                      otherwise), then tokens/s of the shape (random bf16
//!                                      weights, batches 1 and 8, no end token)
//! ```
//!
//! `--cpu` runs on the CPU instead (no GPU needed): `check --cpu` exercises the harness (CPU
//! against itself), `step --model tiny --cpu` the whole step on a tiny model, `generate --cpu` the speed
//! part on the tiny shape.

mod block;
mod check;
mod generate;
mod llava_check;
mod step;

use candle_core::{DType, Device};
use dama_bench::ops;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_else(|| "check".into());
    let iters: usize = arg(&args, "--iters").map_or(Ok(5), |s| s.parse())?;
    let dev = if args.iter().any(|a| a == "--cpu") {
        Device::Cpu
    } else {
        dama_kernels::cuda_device(0)?
    };
    if dev.is_cuda() {
        // which attention kernels this run uses at the probes' shapes (bf16, d = 128)
        println!(
            "{}",
            serde_json::json!({"attn_kernel": dama_kernels::cuda_attention_path(DType::BF16, 128),
                               "DAMA_CUDA_ATTN": std::env::var("DAMA_CUDA_ATTN").ok()})
        );
    }
    match mode.as_str() {
        "check" => {
            let only = arg(&args, "--only");
            let mut ok = check::run(&dev, only.as_deref())?;
            // the whole tiny model, CUDA against CPU (with `--only`, only when it says `llava`)
            if only.as_deref().is_none_or(|p| p == "llava") {
                ok &= llava_check::run(&dev)?;
            }
            println!("{}", serde_json::json!({"check": "all", "ok": ok}));
            if !ok {
                std::process::exit(1);
            }
        }
        "ops" => {
            // the block probe's shapes: b=8, t=736, d=2048, 16 heads, ffn 5632, 640 scored tokens
            let shape = ops::Shape {
                rows: 8,
                tokens: 736,
                hidden: 2048,
                heads: 16,
                kv_heads: 16,
                ffn: 5632,
                vocab: 32064,
                scored: 640,
            };
            for r in ops::bench_ops(shape, DType::BF16, &dev, iters)? {
                println!(
                    "{}",
                    serde_json::json!({"op": r.op, "dtype": "bf16", "fused_ms": r.fused_ms,
                                       "fused_fwd_ms": r.fused_fwd_ms, "composed_ms": r.composed_ms, "speedup": r.composed_ms / r.fused_ms})
                );
            }
        }
        "block" => {
            let dims = if dev.is_cpu() {
                block::Dims::SMALL
            } else {
                block::Dims::PROBE
            };
            block::run(&dev, dims, iters)?
        }
        "step" => {
            let model = arg(&args, "--model").unwrap_or_else(|| "1b".into());
            let pairs = arg(&args, "--pairs")
                .map_or(Ok(if model == "7b" { 4 } else { 8 }), |s| s.parse())?;
            let steps = arg(&args, "--steps").map_or(Ok(3), |s| s.parse())?;
            let optim = arg(&args, "--optim").unwrap_or_else(|| "fused".into());
            let layer_backward = match arg(&args, "--layer-backward").as_deref() {
                None | Some("manual") => dama_llava::LayerBackward::Manual,
                Some("autograd") => dama_llava::LayerBackward::Autograd,
                Some(o) => anyhow::bail!("--layer-backward {o}: manual or autograd"),
            };
            let ckpt = args.iter().any(|a| a == "--recompute-activations");
            step::run(&dev, &model, pairs, steps, &optim, layer_backward, ckpt)?;
        }
        "generate" => {
            let model = arg(&args, "--model")
                .unwrap_or_else(|| if dev.is_cuda() { "7b" } else { "tiny" }.into());
            let new_tokens = arg(&args, "--new-tokens").map_or(Ok(128), |s| s.parse())?;
            let ok = generate::run(&dev, &model, new_tokens)?;
            println!("{}", serde_json::json!({"check": "generate", "ok": ok}));
            if !ok {
                std::process::exit(1);
            }
        }
        other => anyhow::bail!("unknown mode {other} (check, ops, block, step, generate)"),
    }
    Ok(())
}

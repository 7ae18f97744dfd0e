//! Generation speed of `dama_llava::LlavaModel::generate` on the CPU, on the models, prompts
//! and pixel values `scripts/bench/generate.py prepare WORK` wrote (the same the transformers
//! side times; `scripts/bench-generate.sh` runs both and prints the ratios).
//!
//! ```text
//! bench_generate WORK [--repeat N] [--only tiny|100m]
//! ```
//!
//! Greedy and 3-beam search, batches of 1 and 8; no end token, so every answer runs to its
//! new-token budget (64 tiny, 32 100m) as on the transformers side. tokens/s = answers × new
//! tokens / wall time of the `generate` call (image tower, prefill, decoding), the fastest of
//! `--repeat` runs. Prints one `RESULT {json}` line per measurement.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use dama_llava::{GenerateConfig, Images, LlavaModel, LoadOptions, Prompt, Strategy};

const SHAPES: [(&str, usize); 2] = [("tiny", 64), ("100m", 32)];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut work: Option<PathBuf> = None;
    let (mut repeat, mut only) = (2usize, None::<String>);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().context("--repeat N")?.parse()?,
            "--only" => only = Some(args.next().context("--only tiny|100m")?),
            _ if work.is_none() => work = Some(PathBuf::from(a)),
            other => bail!("unknown argument {other}"),
        }
    }
    let work = work.context("usage: bench_generate WORK [--repeat N] [--only tiny|100m]")?;
    for (shape, new_tokens) in SHAPES {
        if only.as_deref().is_some_and(|o| o != shape) {
            continue;
        }
        bench_shape(&work.join(shape), shape, new_tokens, repeat)?;
    }
    Ok(())
}

fn bench_shape(dir: &Path, shape: &str, new_tokens: usize, repeat: usize) -> Result<()> {
    let model = LlavaModel::load(dir, &LoadOptions::default())
        .with_context(|| format!("loading {}", dir.display()))?;
    let ids: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench_prompts.json"))?)?;
    let pixels = candle_core::safetensors::load(
        dir.join("bench_pixels.safetensors"),
        &Device::Cpu,
    )?["pixel_values"]
        .to_dtype(DType::F32)?;
    for (name, batch, beams) in [
        ("greedy", 1, 1),
        ("greedy", 8, 1),
        ("beam3", 1, 3),
        ("beam3", 8, 3),
    ] {
        let strategy = if beams == 1 {
            Strategy::Greedy
        } else {
            Strategy::Beam {
                num_beams: beams,
                length_penalty: 1.0,
            }
        };
        // no end token: every answer takes its whole budget, as on the transformers side
        let cfg = GenerateConfig {
            strategy,
            eos_token_ids: Vec::new(),
        };
        let prompts: Vec<Prompt> = ids[..batch]
            .iter()
            .map(|p| Prompt::new(p.clone(), new_tokens))
            .collect();
        let px: Tensor = pixels.narrow(0, 0, batch)?;
        let mut best = f64::INFINITY;
        for _ in 0..repeat {
            let t = Instant::now();
            let out = model.generate(&prompts, &Images::Pixels(px.clone()), &cfg, &mut |_| {})?;
            let secs = t.elapsed().as_secs_f64();
            if out.iter().any(|g| g.tokens.len() != new_tokens) {
                bail!("an answer did not run to {new_tokens} tokens");
            }
            best = best.min(secs);
        }
        let tokens = batch * new_tokens;
        println!(
            "RESULT {}",
            serde_json::json!({
                "side": "dama", "shape": shape, "strategy": name, "batch": batch,
                "new_tokens": new_tokens, "seconds": best,
                "tokens_per_s": tokens as f64 / best,
                "setting": format!("f32, {} rayon threads", rayon_threads()),
            })
        );
    }
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
}

//! `generate` on the GPU: the tiny random LLaVA's answers on CUDA against the CPU's (greedy and
//! 3-beam search, a left-padded batch), then tokens/s of a LLaVA-1.5-shaped model with random
//! weights in bf16 (greedy and 3 beams, batches of 1 and 8, 576 image tokens, every answer run
//! to its whole budget: no end token).
//!
//! The equality check is f32 (accumulation order is the only difference, so a flipped argmax
//! would be a bug or a near-tie); bf16 is reported as the share of equal tokens, not judged.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use dama_llava::random::{TinySpec, write_tiny_model};
use dama_llava::weights::WeightFiles;
use dama_llava::{
    GenerateConfig, Images, LlavaModel, LlavaProcessor, LoadOptions, Prompt, Strategy, Trainable,
};
use image::{DynamicImage, Rgb, RgbImage};
use serde_json::json;

const QUESTIONS: [&str; 3] = [
    "What is in the image?",
    "Describe the picture in detail.",
    "What colour is it?",
];

fn image(i: usize) -> DynamicImage {
    let (w, h) = (40 + 9 * i as u32, 30 + 13 * i as u32);
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 5 + 40 * i as u32) as u8,
            (y * 7) as u8,
            ((x + y) * 3) as u8,
        ])
    }))
}

fn strategies() -> [(&'static str, Strategy); 2] {
    [
        ("greedy", Strategy::Greedy),
        (
            "beam3",
            Strategy::Beam {
                num_beams: 3,
                length_penalty: 1.0,
            },
        ),
    ]
}

/// The tiny model's answers (token ids) on `device`, one list per question, per strategy.
fn tiny_answers(
    dir: &std::path::Path,
    device: &Device,
    dtype: DType,
) -> Result<Vec<Vec<Vec<u32>>>> {
    let opts = LoadOptions {
        dtype,
        device: device.clone(),
        trainable: Trainable::Frozen,
    };
    let model = LlavaModel::load(dir, &opts)?;
    let processor = LlavaProcessor::load(dir, model.config())?;
    let images: Vec<DynamicImage> = (0..QUESTIONS.len()).map(image).collect();
    let refs: Vec<&DynamicImage> = images.iter().collect();
    let pixels = processor.pixel_values(&refs, device)?;
    let prompts = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, q)| Ok(Prompt::new(processor.encoder.encode_prompt(i, q)?, 24)))
        .collect::<Result<Vec<_>>>()?;
    strategies()
        .into_iter()
        .map(|(_, strategy)| {
            let cfg = GenerateConfig {
                strategy,
                eos_token_ids: model.config().eos_token_ids.clone(),
            };
            let out =
                model.generate(&prompts, &Images::Pixels(pixels.clone()), &cfg, &mut |_| {})?;
            Ok(out.into_iter().map(|g| g.tokens).collect())
        })
        .collect()
}

/// CUDA against CPU on the tiny model; returns whether f32 gave the same ids.
pub fn check(gpu: &Device) -> Result<bool> {
    let dir = std::env::temp_dir().join(format!("dama-gpu-generate-{}", std::process::id()));
    write_tiny_model(&dir, &TinySpec::default(), 7)?;
    let mut ok = true;
    for dtype in [DType::F32, DType::BF16] {
        let cpu = tiny_answers(&dir, &Device::Cpu, dtype)?;
        let cuda = tiny_answers(&dir, gpu, dtype)?;
        for (((name, _), c), g) in strategies().iter().zip(&cpu).zip(&cuda) {
            let (mut same, mut all) = (0usize, 0usize);
            for (a, b) in c.iter().zip(g) {
                all += a.len().max(b.len());
                same += a.iter().zip(b).take_while(|(x, y)| x == y).count();
            }
            let equal = c == g;
            if dtype == DType::F32 {
                ok &= equal;
            }
            println!(
                "{}",
                json!({"check": "generate tiny model (cuda vs cpu)", "dtype": format!("{dtype:?}"),
                       "strategy": name, "ids_equal": equal,
                       "equal_prefix_share": same as f64 / all.max(1) as f64,
                       "judged": dtype == DType::F32, "cpu": c, "cuda": g})
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

/// tokens/s of the `lm` shape (random weights, bf16 on `dev`).
pub fn speed(dev: &Device, lm: &str, new_tokens: usize) -> Result<()> {
    let cfg = crate::step::config(lm)?;
    let t0 = Instant::now();
    let (weights, _) = crate::step::random_weights(&cfg, dev)?;
    let opts = LoadOptions {
        dtype: if dev.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        },
        device: dev.clone(),
        trainable: Trainable::Frozen,
    };
    let model = LlavaModel::from_weights(
        cfg.clone(),
        WeightFiles::from_tensors(weights, "random (bench)"),
        &opts,
    )?;
    dev.synchronize()?;
    eprintln!(
        "llava-{lm}: random weights in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let np = cfg.num_image_tokens();
    let side = cfg.vision.image_size;
    let prompts: Vec<Prompt> = (0..8)
        .map(|i| {
            let mut ids: Vec<u32> = vec![1];
            ids.extend((0..40).map(|j| 100 + (j * 7) % 800));
            ids.extend(std::iter::repeat_n(cfg.image_token_id, np));
            ids.extend((0..4 + 3 * i).map(|j| 200 + (j * 13 + i) % 700));
            Prompt::new(ids, new_tokens)
        })
        .collect();
    let pixels = Tensor::randn(0f32, 1.0, (8, 3, side, side), dev)?.to_dtype(opts.dtype)?;
    for (name, strategy) in strategies() {
        for batch in [1usize, 8] {
            let cfg = GenerateConfig {
                strategy,
                eos_token_ids: Vec::new(),
            };
            let images = Images::Pixels(pixels.narrow(0, 0, batch)?);
            let mut best = f64::INFINITY;
            for _ in 0..2 {
                dev.synchronize()?;
                let t = Instant::now();
                let out = model.generate(&prompts[..batch], &images, &cfg, &mut |_| {})?;
                dev.synchronize()?;
                best = best.min(t.elapsed().as_secs_f64());
                anyhow::ensure!(
                    out.iter().all(|g| g.tokens.len() == new_tokens),
                    "an answer stopped before {new_tokens} tokens"
                );
            }
            println!(
                "{}",
                json!({"generate": lm, "strategy": name, "batch": batch,
                       "new_tokens": new_tokens, "seconds": best,
                       "tokens_per_s": (batch * new_tokens) as f64 / best,
                       "dtype": format!("{:?}", opts.dtype), "fastest_of": 2})
            );
        }
    }
    Ok(())
}

/// `gpu_bench generate`: the check (on a GPU), then the speed of `lm`.
pub fn run(dev: &Device, lm: &str, new_tokens: usize) -> Result<bool> {
    let ok = if dev.is_cuda() {
        check(dev).context("generate: cuda vs cpu")?
    } else {
        true
    };
    speed(dev, lm, new_tokens)?;
    Ok(ok)
}

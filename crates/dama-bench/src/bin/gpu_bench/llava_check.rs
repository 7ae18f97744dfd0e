//! The whole model on the GPU against the CPU, the trainer's view: a tiny random LLaVA-1.5 in
//! the HF layout (`dama_llava::random::write_tiny_model`), the same batch of pairs on both
//! devices, per-pair answer log-prob sums with the shared prefix compared, and after one
//! backward every trainable tensor must have a finite, non-zero gradient on the GPU that
//! agrees with the CPU's. f32 (accumulation order only) and bf16 (model rounding).

use candle_core::{DType, Device, Result, Tensor};
use dama_llava::random::{TinySpec, write_tiny_model};
use dama_llava::{LlavaModel, LlavaProcessor, LoadOptions, PairExample, Trainable};
use image::{DynamicImage, Rgb, RgbImage};
use serde_json::json;

use crate::check::rel_err;

const PAIRS: [(&str, &str, &str); 3] = [
    (
        "What is in the image?",
        "A red square on a blue background.",
        "A green circle on a white background, next to a small dog.",
    ),
    (
        "Describe the picture.",
        "Two stripes.",
        "There are three yellow stripes and a cat.",
    ),
    ("What colour is it?", "It is mostly blue.", "Red."),
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

fn to_model_err(e: dama_llava::LlavaError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// Log-prob sums `(chosen, rejected)` and the gradients of `Σ chosen − Σ rejected`, by name.
type Run = (Tensor, Tensor, Vec<(String, Option<Tensor>)>);

fn run_on(dir: &std::path::Path, device: &Device, dtype: DType) -> Result<Run> {
    let opts = LoadOptions {
        dtype,
        device: device.clone(),
        trainable: Trainable::Full,
    };
    let model = LlavaModel::load(dir, &opts).map_err(to_model_err)?;
    let processor = LlavaProcessor::load(dir, model.config()).map_err(to_model_err)?;
    let images: Vec<DynamicImage> = (0..PAIRS.len()).map(image).collect();
    let examples: Vec<PairExample<'_>> = PAIRS
        .iter()
        .zip(&images)
        .map(|(&(question, chosen, rejected), image)| PairExample {
            image,
            question,
            chosen,
            rejected,
        })
        .collect();
    let batch = processor.batch(&examples, device).map_err(to_model_err)?;
    let logps = model.pair_logps(&batch, true).map_err(to_model_err)?;
    let objective = (logps.chosen.sum_all()? - logps.rejected.sum_all()?)?;
    let grads = objective.backward()?;
    let named = model
        .trainable_vars()
        .iter()
        .map(|(name, var)| (name.clone(), grads.get(var.as_tensor()).cloned()))
        .collect();
    Ok((logps.chosen, logps.rejected, named))
}

/// Prints one JSON line per dtype; returns whether both passed.
pub fn run(gpu: &Device) -> Result<bool> {
    let dir = std::env::temp_dir().join(format!("dama-gpu-check-llava-{}", std::process::id()));
    write_tiny_model(&dir, &TinySpec::default(), 7).map_err(to_model_err)?;
    let mut all_ok = true;
    for (dtype, tol_logps, tol_grads) in [(DType::F32, 1e-4, 1e-3), (DType::BF16, 3e-2, 1e-1)] {
        let result = (|| -> Result<serde_json::Value> {
            let (cc, cr, cg) = run_on(&dir, &Device::Cpu, dtype)?;
            let (gc, gr, gg) = run_on(&dir, gpu, dtype)?;
            let logp_err = rel_err(&gc, &cc)?.max(rel_err(&gr, &cr)?);
            let mut worst_grad = 0f64;
            let mut bad = Vec::new();
            for ((name, g), (_, c)) in gg.iter().zip(&cg) {
                let (Some(g), Some(c)) = (g, c) else {
                    bad.push(format!("{name}: no gradient"));
                    continue;
                };
                let g32 = g
                    .to_device(&Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?;
                let finite = g32.to_vec1::<f32>()?.iter().all(|x| x.is_finite());
                let nonzero = g32.abs()?.max(0)?.to_scalar::<f32>()? > 0.0;
                if !finite || !nonzero {
                    bad.push(format!("{name}: finite {finite}, non-zero {nonzero}"));
                }
                worst_grad = worst_grad.max(rel_err(g, c)?);
            }
            let ok = bad.is_empty() && logp_err < tol_logps && worst_grad < tol_grads;
            Ok(
                json!({"check": "llava tiny model (cuda vs cpu)", "dtype": format!("{dtype:?}"),
                      "logps_err": logp_err, "worst_grad_err": worst_grad,
                      "trainable_tensors": gg.len(), "bad_gradients": bad,
                      "tol": [tol_logps, tol_grads], "ok": ok,
                      "chosen_logps_gpu": gc.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                      "chosen_logps_cpu": cc.to_dtype(DType::F32)?.to_vec1::<f32>()?}),
            )
        })();
        let line = result.unwrap_or_else(|e| {
            json!({"check": "llava tiny model (cuda vs cpu)", "dtype": format!("{dtype:?}"),
                   "ok": false, "error": e.to_string()})
        });
        all_ok &= line["ok"].as_bool().unwrap_or(false);
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(all_ok)
}

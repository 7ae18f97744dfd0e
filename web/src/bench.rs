//! The CLIP timing that `scripts/bench-web.sh` asks the worker for ([`crate::protocol::ToWorker::Bench`]):
//! image and text encoding per call, and where the image tower's time goes. Plain Rust with the
//! clock passed in, so the same code runs natively in `cargo test` and in the worker. Not used
//! when scoring.

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::scorer::WorkerScorer;

/// Eight sub-sentences of the length the datasets' answers split into.
pub const TEXTS: [&str; 8] = [
    "There is a red circle in the top left corner.",
    "A small blue square sits next to it.",
    "The background is light grey.",
    "Two green triangles point upwards.",
    "A yellow star is in the middle of the image.",
    "The purple rectangle is larger than the circle.",
    "There are five shapes in total.",
    "Nothing overlaps.",
];

/// A text that fills CLIP's context: 77 tokens after truncation.
pub fn long_text() -> String {
    TEXTS.join(" ").repeat(2)
}

/// Per-call times in milliseconds, one entry per repetition (after one warm-up call of each).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The model's shape, for the table: vision (hidden, layers, patches + 1), text (hidden, layers).
    pub shape: String,
    /// One image, end to end: preprocessing, the tower, the projection, the norm.
    pub image: Vec<f64>,
    /// Of which: resize, crop, normalise into a (1, 3, H, W) tensor.
    pub image_preprocess: Vec<f64>,
    /// Patch and position embedding and `pre_layrnorm` (transformers' `hidden_states[0]`).
    pub image_embed: Vec<f64>,
    /// One full encoder layer (`hidden_states[1]` minus `hidden_states[0]`).
    pub image_layer: Vec<f64>,
    /// The pooled tower (`vision_model.forward`: embedding, every layer, post norm).
    pub image_tower: Vec<f64>,
    /// From the ready tensor to the unit-norm embedding (the tower, the projection, the
    /// norm), timed right after the tower.
    #[serde(default)]
    pub image_from_pixels: Vec<f64>,
    /// The end-to-end image call again, right after that (the first one opens each round,
    /// after the text calls of the one before).
    #[serde(default)]
    pub image_again: Vec<f64>,
    /// The eight [`TEXTS`] in one call (tokenise, tower, projection, norm).
    pub texts8: Vec<f64>,
    /// [`long_text`] alone (77 tokens).
    pub text77: Vec<f64>,
    /// Token count of [`long_text`] after truncation.
    pub text77_tokens: usize,
    /// candle's f32 matmul of the MLP's first linear, (tokens, hidden) × (hidden, 4·hidden)ᵀ,
    /// as the tower runs it: milliseconds per call and GFLOP/s.
    pub gemm_ms: Vec<f64>,
    pub gemm_gflops: f64,
    /// Multiply–adds of one image forward's linear layers and attention, in GFLOP (2 per MAC).
    pub image_gflop: f64,
}

/// The synthetic 224×224 image (a gradient: decoding is not part of the timing).
pub fn image(side: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(side, side, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    }))
}

fn time<T>(
    now: &dyn Fn() -> f64,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<(f64, T), String> {
    let t0 = now();
    let out = f()?;
    Ok((now() - t0, out))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs every timing `repeats` times after one warm-up; `now` is a millisecond clock.
pub fn run(
    scorer: &WorkerScorer,
    repeats: usize,
    now: &dyn Fn() -> f64,
) -> Result<BenchReport, String> {
    let s = scorer.clip();
    let (model, dev) = (&s.model, &Device::Cpu);
    let v = &model.config().vision_config;
    let t = &model.config().text_config;
    let img = image(v.image_size as u32);
    let tokens = v.num_patches() + 1;
    let long = long_text();
    let long_ids = s.tokenizer.encode(&long).map_err(err)?;
    let (h, ff) = (v.hidden_size as f64, v.intermediate_size as f64);
    let macs = v.num_hidden_layers as f64
        * tokens as f64
        * (4.0 * h * h + 2.0 * h * ff + 2.0 * tokens as f64 * h)
        + v.num_patches() as f64 * h * (3 * v.patch_size * v.patch_size) as f64;
    let x = Tensor::ones((tokens, v.hidden_size), DType::F32, dev).map_err(err)?;
    let w = Tensor::ones((v.intermediate_size, v.hidden_size), DType::F32, dev).map_err(err)?;
    let mut r = BenchReport {
        shape: format!(
            "vision {}×{} layers, {} tokens; text {}×{} layers",
            v.hidden_size, v.num_hidden_layers, tokens, t.hidden_size, t.num_hidden_layers
        ),
        text77_tokens: long_ids.len(),
        image_gflop: 2.0 * macs / 1e9,
        ..Default::default()
    };
    for rep in 0..=repeats {
        let (image_ms, _) = time(now, || s.image_embeds(&[&img]).map_err(err))?;
        let (pre_ms, px) = time(now, || s.processor.to_tensor(&[&img], dev).map_err(err))?;
        let (embed_ms, _) = time(now, || {
            model.vision_model.hidden_states(&px, 0).map_err(err)
        })?;
        let (one_ms, _) = time(now, || {
            model.vision_model.hidden_states(&px, 1).map_err(err)
        })?;
        let (tower_ms, _) = time(now, || model.vision_model.forward(&px).map_err(err))?;
        let (from_px_ms, _) = time(now, || model.image_embeds(&px).map_err(err))?;
        let (again_ms, _) = time(now, || s.image_embeds(&[&img]).map_err(err))?;
        let (texts_ms, _) = time(now, || {
            let ids = s.tokenizer.encode_ids(&TEXTS).map_err(err)?;
            s.text_embeds_ids(&ids).map_err(err)
        })?;
        let (long_ms, _) = time(now, || {
            let ids = s.tokenizer.encode(&long).map_err(err)?;
            s.text_embeds_ids(&[ids]).map_err(err)
        })?;
        let (gemm, _) = time(now, || w.t().and_then(|wt| x.matmul(&wt)).map_err(err))?;
        if rep == 0 {
            continue; // warm-up
        }
        r.image.push(image_ms);
        r.image_preprocess.push(pre_ms);
        r.image_embed.push(embed_ms);
        r.image_layer.push(one_ms - embed_ms);
        r.image_tower.push(tower_ms);
        r.image_from_pixels.push(from_px_ms);
        r.image_again.push(again_ms);
        r.texts8.push(texts_ms);
        r.text77.push(long_ms);
        r.gemm_ms.push(gemm);
    }
    let gemm = median(&r.gemm_ms);
    r.gemm_gflops =
        2.0 * (tokens * v.hidden_size * v.intermediate_size) as f64 / 1e6 / gemm.max(1e-9);
    Ok(r)
}

/// The median of some times (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scorer::fixture;

    #[test]
    fn the_bench_runs_on_the_tiny_model() {
        let t0 = std::time::Instant::now();
        let now = move || t0.elapsed().as_secs_f64() * 1e3;
        let r = run(&fixture::demo_model(), 2, &now).unwrap();
        for xs in [
            &r.image,
            &r.image_preprocess,
            &r.image_embed,
            &r.image_tower,
            &r.image_from_pixels,
            &r.image_again,
            &r.texts8,
            &r.text77,
            &r.gemm_ms,
        ] {
            assert_eq!(xs.len(), 2);
            assert!(xs.iter().all(|x| x.is_finite() && *x >= 0.0));
        }
        assert_eq!(r.text77_tokens, 77);
        assert!(r.image_gflop > 0.0 && r.shape.contains("3 layers"));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

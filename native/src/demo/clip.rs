//! The demo's CLIP: trained contrastively on the world's training images and their true
//! sentences (each with a hard negative), saved in the Hugging Face layout, and checked on the
//! held-out images through the same scorer `dama-native score` uses.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use dama_clip::train::preprocessor_config;
use dama_clip::{
    ClipScorer, ClipTokenizer, ImageProcessor, TinyClipSpec, TrainableClip,
    word_level_tokenizer_json,
};
use dama_train::{ClipStep, ClipTrainConfig, ClipTrainData, train_clip};
use dama_world::{World, count_hallucinations, vocabulary};
use serde::{Deserialize, Serialize};

use crate::demo::cache;
use crate::progress::Progress;

/// The demo CLIP's shape for images of `image_size` pixels: patches of 8, three vision layers
/// (LLaVA reads the second), two text layers, width 32, the world's words as vocabulary and
/// CLIP's 77-token context. (At
/// width 64 and 56 pixels it trained 6 times slower and told matched from mismatched held-out
/// sentences no better.)
pub fn spec(image_size: usize) -> TinyClipSpec {
    TinyClipSpec {
        vocab_size: vocabulary().len() + 3,
        // CLIP's context length: the tokenizer cuts there, so a long sampled sentence fits
        max_positions: dama_clip::tokenizer::CONTEXT_LENGTH,
        text_hidden: 32,
        text_layers: 2,
        vision_hidden: 32,
        vision_layers: 3,
        heads: 4,
        image_size,
        patch_size: 8,
        projection_dim: 32,
    }
}

/// How the CLIP trains (InfoNCE, AdamW, cosine schedule).
pub fn train_config(epochs: u64, seed: u64) -> ClipTrainConfig {
    ClipTrainConfig {
        epochs,
        batch_size: 96,
        lr: 3e-3,
        warmup_ratio: 0.1,
        weight_decay: 0.0,
        max_grad_norm: Some(1.0),
        seed,
    }
}

/// What the held-out images say about the trained CLIP (Γ from `ClipScorer`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipCheck {
    /// Share of held-out true sentences whose Γ beats their hard negative's (the same
    /// sentence with one attribute false).
    pub true_beats_negative: f64,
    /// Share of held-out images whose own sentence beats another image's sentence that is false
    /// of it.
    pub matched_beats_mismatched: f64,
    /// Mean Γ of the held-out true sentences and of their negatives.
    pub mean_true: f64,
    pub mean_negative: f64,
}

/// The stage's result.
pub struct ClipStage {
    /// The Hugging Face CLIP folder.
    pub dir: PathBuf,
    /// Taken from the cache instead of trained now.
    pub cached: bool,
    pub steps: Vec<ClipStep>,
    pub seconds: f64,
    pub check: ClipCheck,
}

/// Trains the CLIP (or takes it from `cache_root`), then checks it on the held-out images.
pub fn clip_stage(
    world: &World,
    epochs: u64,
    seed: u64,
    cache_root: &Path,
    from_scratch: bool,
    device: &Device,
) -> Result<ClipStage> {
    let started = Instant::now();
    let size = world.spec.image_size as usize;
    let (spec, cfg) = (spec(size), train_config(epochs, seed));
    let dir = cache::entry(
        cache_root,
        "clip",
        &format!("{:?}\n{spec:?}\n{cfg:?}", world.spec),
    );
    let cached = cache::is_done(&dir) && !from_scratch;
    if !cached {
        let tmp = cache::scratch(&dir)?;
        let tokenizer_json = word_level_tokenizer_json(&vocabulary());
        let preprocessor_json = preprocessor_config(size).to_string();
        let tokenizer =
            ClipTokenizer::from_bytes("the world's vocabulary", tokenizer_json.as_bytes())?;
        let processor = ImageProcessor::from_json("preprocessor", preprocessor_json.as_bytes())?;
        let images = world
            .train
            .iter()
            .map(|e| dama_data::decode_rgb(&e.image))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let captions = world.captions();
        let data = ClipTrainData::new(
            &images,
            &processor,
            &tokenizer,
            captions
                .iter()
                .map(|c| (c.image, c.text.as_str(), Some(c.negative.as_str()))),
            device,
        )?;
        let model = TrainableClip::random(&spec.config(), seed, device)?;
        let steps = train_clip(&model, &data, &cfg, "clip", &Progress::default())
            .context("training the CLIP")?;
        model.save(&tmp, &tokenizer_json, &preprocessor_json)?;
        let lines: Vec<String> = steps
            .iter()
            .map(|s| serde_json::to_string(s).expect("steps serialise"))
            .collect();
        std::fs::write(tmp.join("metrics.jsonl"), lines.join("\n") + "\n")?;
        cache::finish(&tmp, &dir)?;
    }
    let steps = read_steps(&dir.join("metrics.jsonl"))?;
    let scorer = ClipScorer::load(&dir, device, DType::F32)
        .with_context(|| format!("loading the trained CLIP {}", dir.display()))?;
    let check = check(&scorer, world)?;
    Ok(ClipStage {
        dir,
        cached,
        steps,
        seconds: started.elapsed().as_secs_f64(),
        check,
    })
}

fn read_steps(path: &Path) -> Result<Vec<ClipStep>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

/// Γ of the held-out images against their own sentences, their hard negatives and other
/// images' sentences.
pub fn check(scorer: &ClipScorer, world: &World) -> Result<ClipCheck> {
    let split = &world.heldout;
    let images = split
        .iter()
        .map(|e| dama_data::decode_rgb(&e.image))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let refs: Vec<_> = images.iter().collect();
    let image_embeds = scorer.image_embeds(&refs)?;
    let captions = world.captions_of(split, "heldout");
    let mut texts: Vec<&str> = captions.iter().map(|c| c.text.as_str()).collect();
    texts.extend(captions.iter().map(|c| c.negative.as_str()));
    let ids = scorer.tokenizer.encode_ids(&texts)?;
    let text_embeds = scorer.text_embeds_ids(&ids)?;
    let gamma = scorer
        .model
        .logits_from_embeds(&image_embeds, &text_embeds)?
        .to_vec2::<f32>()?;
    let n = captions.len();
    let (mut wins, mut sum_true, mut sum_neg) = (0usize, 0f64, 0f64);
    for (k, c) in captions.iter().enumerate() {
        let (t, f) = (gamma[c.image][k], gamma[c.image][n + k]);
        wins += usize::from(t > f);
        sum_true += f64::from(t);
        sum_neg += f64::from(f);
    }
    // Image i against the first sentence of the next image that is false of it.
    let (mut matched, mut compared) = (0usize, 0usize);
    for (i, e) in split.iter().enumerate() {
        let own = captions.iter().position(|c| c.image == i);
        let other = captions.iter().position(|c| {
            c.image == (i + 1) % split.len() && {
                let h = count_hallucinations(&c.text, &e.scene);
                h.hallucinated + h.false_statements > 0
            }
        });
        if let (Some(a), Some(b)) = (own, other) {
            compared += 1;
            matched += usize::from(gamma[i][a] > gamma[i][b]);
        }
    }
    Ok(ClipCheck {
        true_beats_negative: wins as f64 / n.max(1) as f64,
        matched_beats_mismatched: matched as f64 / compared.max(1) as f64,
        mean_true: sum_true / n.max(1) as f64,
        mean_negative: sum_neg / n.max(1) as f64,
    })
}

//! The demo's SFT model: a tiny LLaVA-1.5 whose vision tower is the demo's trained CLIP
//! (frozen), its projector and language model (random at first) fine-tuned on the true
//! descriptions of the world's training images with `dama_train::sft`, the trainer behind
//! `dama-native sft`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use dama_llava::random::{TinySpec, write_llava_from_clip};
use dama_train::prepare::load_processor;
use dama_train::sft::answer_loss;
use dama_train::{
    DataOptions, ReferencePass, SftConfig, SftStep, Silent, TrainData, reference_logps, sft,
};
use serde::{Deserialize, Serialize};

use crate::demo::cache;
use crate::progress::Progress;

/// The language model's shape: the tiny one of `init-tiny` (width 64, 2 layers, the 1024-token
/// BPE tokenizer of the fixtures).
pub fn lm_spec() -> TinySpec {
    TinySpec::default()
}

/// Conversations are cut here (the demo's are about 150 tokens).
pub const MAX_LENGTH: usize = 512;

/// The demo's SFT settings: LLaVA-1.5's recipe with a learning rate for a tiny model trained
/// from scratch, several epochs, and batches of 32.
pub fn sft_config(model: PathBuf, data: PathBuf, epochs: u64, seed: u64) -> SftConfig {
    SftConfig {
        epochs,
        batch_size: 32,
        micro_batch: 32,
        lr: 2e-3,
        warmup_ratio: 0.05,
        seed,
        max_length: Some(MAX_LENGTH),
        ..SftConfig::llava(model, data)
    }
}

/// What the held-out pairs say about the SFT model, against its random-LM starting point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SftCheck {
    /// Cross-entropy per token of the held-out true descriptions.
    pub heldout_loss_init: f64,
    pub heldout_loss: f64,
    /// Share of held-out pairs where log π(true description) > log π(hallucinated one).
    pub accuracy_init: f64,
    pub accuracy: f64,
    /// Mean log π(true) − log π(hallucinated) over the held-out pairs.
    pub gap_init: f64,
    pub gap: f64,
}

pub struct SftStage {
    /// The fine-tuned model (Hugging Face layout): the policy's start and DPO's reference.
    pub model: PathBuf,
    pub cached: bool,
    pub steps: Vec<SftStep>,
    pub seconds: f64,
    pub check: SftCheck,
}

/// Builds the LLaVA on `clip_dir`'s tower, fine-tunes it on `data` (or takes both from
/// `cache_root`), and checks it on the held-out pairs `heldout` (`work` holds the check's
/// log-prob caches).
#[allow(clippy::too_many_arguments)]
pub fn sft_stage(
    clip_dir: &Path,
    data: &Path,
    heldout: &Path,
    epochs: u64,
    seed: u64,
    cache_root: &Path,
    work: &Path,
    from_scratch: bool,
    device: &Device,
) -> Result<SftStage> {
    let started = Instant::now();
    let spec = lm_spec();
    let shape = sft_config(PathBuf::new(), PathBuf::new(), epochs, seed);
    let clip_name = clip_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let dir = cache::entry(
        cache_root,
        "sft",
        &format!(
            "{clip_name:?}\n{spec:?}\n{shape:?}\n{}",
            data_identity(data)?
        ),
    );
    let cached = cache::is_done(&dir) && !from_scratch;
    if !cached {
        let tmp = cache::scratch(&dir)?;
        let init = tmp.join("init");
        write_llava_from_clip(&init, clip_dir, &spec, seed)?;
        let cfg = sft_config(init.clone(), data.to_path_buf(), epochs, seed);
        sft(&cfg, &tmp.join("run"), device, &Progress::default())
            .context("fine-tuning the demo's LLaVA")?;
        cache::finish(&tmp, &dir)?;
    }
    let (init, run) = (dir.join("init"), dir.join("run"));
    let model = run.join("final");
    let steps = read_steps(&run.join("metrics.jsonl"))?;
    let cfg = sft_config(init.clone(), data.to_path_buf(), epochs, seed);
    let check = check(&init, &model, heldout, &cfg, work, device)?;
    Ok(SftStage {
        model,
        cached,
        steps,
        seconds: started.elapsed().as_secs_f64(),
        check,
    })
}

/// The training data's bytes stand for it in the cache key (its images are named in it and
/// drawn from the same world spec, which the CLIP's key holds).
fn data_identity(data: &Path) -> Result<String> {
    let bytes = std::fs::read(data).with_context(|| format!("reading {}", data.display()))?;
    Ok(format!(
        "{:016x}",
        dama_core::hash::Fnv1a::new().bytes(&bytes).finish()
    ))
}

fn read_steps(path: &Path) -> Result<Vec<SftStep>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

fn check(
    init: &Path,
    model: &Path,
    heldout: &Path,
    cfg: &SftConfig,
    work: &Path,
    device: &Device,
) -> Result<SftCheck> {
    let (processor, _) = load_processor(model, cfg.aspect_pad, cfg.max_length)?;
    let data = TrainData::load(heldout, &processor, DataOptions::default())?;
    std::fs::create_dir_all(work)?;
    let logps = |dir: &Path, name: &str| -> Result<(f64, f64)> {
        let cache = work.join(format!("{name}.jsonl"));
        let pass = ReferencePass {
            model_dir: dir,
            max_length: cfg.max_length,
            cache: &cache,
            device,
            dtype: cfg.precision.dtype(),
            batch: 16,
            shared_prefix: true,
        };
        let l = reference_logps(&pass, &data, &processor, &Silent)?;
        let n = l.chosen.len() as f64;
        let wins = l
            .chosen
            .iter()
            .zip(&l.rejected)
            .filter(|(c, r)| c > r)
            .count();
        let gap: f64 = l
            .chosen
            .iter()
            .zip(&l.rejected)
            .map(|(c, r)| f64::from(c - r))
            .sum();
        Ok((wins as f64 / n, gap / n))
    };
    let (accuracy_init, gap_init) = logps(init, "init")?;
    let (accuracy, gap) = logps(model, "sft")?;
    Ok(SftCheck {
        heldout_loss_init: answer_loss(init, &data, cfg, device)?,
        heldout_loss: answer_loss(model, &data, cfg, device)?,
        accuracy_init,
        accuracy,
        gap_init,
        gap,
    })
}

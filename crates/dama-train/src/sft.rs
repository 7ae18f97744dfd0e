//! Supervised fine-tuning (LLaVA's second stage): cross-entropy on the answer tokens only (the
//! prompt and the image are context, never targets), projector and language model trained, the
//! vision tower frozen.
//!
//! It reads any dataset `train` reads and learns the *chosen* answers: the recipe the DPO paper
//! gives for a reference model when no SFT model exists (fine-tune on the preferred
//! completions), and for the demo's world, where the chosen answer is the true description.
//! The data, the template, the order and the optimizer are the preference trainer's own
//! ([`crate::data`], [`crate::order`], [`crate::optim`]); each answer runs as an
//! [`EncodedPair::answer_only`], so the model's shared-prefix forward scores it with nothing
//! spent on a second answer. No checkpoints: a run is short, and is simply run again.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use dama_llava::{EncodedPair, Images, LlavaModel, LoadOptions, PairBatch, Trainable};
use serde::{Deserialize, Serialize};

use crate::config::Precision;
use crate::data::{DataOptions, TrainData};
use crate::error::{Context, Result, TrainError};
use crate::files::write_atomic;
use crate::observer::Observer;
use crate::optim::{
    AdamW, AdamWConfig, GradAccumulator, Master, Param, StateFormat, clip_grad_norm,
};
use crate::order::{Cursor, DataOrder};
use crate::prepare::load_processor;
use crate::schedule::CosineSchedule;

/// Every setting of an SFT run; saved as `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    /// The initial model (a Hugging Face LLaVA folder).
    pub model: PathBuf,
    /// Any dataset `train` reads; its chosen answers are learnt.
    pub data: PathBuf,
    pub images: Option<PathBuf>,
    pub allow_absolute_images: bool,
    pub epochs: u64,
    /// Answers per optimizer step.
    pub batch_size: usize,
    /// Answers per forward/backward pass.
    pub micro_batch: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub max_grad_norm: Option<f64>,
    /// Seeds the data order.
    pub seed: u64,
    pub shuffle: bool,
    #[serde(rename = "dtype")]
    pub precision: Precision,
    pub aspect_pad: bool,
    pub max_length: Option<usize>,
    pub skip_bad: bool,
}

impl SftConfig {
    /// LLaVA-1.5's fine-tuning stage (`finetune.sh`): one epoch, global batch 128, lr 2e-5,
    /// cosine with 3% warm-up, no weight decay, clipping at 1.0 (the HF Trainer's), images
    /// padded to a square, 2048 tokens.
    pub fn llava(model: PathBuf, data: PathBuf) -> Self {
        Self {
            model,
            data,
            images: None,
            allow_absolute_images: false,
            epochs: 1,
            batch_size: 128,
            micro_batch: 16,
            lr: 2e-5,
            warmup_ratio: 0.03,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            max_grad_norm: Some(1.0),
            seed: 42,
            shuffle: true,
            precision: Precision::F32,
            aspect_pad: true,
            max_length: Some(2048),
            skip_bad: false,
        }
    }

    /// The checks that need no file.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Settings(m));
        if self.batch_size == 0 || self.micro_batch == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!(
                "the learning rate must be positive, not {}",
                self.lr
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "the warm-up ratio must be in [0, 1), not {}",
                self.warmup_ratio
            ));
        }
        if self.max_grad_norm.is_some_and(|n| n.is_nan() || n <= 0.0) {
            return bad("the clipping norm must be positive (None for no clipping)".into());
        }
        Ok(())
    }
}

/// One optimizer step of an SFT run (a line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftStep {
    pub step: u64,
    pub epoch: f64,
    pub learning_rate: f64,
    /// Mean cross-entropy per answer token of the batch, in nats.
    pub loss: f64,
    pub grad_norm: f64,
    /// Answer tokens the loss averages over.
    pub tokens: usize,
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct SftSummary {
    pub steps: Vec<SftStep>,
    pub final_dir: PathBuf,
    pub seconds: f64,
}

/// Runs SFT into `out`: `run.json`, `metrics.jsonl`, `final/` (the model, Hugging Face
/// layout). An `out` that already holds a `final/` model is refused.
pub fn sft(
    cfg: &SftConfig,
    out: &Path,
    device: &Device,
    observer: &dyn Observer,
) -> Result<SftSummary> {
    let started = Instant::now();
    cfg.validate()?;
    let final_dir = out.join("final");
    if final_dir.exists() {
        return Err(TrainError::Settings(format!(
            "{} already holds a fine-tuned model: choose another --out",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(TrainError::io("creating", out))?;
    let settings = serde_json::to_string_pretty(cfg).expect("a config serialises") + "\n";
    write_atomic(&out.join("run.json"), settings.as_bytes())?;

    let (processor, positions) = load_processor(&cfg.model, cfg.aspect_pad, cfg.max_length)?;
    let options = DataOptions {
        images: cfg.images.as_deref(),
        skip_bad: cfg.skip_bad,
        absolute_images: cfg.allow_absolute_images,
        max_positions: Some(positions),
    };
    let data = TrainData::load(&cfg.data, &processor, options)?;
    let list = out.join("skipped.jsonl");
    data.summary.write_skipped(&list)?;
    data.report(observer, Some(&list), cfg.max_length);

    let opts = LoadOptions {
        dtype: cfg.precision.dtype(),
        device: device.clone(),
        trainable: Trainable::Full,
    };
    let model = LlavaModel::load(&cfg.model, &opts)
        .with_context(|| format!("loading {}", cfg.model.display()))?;
    let mut opt = AdamW::new(
        Param::all(model.trainable_vars().iter()),
        AdamWConfig {
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
            master: Master::F32,
            state: StateFormat::F32,
        },
    )?;
    let order = DataOrder {
        len: data.pairs.len(),
        batch_size: cfg.batch_size,
        epochs: cfg.epochs,
        seed: cfg.seed,
        shuffle: cfg.shuffle,
    };
    let total = order.total_steps();
    let schedule = CosineSchedule::with_warmup_ratio(cfg.lr, cfg.warmup_ratio, total);
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = BufWriter::new(
        File::create(&metrics_path).map_err(TrainError::io("creating", &metrics_path))?,
    );
    let mut steps = Vec::with_capacity(total as usize);
    let mut cursor = Cursor::default();
    observer.training_started("sft", total, 0);
    while let Some((indices, next)) = order.batch_at(cursor) {
        let t0 = Instant::now();
        let batch = data.batch(&indices, &processor, device)?;
        let step = steps.len() as u64;
        let lr = schedule.lr(step);
        let (loss, tokens, grad_norm) = sft_step(&model, &mut opt, &batch, cfg, lr)
            .with_context(|| format!("SFT step {}", step + 1))?;
        cursor = next;
        let m = SftStep {
            step: step + 1,
            epoch: order.epoch_progress(next),
            learning_rate: lr,
            loss,
            grad_norm,
            tokens,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&m).expect("metrics serialise");
        writeln!(metrics, "{line}").map_err(TrainError::io("writing", &metrics_path))?;
        observer.step_summary(&format!("loss {:.4}", m.loss));
        steps.push(m);
    }
    metrics
        .flush()
        .map_err(TrainError::io("writing", &metrics_path))?;
    observer.training_finished();
    model
        .save_pretrained(&final_dir)
        .with_context(|| format!("saving the fine-tuned model to {}", final_dir.display()))?;
    Ok(SftSummary {
        steps,
        final_dir,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One optimizer step over a global batch: the token-mean cross-entropy of its answers, its
/// gradient summed over micro-batches (each contributes its tokens' share), clipped, AdamW.
/// Returns the loss, the answer tokens and the gradient norm before clipping.
fn sft_step(
    model: &LlavaModel,
    opt: &mut AdamW,
    batch: &PairBatch,
    cfg: &SftConfig,
    lr: f64,
) -> Result<(f64, usize, f64)> {
    let features = match &batch.images {
        Images::Pixels(px) => model.image_features(px)?,
        Images::Features(f) => f.clone(),
    };
    let answers: Vec<EncodedPair> = batch
        .pairs
        .iter()
        .map(|p| EncodedPair::answer_only(p.chosen.clone()))
        .collect();
    let tokens: usize = answers.iter().map(|p| p.chosen.scored_tokens()).sum();
    if tokens == 0 {
        return Err(TrainError::Dataset(
            "a batch without a single answer token".into(),
        ));
    }
    let mut acc = GradAccumulator::new(opt.params().len());
    let mut nll = 0f64;
    for start in (0..answers.len()).step_by(cfg.micro_batch) {
        let len = cfg.micro_batch.min(answers.len() - start);
        let micro = PairBatch {
            images: Images::Features(features.narrow(0, start, len)?),
            pairs: answers[start..start + len].to_vec(),
        };
        let logps = model.pair_logps(&micro, true)?;
        let sum = logps.chosen.sum_all()?;
        nll -= f64::from(sum.to_scalar::<f32>()?);
        let loss = (sum.neg()? / tokens as f64)?;
        acc.add(opt.params(), &loss.backward()?)?;
    }
    let grads = acc.take();
    let (grad_norm, clip) = clip_grad_norm(&grads, cfg.max_grad_norm.unwrap_or(f64::INFINITY))?;
    if !grad_norm.is_finite() {
        return Err(TrainError::Numerics(format!(
            "the gradient norm is {grad_norm}: the step would corrupt the weights"
        )));
    }
    opt.step_clipped(&grads, lr, clip)?;
    Ok((nll / tokens as f64, tokens, grad_norm))
}

/// The mean cross-entropy per answer token of `model_dir` on `data`'s chosen answers (no
/// gradient): what SFT lowers, measured on any split.
pub fn answer_loss(
    model_dir: &Path,
    data: &TrainData,
    cfg: &SftConfig,
    device: &Device,
) -> Result<f64> {
    let (processor, _) = load_processor(model_dir, cfg.aspect_pad, cfg.max_length)?;
    let opts = LoadOptions {
        dtype: cfg.precision.dtype(),
        device: device.clone(),
        trainable: Trainable::Frozen,
    };
    let model = LlavaModel::load(model_dir, &opts)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let (mut nll, mut tokens) = (0f64, 0usize);
    let idx: Vec<usize> = (0..data.pairs.len()).collect();
    for chunk in idx.chunks(cfg.micro_batch.max(1)) {
        let mut b = data.batch(chunk, &processor, device)?;
        b.pairs = b
            .pairs
            .iter()
            .map(|p| EncodedPair::answer_only(p.chosen.clone()))
            .collect();
        tokens += b
            .pairs
            .iter()
            .map(|p| p.chosen.scored_tokens())
            .sum::<usize>();
        let logps = model.pair_logps_no_grad(&b, true)?;
        let sums: Tensor = logps.chosen;
        nll -= f64::from(sums.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(nll / tokens.max(1) as f64)
}

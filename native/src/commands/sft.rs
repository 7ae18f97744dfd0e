//! `sft`: supervised fine-tuning of LLaVA-1.5 on the chosen answers of a dataset (LLaVA's
//! second stage; the DPO paper's recipe for a reference model). Defaults are LLaVA-1.5's.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use dama_train::{Precision, SftConfig, sft};

use crate::args::{ModelArgs, choice};
use crate::device::{DeviceArgs, describe};
use crate::plots::{Series, line_chart};
use crate::progress::Progress;

/// LLaVA-1.5's fine-tuning settings: the defaults every flag shows.
fn llava() -> SftConfig {
    SftConfig::llava(PathBuf::new(), PathBuf::new())
}

#[derive(Debug, Clone, Args)]
pub struct SftArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The data: any dataset `train` reads (its chosen answers are learnt; the rejected ones
    /// are read and ignored).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder the dataset's image paths are relative to.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output folder: run.json, metrics.jsonl, final/ (the model), plots/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = llava().epochs)]
    pub epochs: u64,
    /// Answers per optimizer step.
    #[arg(long, default_value_t = llava().batch_size)]
    pub batch_size: usize,
    /// Answers per forward/backward pass.
    #[arg(long, default_value_t = llava().micro_batch)]
    pub micro_batch: usize,
    /// Peak learning rate (cosine schedule).
    #[arg(long, default_value_t = llava().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = llava().warmup_ratio)]
    pub warmup_ratio: f64,
    #[arg(long, default_value_t = llava().weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = llava().adam_beta1)]
    pub adam_beta1: f64,
    #[arg(long, default_value_t = llava().adam_beta2)]
    pub adam_beta2: f64,
    #[arg(long, default_value_t = llava().adam_eps)]
    pub adam_eps: f64,
    /// Clip the global gradient norm (0 = no clipping).
    #[arg(long, default_value_t = llava().max_grad_norm.unwrap_or(0.0))]
    pub max_grad_norm: f64,
    /// Seeds the data order.
    #[arg(long, default_value_t = llava().seed)]
    pub seed: u64,
    /// Keep the dataset's order every epoch.
    #[arg(long)]
    pub sequential: bool,
    /// Weights' dtype (f32 masters and moments either way). Default: bf16 on CUDA, f32 on CPU.
    #[arg(long, value_parser = choice::<Precision>())]
    pub precision: Option<Precision>,
    /// Resize and crop images instead of padding them to a square (LLaVA-1.5 pads).
    #[arg(long)]
    pub no_pad: bool,
    /// Cut conversations to this many tokens.
    #[arg(long, default_value_t = llava().max_length.expect("LLaVA cuts at 2048"))]
    pub max_length: usize,
    /// Report and skip bad records instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Read absolute image paths where they point.
    #[arg(long)]
    pub allow_absolute_images: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl SftArgs {
    /// The run these flags describe (checked by [`SftConfig::validate`] when it starts).
    pub fn config(&self, model: PathBuf, cuda: bool) -> SftConfig {
        SftConfig {
            model,
            data: self.data.clone(),
            images: self.images.clone(),
            allow_absolute_images: self.allow_absolute_images,
            epochs: self.epochs,
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            weight_decay: self.weight_decay,
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_eps: self.adam_eps,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            seed: self.seed,
            shuffle: !self.sequential,
            precision: self.precision.unwrap_or(Precision::default_for(cuda)),
            aspect_pad: !self.no_pad,
            max_length: Some(self.max_length),
            skip_bad: self.skip_bad,
        }
    }
}

pub fn run(args: &SftArgs) -> Result<()> {
    let device = args.device.device()?;
    let model = args.model.resolve(&args.model.model)?;
    let cfg = args.config(model, device.is_cuda());
    cfg.validate()?;
    eprintln!(
        "supervised fine-tuning on {} ({}), output in {}",
        describe(&device),
        cfg.precision,
        args.out.display()
    );
    let summary = sft(&cfg, &args.out, &device, &Progress::default()).context("fine-tuning")?;
    let (first, last) = (
        summary.steps.first().context("no step was run")?,
        summary.steps.last().context("no step was run")?,
    );
    println!(
        "{} steps in {:.1} s: answer-token loss {:.4} → {:.4}",
        last.step, summary.seconds, first.loss, last.loss
    );
    println!("model: {}", summary.final_dir.display());
    println!("metrics: {}", args.out.join("metrics.jsonl").display());
    let plots = args.out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let path = plots.join("loss.png");
    let points = summary
        .steps
        .iter()
        .map(|s| (s.step as f64, s.loss))
        .collect();
    line_chart(
        &path,
        "SFT: cross-entropy per answer token",
        "step",
        "loss (nats)",
        &[Series {
            name: "sft",
            points,
            band: None,
        }],
    )?;
    println!("plot: {}", path.display());
    Ok(())
}

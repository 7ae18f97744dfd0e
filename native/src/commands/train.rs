//! `train`: DPO / D²PO / MDPO / DAMA fine-tuning of LLaVA-1.5. Defaults are the paper's.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use dama_core::{Combine, DamaConfig, Filter, Mode, Preset};

use crate::device::{DeviceArgs, Precision, describe};
use crate::hub::{HubOptions, MODEL_FILES, resolve_model};
use crate::train::run::{LoraSettings, OptimMaster, TrainConfig, train};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Plain DPO: fixed β, every pair.
    Dpo,
    /// Data-aware: β_D = β·α_D per pair (needs a scored dataset).
    D2po,
    /// Model-aware: β_M = β·α_M, outliers masked.
    Mdpo,
    /// Both (the paper's method): β_C = β·α_D·α_M, outliers masked.
    Dama,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// The authors' released code (produced the published numbers).
    Official,
    /// Eqs. 8–14 as printed in the paper.
    Paper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilterArg {
    /// Keep every pair.
    None,
    /// Drop the N−K smallest reward gaps.
    Bottom,
    /// Drop the N−K largest.
    Top,
    /// Drop both extremes (the preset's own rule).
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: a Hugging Face folder, or a repo id (`llava-hf/llava-1.5-7b-hf`) looked up in
    /// the HF cache and downloaded there unless --offline.
    #[arg(long)]
    pub model: String,
    /// The Hugging Face hub cache (default: as huggingface_hub decides, $HF_HOME…).
    #[arg(long)]
    pub hf_cache: Option<PathBuf>,
    /// Never download; also set by HF_HUB_OFFLINE=1.
    #[arg(long)]
    pub offline: bool,
}

impl ModelArgs {
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        resolve_model(
            spec,
            MODEL_FILES,
            &HubOptions::from_env(self.hf_cache.clone(), self.offline),
        )
    }
}

/// How pairs become model inputs; `train` and `ref-logps` must agree on these.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Weights' dtype (f32 masters and moments in the optimizer either way). Default: bf16 on
    /// CUDA, f32 on CPU.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Resize and crop images instead of padding them to a square (LLaVA-1.5 pads).
    #[arg(long)]
    pub no_pad: bool,
    /// Cut conversations to this many tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_length: usize,
    /// Run chosen and rejected as two full sequences instead of sharing the prefix.
    #[arg(long)]
    pub no_shared_prefix: bool,
    /// Report and skip bad records (missing/corrupt image, empty answer, no scored token)
    /// instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

impl InputArgs {
    pub fn precision(&self, cuda: bool) -> Precision {
        self.precision.unwrap_or(if cuda {
            Precision::Bf16
        } else {
            Precision::F32
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The reference model (default: the initial policy, --model).
    #[arg(long)]
    pub ref_model: Option<String>,
    /// Preference data: RLAIF-V parquet (file or folder of shards), JSONL with --images, the
    /// authors' JSON list, or a dataset annotated by `dama-native score` (needed for d2po/dama).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder the dataset's image paths are relative to.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output folder: run.json, metrics.jsonl, checkpoints/, final/, plots/.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its latest checkpoint, exactly.
    #[arg(long)]
    pub resume: bool,

    #[arg(long, value_enum, default_value_t = ModeArg::Dama)]
    pub mode: ModeArg,
    #[arg(long, value_enum, default_value_t = PresetArg::Official)]
    pub preset: PresetArg,
    #[arg(long, value_enum, default_value_t = FilterArg::Both)]
    pub filter: FilterArg,
    /// K, pairs kept of each global batch (default floor(0.8·N): 12 of 16).
    #[arg(long)]
    pub keep: Option<usize>,
    /// Combine α_D and α_M as (1−ρ)·α_M + ρ·α_D instead of their product (Figs. 4–5).
    #[arg(long)]
    pub weighted_sum: Option<f32>,
    /// DPO's β.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f32,
    /// Momentum of the reward-gap moving average ḡ.
    #[arg(long, default_value_t = 0.9)]
    pub gamma: f32,

    /// Global batch N (pairs per optimizer step).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Pairs per forward/backward pass (default: the whole global batch).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub epochs: u64,
    /// Peak learning rate (cosine schedule).
    #[arg(long, default_value_t = 5e-7)]
    pub lr: f64,
    /// Share of the steps spent warming up linearly.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    pub adam_beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    pub adam_beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// AdamW's master weights: `f32` (an fp32 copy, exactly torch's AdamW) or `bf16-sr` (bf16
    /// weights are their own master, rounded stochastically: 8 bytes of state per parameter
    /// instead of 12; a 7B full fine-tune then fits one 141 GB H200: 98 GB peak at 4 pairs).
    #[arg(long, value_enum, default_value = "f32")]
    pub optim_master: OptimMaster,
    /// Recompute each decoder layer in the backward instead of keeping its activations: the
    /// same numbers with a fraction of the activation memory, for one more forward of the
    /// language model per pass (larger micro-batches on one GPU). Free to change on resume.
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// Clip the global gradient norm (0 = no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Seeds the data order and the DAMA sampling stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the dataset's order every epoch (the authors' SequentialSampler).
    #[arg(long)]
    pub sequential: bool,

    /// Train LoRA adapters on the language model instead of all of it.
    #[arg(long)]
    pub lora: bool,
    #[arg(long, default_value_t = 64)]
    pub lora_rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub lora_targets: Vec<String>,
    /// With --lora, also train the projector fully (LLaVA's LoRA recipe).
    #[arg(long)]
    pub lora_train_projector: bool,

    #[command(flatten)]
    pub input: InputArgs,

    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub save_every: u64,
    /// Checkpoints kept on disk.
    #[arg(long, default_value_t = 2)]
    pub save_total_limit: usize,
    /// Reference log-prob cache (default: <out>/ref_logps.jsonl).
    #[arg(long)]
    pub ref_cache: Option<PathBuf>,

    #[command(flatten)]
    pub device: DeviceArgs,
}

impl TrainArgs {
    pub fn config(&self, model: PathBuf, ref_model: Option<PathBuf>, cuda: bool) -> TrainConfig {
        let mode = match self.mode {
            ModeArg::Dpo => Mode::Dpo,
            ModeArg::D2po => Mode::D2po,
            ModeArg::Mdpo => Mode::Mdpo,
            ModeArg::Dama => Mode::Dama,
        };
        let preset = match self.preset {
            PresetArg::Official => Preset::Official,
            PresetArg::Paper => Preset::Paper,
        };
        let filter = match self.filter {
            FilterArg::None => Filter::None,
            FilterArg::Bottom => Filter::Bottom,
            FilterArg::Top => Filter::Top,
            FilterArg::Both => Filter::Both,
        };
        let combine = self
            .weighted_sum
            .map_or(Combine::Product, Combine::WeightedSum);
        let precision = self.input.precision(cuda);
        TrainConfig {
            model,
            ref_model,
            data: self.data.clone(),
            images: self.images.clone(),
            dama: DamaConfig {
                mode,
                preset,
                filter,
                combine,
                beta: self.beta,
                gamma: self.gamma,
                keep: self.keep,
            },
            batch_size: self.batch_size,
            micro_batch: self.micro_batch.unwrap_or(self.batch_size),
            epochs: self.epochs,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            weight_decay: self.weight_decay,
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_eps: self.adam_eps,
            optim_master: self.optim_master,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            seed: self.seed,
            shuffle: !self.sequential,
            lora: self.lora.then(|| LoraSettings {
                rank: self.lora_rank,
                alpha: self.lora_alpha,
                targets: self.lora_targets.clone(),
                train_projector: self.lora_train_projector,
            }),
            dtype: format!("{:?}", precision.dtype()).to_lowercase(),
            aspect_pad: !self.input.no_pad,
            max_length: Some(self.input.max_length),
            shared_prefix: !self.input.no_shared_prefix,
            save_every: self.save_every,
            save_total_limit: self.save_total_limit,
            skip_bad: self.input.skip_bad,
            ref_cache: self.ref_cache.clone(),
            activation_checkpointing: self.activation_checkpointing,
        }
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let device = args.device.device()?;
    let model = args.model.resolve(&args.model.model)?;
    let ref_model = args
        .ref_model
        .as_deref()
        .map(|m| args.model.resolve(m))
        .transpose()?;
    let cfg = args.config(model, ref_model, device.is_cuda());
    eprintln!(
        "training {} on {} ({}), output in {}",
        cfg.dama.mode,
        describe(&device),
        cfg.dtype,
        args.out.display()
    );
    let summary = train(&cfg, &args.out, args.resume, &device).context("training")?;
    let last = summary.steps.last().context("no step was run")?;
    println!(
        "{} steps in {:.1} s: loss {:.4}, reward margin {:+.4}, accuracy {:.2}",
        last.step, summary.seconds, last.loss, last.rewards_margins, last.rewards_accuracies
    );
    println!("model: {}", summary.final_dir.display());
    println!("metrics: {}", args.out.join("metrics.jsonl").display());
    for p in &summary.plots {
        println!("plot: {}", p.display());
    }
    Ok(())
}

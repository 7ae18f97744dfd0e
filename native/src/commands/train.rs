//! `train`: DPO / D²PO / MDPO / DAMA fine-tuning of LLaVA-1.5. Defaults are the paper's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use dama_core::{Combine, DamaConfig, Filter, Mode, Preset};
use dama_train::dist::{Collectives, Dist, DistOptions, Engine, Launch, ZeroStage};
use dama_train::{LoraSettings, Observer, OptimMaster, OptimState, Silent, TrainConfig, train_on};

use crate::args::{InputArgs, ModelArgs, choice, paper};
use crate::commands::plan::{self, PlanArgs};
use crate::device::{DeviceArgs, describe};
use crate::launcher::{self, LauncherKind};
use crate::progress::Progress;
use crate::report::{NamedRun, plot_runs};

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The reference model (default: the initial policy, --model).
    #[arg(long)]
    pub ref_model: Option<String>,
    /// Preference data: RLAIF-V parquet (file or folder of shards), JSONL with --images, the
    /// authors' JSON list, or a dataset annotated by `dama-native score` (needed for d2po/dama).
    #[arg(long, required_unless_present = "plan")]
    pub data: Option<PathBuf>,
    /// Folder the dataset's image paths are relative to.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output folder: run.json, metrics.jsonl, checkpoints/, final/, plots/.
    #[arg(long, required_unless_present = "plan")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint, exactly.
    #[arg(long)]
    pub resume: bool,

    /// dpo (fixed β, every pair), d2po (β·α_D per pair; needs a scored dataset), mdpo
    /// (β·α_M, outliers masked), dama (β·α_D·α_M, outliers masked: the paper's method).
    #[arg(long, value_parser = choice::<Mode>(), default_value_t = paper().dama.mode)]
    pub mode: Mode,
    /// official (the authors' released code, which produced the published numbers) or paper
    /// (Eqs. 8–14 as printed).
    #[arg(long, value_parser = choice::<Preset>(), default_value_t = paper().dama.preset)]
    pub preset: Preset,
    /// Which reward gaps are masked: none, bottom (the N−K smallest), top (the N−K largest),
    /// both (the preset's own rule).
    #[arg(long, value_parser = choice::<Filter>(), default_value_t = paper().dama.filter)]
    pub filter: Filter,
    /// K, pairs kept of each global batch (default floor(0.8·N): 12 of 16).
    #[arg(long)]
    pub keep: Option<usize>,
    /// Combine α_D and α_M as (1−ρ)·α_M + ρ·α_D instead of their product (Figs. 4–5).
    #[arg(long)]
    pub weighted_sum: Option<f32>,
    /// DPO's β.
    #[arg(long, default_value_t = paper().dama.beta)]
    pub beta: f32,
    /// Momentum of the reward-gap moving average ḡ.
    #[arg(long, default_value_t = paper().dama.gamma)]
    pub gamma: f32,

    /// Global batch N (pairs per optimizer step).
    #[arg(long, default_value_t = paper().batch_size)]
    pub batch_size: usize,
    /// Pairs per forward/backward pass (default: the whole global batch).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    #[arg(long, default_value_t = paper().epochs)]
    pub epochs: u64,
    /// Peak learning rate (cosine schedule).
    #[arg(long, default_value_t = paper().lr)]
    pub lr: f64,
    /// Share of the steps spent warming up linearly.
    #[arg(long, default_value_t = paper().warmup_ratio)]
    pub warmup_ratio: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = paper().weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = paper().adam_beta1)]
    pub adam_beta1: f64,
    #[arg(long, default_value_t = paper().adam_beta2)]
    pub adam_beta2: f64,
    #[arg(long, default_value_t = paper().adam_eps)]
    pub adam_eps: f64,
    /// AdamW's master weights: `f32` (an fp32 copy, exactly torch's AdamW) or `bf16-sr` (bf16
    /// weights are their own master, rounded stochastically: 8 bytes of state per parameter
    /// instead of 12; a 7B full fine-tune then fits one 141 GB H200: 98 GB peak at 4 pairs).
    #[arg(long, value_parser = choice::<OptimMaster>(), default_value_t = paper().optim_master)]
    pub optim_master: OptimMaster,
    /// AdamW's moments: `f32` (exactly torch's AdamW, 8 bytes per parameter) or `8bit`
    /// (bitsandbytes' block-wise dynamic quantisation: 2 bytes per parameter; tensors under
    /// 4096 values stay f32). With `--optim-master bf16-sr` a 7B full fine-tune keeps 6 bytes
    /// of model state per parameter (weights, gradients, moments): 41 GB.
    #[arg(long, value_parser = choice::<OptimState>(), default_value_t = paper().optim_state)]
    pub optim_state: OptimState,
    /// Recompute each decoder layer in the backward instead of keeping its activations: the
    /// same numbers with a fraction of the activation memory, for one more forward of the
    /// language model per pass (larger micro-batches on one GPU); what other frameworks call
    /// activation or gradient checkpointing. Free to change on resume.
    #[arg(long, visible_alias = "activation-checkpointing")]
    pub recompute_activations: bool,
    /// Clip the global gradient norm (0 = no clipping).
    #[arg(long, default_value_t = paper().max_grad_norm.unwrap_or(0.0))]
    pub max_grad_norm: f64,
    /// Seeds the data order and the DAMA sampling stream.
    #[arg(long, default_value_t = paper().seed)]
    pub seed: u64,
    /// Keep the dataset's order every epoch (the authors' SequentialSampler).
    #[arg(long)]
    pub sequential: bool,

    /// Train LoRA adapters on the language model instead of all of it.
    #[arg(long)]
    pub lora: bool,
    #[arg(long, default_value_t = LoraSettings::llava().rank)]
    pub lora_rank: usize,
    #[arg(long, default_value_t = LoraSettings::llava().alpha)]
    pub lora_alpha: f64,
    #[arg(long, value_delimiter = ',', default_values_t = LoraSettings::llava().targets)]
    pub lora_targets: Vec<String>,
    /// With --lora, also train the projector fully (LLaVA's LoRA recipe).
    #[arg(long)]
    pub lora_train_projector: bool,

    #[command(flatten)]
    pub input: InputArgs,

    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = paper().save_every)]
    pub save_every: u64,
    /// Checkpoints kept on disk.
    #[arg(long, default_value_t = paper().save_total_limit)]
    pub save_total_limit: usize,
    /// Reference log-prob cache (default: <out>/ref_logps.jsonl).
    #[arg(long)]
    pub ref_cache: Option<PathBuf>,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub plan: PlanArgs,

    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// Data-parallel training: several ranks, each with its share of every global batch.
#[derive(Debug, Clone, Args)]
pub struct ParallelArgs {
    /// Start this many local ranks (processes: through mpirun on the CPU, one per GPU on
    /// CUDA). Ranks started by torchrun, srun or mpirun need no --nproc: they read the
    /// launcher's variables (RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS, OMPI_COMM_WORLD_*).
    #[arg(long)]
    pub nproc: Option<usize>,
    /// How --nproc starts the ranks: auto (mpirun on the CPU, spawned on CUDA), mpirun, spawn.
    #[arg(long, value_enum, default_value_t = LauncherKind::Auto)]
    pub launcher: LauncherKind,
    /// The collectives: auto (NCCL on CUDA, MPI on the CPU), mpi or nccl.
    #[arg(long, value_parser = choice::<Engine>(), default_value_t = Engine::Auto)]
    pub dist_engine: Engine,
    /// ZeRO stage: 0 (optimizer state on every rank), 1 (sharded), 2 (sharded, and the
    /// gradients reduce-scattered). The same weights either way. Free to change on resume.
    #[arg(long, value_parser = choice::<ZeroStage>(), default_value_t = paper().zero)]
    pub zero: ZeroStage,
    /// Elements per collective call of the gradient and weight exchanges.
    #[arg(long, default_value_t = paper().bucket_size)]
    pub bucket_size: usize,
    /// Sum the gradients over the ranks only after the backward, not bucket by bucket inside
    /// it (ZeRO-0/1 overlap the two by default; the same sums either way).
    #[arg(long)]
    pub no_overlap_grads: bool,
    /// Seconds a rank may keep the others waiting (or stay silent) before the job stops
    /// naming it; also the limit for the ranks to find each other.
    #[arg(long, default_value_t = 600.0)]
    pub dist_timeout: f64,
}

impl TrainArgs {
    /// The run these flags describe, on the paper's settings where a flag is not given.
    pub fn config(&self, model: PathBuf, ref_model: Option<PathBuf>, cuda: bool) -> TrainConfig {
        let combine = self
            .weighted_sum
            .map_or(Combine::Product, Combine::WeightedSum);
        TrainConfig {
            model,
            ref_model,
            data: self.data.clone().unwrap_or_default(),
            images: self.images.clone(),
            allow_absolute_images: self.input.allow_absolute_images,
            dama: DamaConfig {
                mode: self.mode,
                preset: self.preset,
                filter: self.filter,
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
            optim_state: self.optim_state,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            seed: self.seed,
            shuffle: !self.sequential,
            lora: self.lora.then(|| LoraSettings {
                rank: self.lora_rank,
                alpha: self.lora_alpha,
                targets: self.lora_targets.clone(),
                train_projector: self.lora_train_projector,
            }),
            precision: self.input.precision(cuda),
            aspect_pad: !self.input.no_pad,
            max_length: Some(self.input.max_length),
            shared_prefix: !self.input.no_shared_prefix,
            save_every: self.save_every,
            save_total_limit: self.save_total_limit,
            skip_bad: self.input.skip_bad,
            ref_cache: self.ref_cache.clone(),
            recompute_activations: self.recompute_activations,
            zero: self.parallel.zero,
            bucket_size: self.parallel.bucket_size,
            overlap_grads: !self.parallel.no_overlap_grads,
        }
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let device = args.device.device()?;
    if args.plan.plan {
        // a GPU's defaults (bf16) when planning for a card from the CPU
        let gpu = device.is_cuda() || args.plan.gpu_memory.is_some();
        let path = match plan::plan_model_path(&args.model.model) {
            Some(p) => p,
            None => args.model.resolve(&args.model.model)?,
        };
        let cfg = args.config(path.clone(), None, gpu);
        // the run's own world: --nproc, else the launcher's (torchrun, srun, mpirun), else 1
        let world = match args.parallel.nproc {
            Some(n) => n,
            None => Launch::from_env()?.world_size,
        };
        return plan::print_plan(&args.plan, &cfg, &path, &device, world);
    }
    let out = args.out.clone().context("--out is required")?;
    let par = &args.parallel;
    let child = launcher::is_child();
    if let Some(n) = par.nproc
        && !child
    {
        let launch = Launch::from_env()?;
        launch.check_nproc(Some(n), false)?;
        let cuda = args.device.device()?.is_cuda();
        let own: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let code = launcher::run(n, par.launcher, cuda, &own)?;
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    let launch = Launch::from_env()?;
    launch.check_nproc(par.nproc, child)?;
    let (rank, world) = (launch.rank, launch.world_size);
    let device = args.device.device_for_rank(launch.local_rank, world)?;
    let options = DistOptions {
        engine: par.dist_engine,
        timeout: Duration::from_secs_f64(par.dist_timeout.max(0.001)),
        on_fault: None,
    };
    let dist = Dist::init(launch, &options, &device)
        .with_context(|| format!("starting rank {rank} of {world}"))?;
    match train_rank(args, &out, &device, &dist) {
        Ok(()) => {
            dist.finish()?;
            Ok(())
        }
        Err(e) if world > 1 => {
            // The others would wait for this rank in their next collective: tell them, and
            // leave without MPI's finalize (which would wait for them).
            let message = format!("{e:#}");
            dist.fail(&message);
            eprintln!("rank {rank}: error: {message}");
            std::process::exit(1);
        }
        Err(e) => Err(e),
    }
}

/// One rank's run (the whole run with one rank); rank 0 alone reports and plots.
fn train_rank(
    args: &TrainArgs,
    out: &std::path::Path,
    device: &candle_core::Device,
    dist: &Dist,
) -> Result<()> {
    let model = args.model.resolve(&args.model.model)?;
    let ref_model = args
        .ref_model
        .as_deref()
        .map(|m| args.model.resolve(m))
        .transpose()?;
    let cfg = args.config(model, ref_model, device.is_cuda());
    let world = dist.world_size();
    plan::check(&args.plan, &cfg, &cfg.model, device, world)?;
    let main = dist.is_main();
    if main {
        let ranks = if world > 1 {
            format!(" × {world} ranks ({}, ZeRO-{})", dist.engine(), cfg.zero)
        } else {
            String::new()
        };
        eprintln!(
            "training {} on {}{ranks} ({}), output in {}",
            cfg.dama.mode,
            describe(device),
            cfg.precision,
            out.display()
        );
    }
    let progress = Progress::default();
    let observer: &dyn Observer = if main { &progress } else { &Silent };
    let summary = train_on(&cfg, out, args.resume, device, observer, dist).context("training")?;
    if !main {
        return Ok(());
    }
    let last = summary.steps.last().context("no step was run")?;
    println!(
        "{} steps in {:.1} s: loss {:.4}, reward margin {:+.4}, accuracy {:.2}",
        last.step, summary.seconds, last.loss, last.rewards_margins, last.rewards_accuracies
    );
    println!("model: {}", summary.final_dir.display());
    println!("metrics: {}", out.join("metrics.jsonl").display());
    let plots_dir = out.join("plots");
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("creating {}", plots_dir.display()))?;
    let name = cfg.dama.mode.to_string();
    let run = NamedRun {
        name: &name,
        steps: &summary.steps,
    };
    for p in plot_runs(&plots_dir, &[run])? {
        println!("plot: {}", p.display());
    }
    Ok(())
}

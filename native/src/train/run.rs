//! A whole training run: data, reference log-probs, the policy, the loop over global batches,
//! metrics, checkpoints, resume, the final model and plots.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{DType, Device};
use dama_core::{DamaConfig, DamaState};
use dama_llava::{AspectMode, LlavaModel, LlavaProcessor, LoadOptions, LoraConfig, Trainable};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, TrainerState};
use super::data::TrainData;
use super::metrics::{MetricsLog, StepMetrics};
use super::order::{Cursor, DataOrder};
use super::reference::reference_logps;
use super::report::{NamedRun, plot_runs};
use super::step::{BatchRefs, StepSettings, train_step};
use crate::optim::{AdamW, AdamWConfig, Master, Param};
use crate::ref_cache::hash_parts;
use crate::schedule::CosineSchedule;

/// The optimizer's master weights (`--optim-master`): an fp32 copy per non-f32 variable (the
/// default, exactly torch's fp32 AdamW), or `bf16-sr`: bf16 variables are their own master,
/// each update rounded stochastically (seeded by the run's seed; 8 bytes of optimizer state
/// per parameter instead of 12). No effect on f32 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum OptimMaster {
    #[default]
    #[serde(rename = "f32")]
    #[value(name = "f32")]
    F32,
    #[serde(rename = "bf16-sr")]
    #[value(name = "bf16-sr")]
    Bf16Sr,
}

impl OptimMaster {
    fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

/// LoRA settings of a run (`None` in [`TrainConfig::lora`] = full fine-tuning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub train_projector: bool,
}

/// Everything that defines a run. Saved as `run.json`; a resume must present the same values
/// (except the fields marked as free to change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Initial policy weights (a Hugging Face folder).
    pub model: PathBuf,
    /// Reference model; the initial policy when `None`.
    pub ref_model: Option<PathBuf>,
    pub data: PathBuf,
    pub images: Option<PathBuf>,
    pub dama: DamaConfig<f32>,
    /// Global batch N.
    pub batch_size: usize,
    pub micro_batch: usize,
    pub epochs: u64,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Absent from `run.json` (and its hash) when f32, so older runs resume unchanged.
    #[serde(default, skip_serializing_if = "OptimMaster::is_f32")]
    pub optim_master: OptimMaster,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    pub shuffle: bool,
    pub lora: Option<LoraSettings>,
    pub dtype: String,
    pub aspect_pad: bool,
    pub max_length: Option<usize>,
    pub shared_prefix: bool,
    // Free to change on resume:
    pub save_every: u64,
    pub save_total_limit: usize,
    pub skip_bad: bool,
    pub ref_cache: Option<PathBuf>,
    /// Recompute each decoder layer in the backward instead of keeping its activations (same
    /// numbers, less memory, one more forward of the language model per pass).
    #[serde(default)]
    pub activation_checkpointing: bool,
}

impl TrainConfig {
    /// The paper's run on `data` from `model`: DAMA with the `official` preset, N = 16,
    /// 4 epochs, AdamW lr 5e-7 (cosine, 10% warm-up, no weight decay), clipping at 1.0, full
    /// fine-tuning in f32, images padded, 2048 tokens, shared prefix; checkpoints every 100 steps.
    pub fn paper(model: PathBuf, data: PathBuf) -> Self {
        Self {
            model,
            ref_model: None,
            data,
            images: None,
            dama: DamaConfig::default(),
            batch_size: 16,
            micro_batch: 16,
            epochs: 4,
            lr: 5e-7,
            warmup_ratio: 0.1,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            optim_master: OptimMaster::F32,
            max_grad_norm: Some(1.0),
            seed: 42,
            shuffle: true,
            lora: None,
            dtype: "f32".into(),
            aspect_pad: true,
            max_length: Some(2048),
            shared_prefix: true,
            save_every: 100,
            save_total_limit: 2,
            skip_bad: false,
            ref_cache: None,
            activation_checkpointing: false,
        }
    }

    fn dtype(&self) -> Result<DType> {
        Ok(match self.dtype.as_str() {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            other => bail!("unknown dtype `{other}` (f32, bf16, f16)"),
        })
    }

    /// Hash of the fields a resumed run must not change.
    fn identity(&self) -> Result<String> {
        let mut v = serde_json::to_value(self)?;
        let obj = v.as_object_mut().expect("a struct serialises to an object");
        for free in [
            "save_every",
            "save_total_limit",
            "skip_bad",
            "ref_cache",
            "activation_checkpointing",
        ] {
            obj.remove(free);
        }
        Ok(hash_parts([v.to_string().as_bytes()]))
    }

    fn trainable(&self) -> Result<Trainable> {
        Ok(match &self.lora {
            None => Trainable::Full,
            Some(l) => {
                let targets = l
                    .targets
                    .iter()
                    .map(|t| dama_llava::LoraTarget::parse(t))
                    .collect::<dama_llava::Result<Vec<_>>>()?;
                let mut cfg = LoraConfig::new(l.rank, l.alpha, targets);
                cfg.train_projector = l.train_projector;
                cfg.seed = self.seed;
                Trainable::Lora(cfg)
            }
        })
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: Vec<StepMetrics>,
    pub final_dir: PathBuf,
    pub seconds: f64,
    pub plots: Vec<PathBuf>,
}

/// Test hook: `DAMA_KILL_AT_STEP=n` sends SIGKILL to this process when step n is about to
/// start, so the tests can prove that a killed run resumes exactly.
fn kill_hook(step: u64) {
    if std::env::var("DAMA_KILL_AT_STEP")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        == Some(step)
    {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Runs (or, with `resume`, continues) training into `out`.
pub fn train(cfg: &TrainConfig, out: &Path, resume: bool, device: &Device) -> Result<RunSummary> {
    let started = Instant::now();
    let dtype = cfg.dtype()?;
    ensure!(
        cfg.batch_size > 0 && cfg.micro_batch > 0,
        "batch sizes must be at least 1"
    );
    cfg.dama.validate().context("DAMA settings")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let identity = cfg.identity()?;
    let ckpt_root = out.join("checkpoints");
    let resumed = if resume {
        checkpoint::latest(&ckpt_root)?
    } else {
        None
    };
    match (&resumed, resume) {
        (Some((_, st)), _) if st.config_hash != identity => bail!(
            "{} was trained with other settings than these (see its run.json); an exact resume needs the same ones",
            out.display()
        ),
        (None, false) if ckpt_root.exists() => bail!(
            "{} already holds checkpoints: pass --resume to continue that run, or choose another --out",
            out.display()
        ),
        _ => {}
    }
    std::fs::write(
        out.join("run.json"),
        serde_json::to_string_pretty(cfg)? + "\n",
    )?;

    // Data and the reference pass (the reference model is dropped before the policy loads).
    let ref_dir = cfg.ref_model.as_deref().unwrap_or(&cfg.model);
    let probe = dama_llava::LlavaConfig::from_file(&cfg.model.join("config.json"))?;
    let aspect = if cfg.aspect_pad {
        AspectMode::Pad
    } else {
        AspectMode::Resize
    };
    let processor = LlavaProcessor::load(&cfg.model, &probe)?
        .with_aspect(aspect)
        .with_max_length(cfg.max_length);
    let data = TrainData::load(&cfg.data, cfg.images.as_deref(), &processor, cfg.skip_bad)?;
    report_skips(&data);
    let alpha_d = data.alpha_d()?;
    if alpha_d.is_none() && cfg.dama.mode.uses_alpha_d() {
        bail!(
            "mode `{}` needs the data hardness α_D, but {} is not a scored dataset: run `dama-native score` on it first, or train with --mode dpo or mdpo",
            cfg.dama.mode,
            cfg.data.display()
        );
    }
    let cache = cfg
        .ref_cache
        .clone()
        .unwrap_or_else(|| out.join("ref_logps.jsonl"));
    let refs = reference_logps(
        ref_dir,
        &data,
        &processor,
        cfg.max_length,
        &cache,
        device,
        dtype,
        cfg.micro_batch,
        cfg.shared_prefix,
    )?;

    // The policy, its optimizer and the run's state.
    let opts = LoadOptions {
        dtype,
        device: device.clone(),
        trainable: cfg.trainable()?,
    };
    let lora = cfg.lora.is_some();
    let load_from = match &resumed {
        Some((dir, _)) if !lora => dir.clone(),
        _ => cfg.model.clone(),
    };
    let mut model = LlavaModel::load(&load_from, &opts)
        .with_context(|| format!("loading the policy {}", load_from.display()))?;
    model.set_activation_checkpointing(cfg.activation_checkpointing);
    let params: Vec<Param> = model
        .trainable_vars()
        .iter()
        .map(|(name, var)| Param {
            name: name.clone(),
            var: var.clone(),
        })
        .collect();
    let adam = AdamWConfig {
        beta1: cfg.adam_beta1,
        beta2: cfg.adam_beta2,
        eps: cfg.adam_eps,
        weight_decay: cfg.weight_decay,
        master: match cfg.optim_master {
            OptimMaster::F32 => Master::F32,
            OptimMaster::Bf16Sr => Master::StochasticBf16 { seed: cfg.seed },
        },
    };
    let mut opt = AdamW::new(params, adam)?;
    let mut state = TrainerState {
        step: 0,
        cursor: Cursor::default(),
        dama: DamaState::new(cfg.seed),
        config_hash: identity,
    };
    if let Some((dir, saved)) = &resumed {
        checkpoint::restore(dir, &model, &mut opt, saved, lora)?;
        state = saved.clone();
        eprintln!("resuming from {} (step {})", dir.display(), state.step);
    }

    let order = DataOrder {
        len: data.pairs.len(),
        batch_size: cfg.batch_size,
        epochs: cfg.epochs,
        seed: cfg.seed,
        shuffle: cfg.shuffle,
    };
    let total = order.total_steps();
    let schedule = CosineSchedule::with_warmup_ratio(cfg.lr, cfg.warmup_ratio, total);
    let settings = StepSettings {
        micro_batch: cfg.micro_batch,
        shared_prefix: cfg.shared_prefix,
        max_grad_norm: cfg.max_grad_norm,
    };
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), state.step)?;
    let bar = ProgressBar::new(total)
        .with_position(state.step)
        .with_style(
            ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} steps  {msg}  eta {eta}")
                .expect("valid template"),
        );
    bar.set_prefix(cfg.dama.mode.to_string());

    while let Some((indices, next)) = order.batch_at(state.cursor) {
        kill_hook(state.step + 1);
        let t0 = Instant::now();
        let batch = data.batch(&indices, &processor, device)?;
        let pick = |v: &[f32]| indices.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let (rc, rr) = (pick(&refs.chosen), pick(&refs.rejected));
        let ad = alpha_d.as_deref().map(pick);
        let batch_refs = BatchRefs {
            ref_chosen: &rc,
            ref_rejected: &rr,
            alpha_d: ad.as_deref(),
        };
        let lr = schedule.lr(state.step);
        let report = train_step(
            &model,
            &mut opt,
            &batch,
            batch_refs,
            &cfg.dama,
            &mut state.dama,
            &settings,
            lr,
        )
        .with_context(|| {
            let ids: Vec<&str> = indices.iter().map(|&i| data.pairs[i].id.as_str()).collect();
            format!("step {} (pairs {})", state.step + 1, ids.join(", "))
        })?;
        state.step += 1;
        state.cursor = next;
        let m = StepMetrics::new(
            state.step,
            order.epoch_progress(next),
            lr,
            (&rc, &rr),
            &report,
            t0.elapsed().as_secs_f64(),
        );
        log.append(&m)?;
        bar.set_message(format!(
            "loss {:.4}  margin {:+.4}  acc {:.2}",
            m.loss, m.rewards_margins, m.rewards_accuracies
        ));
        bar.inc(1);
        let done = order.batch_at(state.cursor).is_none();
        if (cfg.save_every > 0 && state.step.is_multiple_of(cfg.save_every)) || done {
            checkpoint::save(&ckpt_root, &model, &opt, &state, lora, cfg.save_total_limit)?;
        }
    }
    bar.finish_and_clear();

    let final_dir = out.join("final");
    model
        .save_pretrained(&final_dir)
        .with_context(|| format!("saving the trained model to {}", final_dir.display()))?;
    let steps = MetricsLog::read(&out.join("metrics.jsonl"))?;
    let plots_dir = out.join("plots");
    std::fs::create_dir_all(&plots_dir)?;
    let name = cfg.dama.mode.to_string();
    let plots = plot_runs(
        &plots_dir,
        &[NamedRun {
            name: &name,
            steps: &steps,
        }],
    )?;
    Ok(RunSummary {
        steps,
        final_dir,
        seconds: started.elapsed().as_secs_f64(),
        plots,
    })
}

fn report_skips(data: &TrainData) {
    let s = &data.summary;
    if s.skipped_total() > 0 || !data.skipped.is_empty() {
        eprintln!("skipped bad records: {s}");
        for e in s.errors.iter().take(10) {
            eprintln!("  {e}");
        }
        for e in data.skipped.iter().take(10) {
            eprintln!("  {e}");
        }
    }
}

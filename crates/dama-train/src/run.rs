//! A whole training run: [`prepare`](crate::prepare::prepare) it, build the
//! [`policy`](crate::policy::build_policy), then the loop over global batches with metrics
//! and checkpoints, and the final model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::error::{Context, Result};
use crate::metrics::{MetricsLog, StepMetrics};
use crate::observer::Observer;
use crate::order::DataOrder;
use crate::policy::{Policy, build_policy};
use crate::prepare::{Prepared, prepare};
use crate::schedule::CosineSchedule;
use crate::step::{BatchRefs, StepSettings, train_step};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Every step's metrics, the resumed-from steps included.
    pub steps: Vec<StepMetrics>,
    pub final_dir: PathBuf,
    pub seconds: f64,
}

/// Runs (or, with `resume`, continues) training into `out`: `run.json`, `metrics.jsonl`,
/// `checkpoints/`, `final/`.
pub fn train(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    observer: &dyn Observer,
) -> Result<RunSummary> {
    let started = Instant::now();
    let prepared = prepare(cfg, out, resume, device, observer)?;
    let mut policy = build_policy(
        cfg,
        &prepared.identity,
        prepared.resumed.as_ref(),
        device,
        observer,
    )?;
    run_steps(cfg, out, &prepared, &mut policy, device, observer)?;
    let final_dir = out.join("final");
    policy
        .model
        .save_pretrained(&final_dir)
        .with_context(|| format!("saving the trained model to {}", final_dir.display()))?;
    Ok(RunSummary {
        steps: MetricsLog::read(&out.join("metrics.jsonl"))?,
        final_dir,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The loop: from the policy's cursor to the end of the last epoch, one global batch a step,
/// a line of metrics each, a checkpoint every `save_every` steps and at the end.
fn run_steps(
    cfg: &TrainConfig,
    out: &Path,
    prepared: &Prepared,
    policy: &mut Policy,
    device: &Device,
    observer: &dyn Observer,
) -> Result<()> {
    let Prepared {
        processor,
        data,
        alpha_d,
        refs,
        ..
    } = prepared;
    let Policy { model, opt, state } = policy;
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
    let ckpt_root = out.join("checkpoints");
    let lora = cfg.lora.is_some();
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), state.step)?;
    observer.training_started(&cfg.dama.mode.to_string(), total, state.step);
    while let Some((indices, next)) = order.batch_at(state.cursor) {
        let t0 = Instant::now();
        let batch = data.batch(&indices, processor, device)?;
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
            model,
            opt,
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
        observer.step_finished(&m);
        let done = order.batch_at(state.cursor).is_none();
        if (cfg.save_every > 0 && state.step.is_multiple_of(cfg.save_every)) || done {
            checkpoint::save(&ckpt_root, model, opt, state, lora, cfg.save_total_limit)?;
        }
    }
    observer.training_finished();
    Ok(())
}

//! A whole training run: [`prepare`](crate::prepare::prepare) it, build the
//! [`policy`](crate::policy::build_policy), then the loop over global batches with metrics
//! and checkpoints, and the final model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::dist::{Collectives, Single, Split};
use crate::error::{Context, Result};
use crate::metrics::{MetricsLog, StepMetrics};
use crate::observer::Observer;
use crate::order::DataOrder;
use crate::policy::{Policy, build_policy};
use crate::prepare::{Prepared, prepare};
use crate::schedule::CosineSchedule;
use crate::step::{BatchRefs, StepSettings, train_step_of_share};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Every step's metrics, the resumed-from steps included (rank 0's log; empty on the
    /// other ranks, which write nothing).
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
    train_on(cfg, out, resume, device, observer, &Single)
}

/// [`train`] as one rank of a data-parallel job (docs/SPEC.md section 8): every rank of
/// `comm` calls it with the same settings and output folder; each runs its share of every
/// global batch, rank 0 writes the metrics, the checkpoints' model and the final model.
pub fn train_on(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    observer: &dyn Observer,
    comm: &dyn Collectives,
) -> Result<RunSummary> {
    let started = Instant::now();
    comm.phase("preparing the run");
    let prepared = prepare(cfg, out, resume, device, observer, comm)?;
    comm.phase("loading the policy");
    let mut policy = build_policy(
        cfg,
        &prepared.identity,
        prepared.resumed.as_ref(),
        device,
        observer,
        comm,
    )?;
    run_steps(cfg, out, &prepared, &mut policy, device, observer, comm)?;
    let final_dir = out.join("final");
    let steps = if comm.is_main() {
        comm.phase("saving the final model");
        policy
            .model
            .save_pretrained(&final_dir)
            .with_context(|| format!("saving the trained model to {}", final_dir.display()))?;
        MetricsLog::read(&out.join("metrics.jsonl"))?
    } else {
        Vec::new()
    };
    Ok(RunSummary {
        steps,
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
    comm: &dyn Collectives,
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
        overlap_grads: cfg.overlap_grads,
    };
    let ckpt_root = out.join("checkpoints");
    let lora = cfg.lora.is_some();
    let main = comm.is_main();
    let mut log = if main {
        Some(MetricsLog::open(&out.join("metrics.jsonl"), state.step)?)
    } else {
        None
    };
    observer.training_started(&cfg.dama.mode.to_string(), total, state.step);
    while let Some((indices, next)) = order.batch_at(state.cursor) {
        let t0 = Instant::now();
        comm.phase(&format!("step {}", state.step + 1));
        let split = Split::new(indices.len(), comm.world_size());
        let batch = data.batch(&indices[split.range(comm.rank())], processor, device)?;
        let pick = |v: &[f32]| indices.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let (rc, rr) = (pick(&refs.chosen), pick(&refs.rejected));
        let ad = alpha_d.as_deref().map(pick);
        let batch_refs = BatchRefs {
            ref_chosen: &rc,
            ref_rejected: &rr,
            alpha_d: ad.as_deref(),
        };
        let lr = schedule.lr(state.step);
        let report = train_step_of_share(
            model,
            opt,
            &batch,
            batch_refs,
            &cfg.dama,
            &mut state.dama,
            &settings,
            lr,
            comm,
            split,
            cfg.bucket_size,
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
        if let Some(log) = log.as_mut() {
            log.append(&m)?;
        }
        observer.step_finished(&m);
        let done = order.batch_at(state.cursor).is_none();
        if (cfg.save_every > 0 && state.step.is_multiple_of(cfg.save_every)) || done {
            comm.phase(&format!("saving the checkpoint of step {}", state.step));
            checkpoint::save(
                &ckpt_root,
                model,
                opt,
                state,
                lora,
                cfg.save_total_limit,
                comm,
            )?;
        }
    }
    observer.training_finished();
    Ok(())
}

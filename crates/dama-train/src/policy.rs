//! The model being trained, its optimizer and the run's state: loaded fresh, or restored from
//! the checkpoint a resumed run continues from.

use std::path::PathBuf;

use candle_core::Device;
use dama_core::DamaState;
use dama_llava::{LlavaModel, LoadOptions};

use crate::checkpoint::{self, TrainerState};
use crate::config::{OptimMaster, OptimState, TrainConfig};
use crate::dist::{Collectives, Optimizer};
use crate::error::{Context, Result};
use crate::observer::Observer;
use crate::optim::{AdamWConfig, Master, Param, StateFormat};
use crate::order::Cursor;

/// A policy ready for its next step.
pub struct Policy {
    pub model: LlavaModel,
    /// AdamW, replicated or (ZeRO-1/2) sharded across the ranks.
    pub opt: Optimizer,
    pub state: TrainerState,
}

/// The optimizer settings of a run.
pub fn adamw_config(cfg: &TrainConfig) -> AdamWConfig {
    AdamWConfig {
        beta1: cfg.adam_beta1,
        beta2: cfg.adam_beta2,
        eps: cfg.adam_eps,
        weight_decay: cfg.weight_decay,
        master: match cfg.optim_master {
            OptimMaster::F32 => Master::F32,
            OptimMaster::Bf16Sr => Master::StochasticBf16 { seed: cfg.seed },
        },
        state: match cfg.optim_state {
            OptimState::F32 => StateFormat::F32,
            OptimState::Dynamic8 => StateFormat::Dynamic8,
        },
    }
}

/// Loads the policy (full fine-tuning resumes from the checkpoint's weights; LoRA from the
/// initial weights plus the saved adapters), its optimizer (this rank's part of it), and the
/// run's state.
pub fn build_policy(
    cfg: &TrainConfig,
    identity: &str,
    resumed: Option<&(PathBuf, TrainerState)>,
    device: &Device,
    observer: &dyn Observer,
    comm: &dyn Collectives,
) -> Result<Policy> {
    let opts = LoadOptions {
        dtype: cfg.precision.dtype(),
        device: device.clone(),
        trainable: cfg.trainable()?,
    };
    let lora = cfg.lora.is_some();
    let load_from = match resumed {
        Some((dir, _)) if !lora => dir.clone(),
        _ => cfg.model.clone(),
    };
    let mut model = LlavaModel::load(&load_from, &opts)
        .with_context(|| format!("loading the policy {}", load_from.display()))?;
    model.set_recompute_activations(cfg.recompute_activations);
    let params = Param::all(model.trainable_vars());
    let mut opt = Optimizer::new(params, adamw_config(cfg), cfg.zero, comm, cfg.bucket_size)?;
    let state = match resumed {
        Some((dir, saved)) => {
            let was = checkpoint::restore(dir, &model, &mut opt, saved, lora)?;
            let world = comm.world_size();
            if (was.world_size, was.zero) != (world, cfg.zero) {
                observer.notice(&format!(
                    "the optimizer state was saved by {} rank(s) at ZeRO-{}; re-sharded for {world} at ZeRO-{} (the same values; later sums run in another order)",
                    was.world_size, was.zero, cfg.zero
                ));
            }
            observer.resumed(dir, saved.step);
            saved.clone()
        }
        None => TrainerState {
            step: 0,
            cursor: Cursor::default(),
            dama: DamaState::new(cfg.seed),
            config_hash: identity.to_owned(),
        },
    };
    Ok(Policy { model, opt, state })
}

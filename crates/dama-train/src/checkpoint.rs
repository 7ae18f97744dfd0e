//! Checkpoints that a killed run resumes from exactly.
//!
//! `checkpoints/step-NNNNNN/` holds the model in the Hugging Face layout (transformers loads
//! it; LoRA merged), `adapter.safetensors` (the LoRA matrices themselves, for resuming),
//! the optimizer state (fp32 masters, and the moments in f32 or as 8-bit codes with their block
//! absmaxes: `optimizer.safetensors`, or one shard file
//! per rank under ZeRO-1/2, see [`crate::dist::zero_state`]) and `trainer_state.json` (step,
//! data cursor, ḡ and the sampling stream). It is written under a temporary name and renamed
//! when complete, then `checkpoints/latest` is replaced the same way, so a kill at any instant
//! leaves the previous checkpoint intact and named.
//!
//! With several ranks, rank 0 writes everything but the optimizer shards, which every rank
//! writes into the same temporary folder between two barriers (the output folder is shared,
//! as a cluster's file system is).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use dama_core::DamaState;
use dama_llava::LlavaModel;
use serde::{Deserialize, Serialize};

use crate::dist::zero_state::{self, SavedAs};
use crate::dist::{Collectives, Optimizer};
use crate::error::{Context, Result, TrainError};
use crate::files::write_atomic;
use crate::order::Cursor;

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    pub cursor: Cursor,
    pub dama: DamaState<f32>,
    /// Hash of the run's configuration: resuming with other settings is refused.
    pub config_hash: String,
}

const LATEST: &str = "latest";

fn remove_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(TrainError::io("removing", dir))
}

/// Writes the checkpoint of `state.step` under `root` (`<out>/checkpoints`) and points
/// `latest` at it; keeps the newest `keep` checkpoints. Returns its folder. Every rank calls
/// it.
pub fn save(
    root: &Path,
    model: &LlavaModel,
    opt: &Optimizer,
    state: &TrainerState,
    lora: bool,
    keep: usize,
    comm: &dyn Collectives,
) -> Result<PathBuf> {
    let name = format!("step-{:06}", state.step);
    let dir = root.join(&name);
    let tmp = root.join(format!(".tmp-{name}"));
    let main = comm.is_main();
    if main {
        std::fs::create_dir_all(root).map_err(TrainError::io("creating", root))?;
        if tmp.exists() {
            remove_dir(&tmp)?;
        }
        std::fs::create_dir_all(&tmp).map_err(TrainError::io("creating", &tmp))?;
    }
    let sharded = matches!(opt, Optimizer::Sharded(_));
    if sharded && comm.world_size() > 1 {
        comm.phase("writing its optimizer shard");
        comm.barrier()?; // the folder exists
        zero_state::save(&tmp, opt, comm.rank(), comm.world_size())?;
        comm.barrier()?; // every shard is written
    } else if main {
        zero_state::save(&tmp, opt, 0, comm.world_size())?;
    }
    if !main {
        return Ok(dir);
    }
    model
        .save_pretrained(&tmp)
        .with_context(|| format!("saving the model to {}", tmp.display()))?;
    if lora {
        let adapters: HashMap<String, Tensor> = model
            .trainable_vars()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&adapters, tmp.join("adapter.safetensors"))?;
    }
    let state_path = tmp.join("trainer_state.json");
    let json = serde_json::to_string_pretty(state).expect("a trainer state serialises") + "\n";
    std::fs::write(&state_path, json).map_err(TrainError::io("writing", &state_path))?;
    if dir.exists() {
        remove_dir(&dir)?; // a leftover of a run killed after this very step
    }
    std::fs::rename(&tmp, &dir).map_err(TrainError::io("renaming into place", &dir))?;
    write_atomic(&root.join(LATEST), name.as_bytes())?;
    prune(root, keep, &name)?;
    Ok(dir)
}

/// Removes all but the newest `keep` complete checkpoints (never `current`) and any temporary
/// folder a killed save left behind.
fn prune(root: &Path, keep: usize, current: &str) -> Result<()> {
    let mut steps: Vec<String> = Vec::new();
    let entries = std::fs::read_dir(root).map_err(TrainError::io("listing", root))?;
    for entry in entries {
        let entry = entry.map_err(TrainError::io("listing", root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") && name != format!(".tmp-{current}") {
            remove_dir(&root.join(&name))?;
        } else if name.starts_with("step-") {
            steps.push(name);
        }
    }
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for name in steps.into_iter().take(excess).filter(|n| n != current) {
        remove_dir(&root.join(name))?;
    }
    Ok(())
}

/// The newest complete checkpoint under `root`, if any.
pub fn latest(root: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    let pointer = root.join(LATEST);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(TrainError::io("reading", &pointer))?;
    let dir = root.join(name.trim());
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| {
        TrainError::Resume(format!(
            "{} names {}, which has no readable trainer_state.json ({e})",
            pointer.display(),
            dir.display()
        ))
    })?;
    let state: TrainerState = serde_json::from_str(&text).map_err(TrainError::json(&state_path))?;
    Ok(Some((dir, state)))
}

/// Restores the optimizer (and, for LoRA, the adapter values) of checkpoint `dir` into a
/// freshly loaded model and optimizer, re-sharding the optimizer state when it was saved by
/// another number of ranks or another ZeRO stage. Returns how it was saved.
pub fn restore(
    dir: &Path,
    model: &LlavaModel,
    opt: &mut Optimizer,
    state: &TrainerState,
    lora: bool,
) -> Result<SavedAs> {
    let device = model.device();
    if lora {
        let path = dir.join("adapter.safetensors");
        let saved = candle_core::safetensors::load(&path, device)
            .with_context(|| format!("reading {}", path.display()))?;
        for (name, var) in model.trainable_vars() {
            let t = saved
                .get(name)
                .ok_or_else(|| TrainError::Resume(format!("{} has no `{name}`", path.display())))?;
            if t.dims() != var.dims() {
                return Err(TrainError::Resume(format!(
                    "{}: `{name}` has shape {:?}, the model {:?}",
                    path.display(),
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
    }
    zero_state::restore(dir, opt, state.step)
}

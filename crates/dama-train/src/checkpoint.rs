//! Checkpoints that a killed run resumes from exactly.
//!
//! `checkpoints/step-NNNNNN/` holds the model in the Hugging Face layout (transformers loads
//! it; LoRA merged), `adapter.safetensors` (the LoRA matrices themselves, for resuming),
//! `optimizer.safetensors` (fp32 masters, and the moments in f32 or as 8-bit codes with their
//! block absmaxes) and `trainer_state.json` (step, data
//! cursor, ḡ and the sampling stream). It is written under a temporary name and renamed when
//! complete, then `checkpoints/latest` is replaced the same way, so a kill at any instant leaves
//! the previous checkpoint intact and named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use dama_core::DamaState;
use dama_llava::LlavaModel;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, TrainError};
use crate::files::write_atomic;
use crate::optim::AdamW;
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
/// `latest` at it; keeps the newest `keep` checkpoints. Returns its folder.
pub fn save(
    root: &Path,
    model: &LlavaModel,
    opt: &AdamW,
    state: &TrainerState,
    lora: bool,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(TrainError::io("creating", root))?;
    let name = format!("step-{:06}", state.step);
    let dir = root.join(&name);
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        remove_dir(&tmp)?;
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
    candle_core::safetensors::save(&opt.state_tensors(), tmp.join("optimizer.safetensors"))?;
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
/// freshly loaded model and optimizer.
pub fn restore(
    dir: &Path,
    model: &LlavaModel,
    opt: &mut AdamW,
    state: &TrainerState,
    lora: bool,
) -> Result<()> {
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
    let path = dir.join("optimizer.safetensors");
    let saved = candle_core::safetensors::load(&path, device)
        .with_context(|| format!("reading {}", path.display()))?;
    opt.load_state(&saved, state.step)
        .with_context(|| format!("restoring the optimizer from {}", path.display()))?;
    Ok(())
}

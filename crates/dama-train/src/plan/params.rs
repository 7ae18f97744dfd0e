//! What a run keeps per parameter: every weight of the model (from `config.json`, the shapes
//! `dama_llava::random::weight_shapes` lists) sorted into trainable and frozen, and the
//! trainable ones by how the optimizer stores their moments.

use dama_llava::LlavaConfig;

use crate::config::{LoraSettings, OptimState};
use crate::error::Result;
use crate::optim::keeps_f32_moments;
use dama_kernels::quant8::{self, MIN_8BIT_SIZE};

/// Parameter counts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamCounts {
    /// Every weight the model holds (vision tower, projector, language model; LoRA matrices).
    pub total: u64,
    /// The trainable ones (projector + language model, or the LoRA matrices and optionally the
    /// projector).
    pub trainable: u64,
    /// Trainable parameters whose moments are 8-bit codes (the rest keep f32 moments).
    pub moments_8bit: u64,
    /// Block absmaxes of those (one f32 per 2048 values per moment).
    pub absmax_blocks: u64,
    /// The largest trainable tensor (clipping converts each gradient to f32 and squares it).
    pub largest_trainable: u64,
    /// The language model's vocabulary matrix (embedding rows; the head has as many).
    pub vocab_matrix: u64,
}

/// One trainable tensor: its name and number of values.
fn trainable_tensors(cfg: &LlavaConfig, lora: Option<&LoraSettings>) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for (name, shape) in dama_llava::random::weight_shapes(cfg)? {
        let n: u64 = shape.iter().product::<usize>() as u64;
        let projector = name.starts_with("multi_modal_projector");
        let lm = name.starts_with("language_model");
        match lora {
            None if projector || lm => out.push((name, n)),
            Some(l) if projector && l.train_projector => out.push((name, n)),
            Some(l) if lm && shape.len() == 2 => {
                // `…layers.N.self_attn.q_proj.weight` → an A (rank, in) and a B (out, rank)
                let adapted = l
                    .targets
                    .iter()
                    .any(|t| name.ends_with(&format!(".{t}.weight")));
                if adapted {
                    let (o, i) = (shape[0] as u64, shape[1] as u64);
                    let r = l.rank as u64;
                    out.push((format!("{name}.lora_A"), r * i));
                    out.push((format!("{name}.lora_B"), o * r));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The counts for `cfg` with LoRA `lora` (none: full fine-tuning of projector + language
/// model) and moments stored as `state`.
pub fn count(
    cfg: &LlavaConfig,
    lora: Option<&LoraSettings>,
    state: OptimState,
) -> Result<ParamCounts> {
    let all: u64 = dama_llava::random::weight_shapes(cfg)?
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    let trainable = trainable_tensors(cfg, lora)?;
    let mut c = ParamCounts {
        total: all,
        vocab_matrix: (cfg.text.vocab_size * cfg.text.hidden_size) as u64,
        ..Default::default()
    };
    for (name, n) in &trainable {
        // a LoRA run adds its matrices; the adapted base weights stay (frozen) in `all`
        if lora.is_some() && name.contains(".lora_") {
            c.total += n;
        }
        c.trainable += n;
        c.largest_trainable = c.largest_trainable.max(*n);
        let eight =
            state == OptimState::Dynamic8 && *n >= MIN_8BIT_SIZE as u64 && !keeps_f32_moments(name);
        if eight {
            c.moments_8bit += n;
            c.absmax_blocks += quant8::blocks(*n as usize) as u64;
        }
    }
    Ok(c)
}

//! The cheapest settings that fit: every combination of the changes that lower memory,
//! ranked by what they cost. Changes that keep the maths (checkpointing, smaller
//! micro-batches, a higher ZeRO stage) come before approximations (8-bit moments, then bf16
//! masters with stochastic rounding), and LoRA, which trains another model, comes last.

use dama_core::Named;
use dama_llava::LlavaConfig;

use super::{MemoryPlan, PlanSettings, ZeroStage, plan};
use crate::config::{LoraSettings, OptimMaster, OptimState, Precision};
use crate::error::Result;

/// Settings that fit, with the flags that select them.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// `dama-native train` flags, e.g. `--recompute-activations`, `--micro-batch 2`.
    pub flags: Vec<String>,
    /// A rank: lower is cheaper (see the module's doc).
    pub cost: f64,
    pub plan: MemoryPlan,
}

/// Up to `keep` fitting alternatives to `settings` under `capacity` bytes, cheapest first.
pub fn suggest(
    model: &LlavaConfig,
    settings: &PlanSettings,
    capacity: u64,
    keep: usize,
) -> Result<Vec<Suggestion>> {
    let s = settings;
    let mut micro = vec![s.micro_batch];
    while *micro.last().expect("not empty") > 1 {
        micro.push(micro.last().expect("not empty") / 2);
    }
    let zeros: Vec<ZeroStage> = if s.world_size > 1 {
        ZeroStage::ALL
            .iter()
            .copied()
            .filter(|z| *z >= s.zero)
            .collect()
    } else {
        vec![s.zero]
    };
    let bf16 = s.precision != Precision::F32;
    let mut out = Vec::new();
    for ckpt in [s.recompute_activations, true] {
        for (halvings, &mb) in micro.iter().enumerate() {
            for &zero in &zeros {
                for state in [s.state, OptimState::Dynamic8] {
                    for master in [s.master, OptimMaster::Bf16Sr] {
                        if master == OptimMaster::Bf16Sr && !bf16 {
                            continue;
                        }
                        for lora in [s.lora.clone(), Some(LoraSettings::llava())] {
                            let cand = PlanSettings {
                                recompute_activations: ckpt,
                                micro_batch: mb,
                                zero,
                                state,
                                master,
                                lora: lora.clone(),
                                ..s.clone()
                            };
                            if out.iter().any(|x: &Suggestion| x.plan.settings == cand) {
                                continue;
                            }
                            let p = plan(model, &cand)?;
                            if !p.fits(capacity) || cand == *s {
                                continue;
                            }
                            let mut flags = Vec::new();
                            let mut cost = 0.0;
                            if ckpt != s.recompute_activations {
                                flags.push("--recompute-activations".to_string());
                                cost += 1.0;
                            }
                            if mb != s.micro_batch {
                                flags.push(format!("--micro-batch {mb}"));
                                cost += 0.5 * halvings as f64;
                            }
                            if zero != s.zero {
                                flags.push(format!("--zero {zero}"));
                                cost += 0.5 * (zero as u8 - s.zero as u8) as f64;
                            }
                            if state != s.state {
                                flags.push(format!("--optim-state {state}"));
                                cost += 10.0;
                            }
                            if master != s.master {
                                flags.push(format!("--optim-master {master}"));
                                cost += 12.0;
                            }
                            if lora != s.lora {
                                flags.push("--lora".to_string());
                                cost += 100.0;
                            }
                            out.push(Suggestion {
                                flags,
                                cost,
                                plan: p,
                            });
                        }
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| {
        a.cost
            .total_cmp(&b.cost)
            .then(a.plan.peak.cmp(&b.plan.peak))
    });
    out.truncate(keep);
    Ok(out)
}

//! The plan as the table `dama-native train --plan` prints.

use std::fmt;

use super::{MemoryPlan, PeakAt};

/// Bytes as GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl MemoryPlan {
    /// What each category holds, for the table.
    fn what(&self, category: &str) -> String {
        let s = &self.settings;
        let p = &self.params;
        let per_gpu = |sharded: bool| {
            if sharded && s.world_size > 1 {
                format!(", sharded over {} GPUs", s.world_size)
            } else {
                String::new()
            }
        };
        let zero1 = s.zero != super::ZeroStage::Zero0;
        match category {
            "weights" => format!(
                "{:.3} B parameters in {}",
                p.total as f64 / 1e9,
                s.precision
            ),
            "gradients" if s.micro_batch < s.batch_size => format!(
                "{:.3} B trainable: f32 sums of the micro-batches + one pass's in {}{}",
                p.trainable as f64 / 1e9,
                s.precision,
                per_gpu(s.zero == super::ZeroStage::Zero2)
            ),
            "gradients" => format!(
                "{:.3} B trainable in {}{}",
                p.trainable as f64 / 1e9,
                s.precision,
                per_gpu(s.zero == super::ZeroStage::Zero2)
            ),
            "master" if self.master == 0 => "none: the weights are their own master".into(),
            "master" => format!("f32 copy of the trainable weights{}", per_gpu(zero1)),
            "moments" if p.moments_8bit > 0 => format!(
                "8-bit codes for {:.3} B, f32 for {:.3} B (small tensors, vocabulary){}",
                p.moments_8bit as f64 / 1e9,
                (p.trainable - p.moments_8bit) as f64 / 1e9,
                per_gpu(zero1)
            ),
            "moments" => format!("f32 exp_avg + exp_avg_sq{}", per_gpu(zero1)),
            "activations" => format!(
                "micro-batch of {} pairs, {} + 2×{} tokens{}, {}",
                s.micro_batch,
                s.sequence.prefix,
                s.sequence.answer,
                if s.shared_prefix {
                    " (shared prefix)"
                } else {
                    ""
                },
                if s.recompute_activations {
                    "checkpointed: layer inputs only"
                } else {
                    "every layer's saved tensors"
                }
            ),
            "reference" if self.reference == 0 => {
                "not resident: log-probs computed first and cached".into()
            }
            "reference" => "the reference model's weights".into(),
            "workspace" => format!(
                "the peak moment's transient buffers{}",
                if s.cuda {
                    " + CUDA runtime (1 GiB)"
                } else {
                    ""
                }
            ),
            _ => String::new(),
        }
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "memory per GPU: {} weights, master {}, moments {}, {}{}, {} GPU{}, ZeRO {}",
            s.precision,
            s.master,
            s.state,
            if s.lora.is_some() {
                "LoRA"
            } else {
                "full fine-tuning"
            },
            if s.recompute_activations {
                ", activation checkpointing"
            } else {
                ""
            },
            s.world_size,
            if s.world_size == 1 { "" } else { "s" },
            s.zero
        )?;
        for (name, bytes) in self.categories() {
            writeln!(f, "  {name:<12} {:>12}  {}", gib(bytes), self.what(name))?;
        }
        let at = match self.peak_at {
            PeakAt::HeadBackward => "in the head's backward (all activations held)",
            PeakAt::LayerBackward => "in the top layer's backward (all activations held)",
            PeakAt::BackwardEnd => "at the end of the backward (all gradients held)",
        };
        write!(f, "  {:<12} {:>12}  {at}", "peak", gib(self.peak))
    }
}

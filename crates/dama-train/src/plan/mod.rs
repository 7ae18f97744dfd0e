//! The memory planner: from a model's `config.json` and a run's settings, the bytes each GPU
//! holds at the step's peak, by category, and whether that fits a card; when it does not,
//! the cheapest settings that would ([`suggest`]).
//!
//! Why a model and not a trial run: a 7B run that does not fit fails after minutes of loading
//! and a reference pass, and says only "out of memory". The planner answers before anything
//! loads, and `dama-native train` checks it at the start of every run.
//!
//! Categories (per GPU, world size N, ZeRO stage z):
//!
//! | category | bytes | sharded |
//! | --- | --- | --- |
//! | weights | every weight in the model dtype (the frozen vision tower and LoRA bases too) | never (ZeRO ≤ 2) |
//! | gradients | trainable × the model dtype; with several micro-batches f32 sums + one pass's | z = 2 |
//! | master | trainable × 4 for non-f32 weights with `--optim-master f32`, else 0 | z ≥ 1 |
//! | moments | trainable × 8 (f32), or × 2 + absmaxes for tensors in 8 bits | z ≥ 1 |
//! | activations | [`activations`] of one micro-batch | no (per GPU) |
//! | reference | the reference model's weights, only if resident during training | no |
//! | workspace | the largest transient buffer of the peak's moment | no |
//!
//! The step's peak is the largest of three moments ([`activations::Moments`]): the head's
//! backward and the top layer's backward (every activation of the pass is held then, with the
//! gradient sums of earlier micro-batches) and the end of the backward (every gradient, what
//! the graph still keeps, the embedding backward's or clipping's f32 buffers). Weights, master, moments and the reference are held throughout. dama
//! computes the reference log-probs before the policy loads and drops the reference model
//! (`ref_logps.jsonl`), so it is not resident in dama's own runs.
//!
//! Checked against measured peaks on the CPU (`crates/dama-train/tests/plan_peak.rs`: a
//! counting global allocator, the tiny and ~100M models) to within 10%; on CUDA the runtime
//! adds its context and cuBLAS workspace ([`CUDA_RUNTIME`], an estimate until measured by
//! `scripts/gpu-bench.sh`).

pub mod activations;
pub mod params;
mod suggest;
pub mod table;

use dama_llava::LlavaConfig;

pub use activations::{Activations, Layout, Sequence};
pub use params::ParamCounts;
pub use suggest::{Suggestion, suggest};

use crate::config::{LoraSettings, OptimMaster, OptimState, Precision, TrainConfig};
use crate::error::{Result, TrainError};

/// Bytes the CUDA runtime takes besides the tensors: its context, cuBLAS's workspaces, the
/// memory pool's slack (an estimate: 1 GiB).
pub const CUDA_RUNTIME: u64 = 1 << 30;

/// Prompt tokens (template and question) after the image tokens, when the planner is given a
/// conversation length rather than a measured layout: the vicuna_v1 template with a question
/// of a sentence or two.
pub const PROMPT_TOKENS: usize = 64;

/// The run's ZeRO stage (`--zero`), the one the trainer shards with.
pub use crate::dist::zero::ZeroStage;

/// What the planner needs to know about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSettings {
    pub precision: Precision,
    pub master: OptimMaster,
    pub state: OptimState,
    pub lora: Option<LoraSettings>,
    pub batch_size: usize,
    pub micro_batch: usize,
    /// The longest pair of a micro-batch.
    pub sequence: Sequence,
    pub shared_prefix: bool,
    pub recompute_activations: bool,
    pub world_size: usize,
    pub zero: ZeroStage,
    /// The reference model's weights stay on the GPU during training (not in dama's runs).
    pub reference_resident: bool,
    /// On a GPU: adds [`CUDA_RUNTIME`]; on the CPU the attention's f32 copies count instead.
    pub cuda: bool,
}

impl PlanSettings {
    /// The settings of `cfg` for a model of `model`, pairs of `tokens` tokens per
    /// conversation (default: the run's `max_length`, the worst case), one process.
    pub fn of_run(
        cfg: &TrainConfig,
        model: &LlavaConfig,
        tokens: Option<usize>,
        cuda: bool,
    ) -> Self {
        let tokens = tokens
            .or(cfg.max_length)
            .unwrap_or(model.text.max_position_embeddings);
        Self {
            precision: cfg.precision,
            master: cfg.optim_master,
            state: cfg.optim_state,
            lora: cfg.lora.clone(),
            batch_size: cfg.batch_size,
            micro_batch: cfg.micro_batch.min(cfg.batch_size),
            sequence: Sequence::of_length(model, tokens, PROMPT_TOKENS),
            shared_prefix: cfg.shared_prefix,
            recompute_activations: cfg.recompute_activations,
            world_size: 1,
            zero: cfg.zero,
            reference_resident: false,
            cuda,
        }
    }

    fn dtype_bytes(&self) -> u64 {
        match self.precision {
            Precision::F32 => 4,
            Precision::Bf16 | Precision::F16 => 2,
        }
    }

    fn accumulates(&self) -> bool {
        self.micro_batch < self.batch_size
    }
}

/// Which moment of the step the peak is at (see [`activations::Moments`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakAt {
    /// The head's backward: every activation, the head's weight gradient arriving.
    HeadBackward,
    /// The top decoder layer's backward: every activation, one layer's backward buffers.
    LayerBackward,
    /// The end of the backward: every gradient (and the embedding's / clipping's f32 buffers).
    BackwardEnd,
}

/// Bytes per GPU by category, and the step's peak.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    pub settings: PlanSettings,
    pub params: ParamCounts,
    pub weights: u64,
    pub gradients: u64,
    pub master: u64,
    pub moments: u64,
    /// At the start of the backward.
    pub activations: u64,
    pub reference: u64,
    /// The workspace of the peak's moment (with [`CUDA_RUNTIME`] on a GPU).
    pub workspace: u64,
    pub peak: u64,
    pub peak_at: PeakAt,
}

impl MemoryPlan {
    /// Whether the peak fits `capacity` bytes.
    pub fn fits(&self, capacity: u64) -> bool {
        self.peak <= capacity
    }

    /// The categories in table order with their bytes.
    pub fn categories(&self) -> [(&'static str, u64); 7] {
        [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("master", self.master),
            ("moments", self.moments),
            ("activations", self.activations),
            ("reference", self.reference),
            ("workspace", self.workspace),
        ]
    }
}

/// The plan of `settings` for a model of `model`.
pub fn plan(model: &LlavaConfig, settings: &PlanSettings) -> Result<MemoryPlan> {
    let s = settings;
    if s.micro_batch == 0 || s.batch_size == 0 || s.world_size == 0 {
        return Err(TrainError::Settings(
            "the memory plan needs a batch, a micro-batch and a world size of at least 1".into(),
        ));
    }
    let b = s.dtype_bytes();
    let p = params::count(model, s.lora.as_ref(), s.state)?;
    let n = s.world_size as u64;
    let shard = |bytes: u64, sharded: bool| if sharded { bytes.div_ceil(n) } else { bytes };
    let zero1 = s.zero != ZeroStage::Zero0;
    let zero2 = s.zero == ZeroStage::Zero2;

    let weights = p.total * b;
    let master_bytes = match (s.precision, s.master) {
        (Precision::F32, _) => 0,
        (Precision::Bf16, OptimMaster::Bf16Sr) => 0,
        _ => 4 * p.trainable,
    };
    let master = shard(master_bytes, zero1);
    let moments_bytes =
        8 * (p.trainable - p.moments_8bit) + 2 * p.moments_8bit + 8 * p.absmax_blocks;
    let moments = shard(moments_bytes, zero1);
    // one pass's gradients in the model dtype; several passes' sums in f32 beside them
    let sums = if s.accumulates() {
        shard(4 * p.trainable, zero2)
    } else {
        0
    };
    let pass_grads = shard(b * p.trainable, zero2);
    let gradients = sums + pass_grads;
    let reference = if s.reference_resident { weights } else { 0 };

    let layout = Layout::new(s.sequence, s.micro_batch, s.shared_prefix);
    let projector_trains = s.lora.as_ref().is_none_or(|l| l.train_projector);
    let acts =
        activations::activations(model, &layout, b, s.recompute_activations, projector_trains);
    let shape = activations::StepShape {
        bytes: b,
        vocab_matrix: p.vocab_matrix,
        vocab_trains: s.lora.is_none(),
        gradients,
        sums,
        largest: p.largest_trainable,
        cuda: s.cuda,
    };
    let m = activations::moments(model, &layout, &acts, &shape);
    let (moment, peak_at) = [
        (m.head, PeakAt::HeadBackward),
        (m.layer, PeakAt::LayerBackward),
        (m.end, PeakAt::BackwardEnd),
    ]
    .into_iter()
    .fold((0, PeakAt::BackwardEnd), |best, x| {
        if x.0 > best.0 { x } else { best }
    });
    // the workspace row: what the peak's moment holds beyond the categories above
    let held = match peak_at {
        PeakAt::BackwardEnd => acts.at_backward_end() + gradients,
        _ => acts.at_backward_start() + sums,
    };
    let runtime = if s.cuda { CUDA_RUNTIME } else { 0 };
    let peak = weights + master + moments + reference + moment + runtime;
    let ws = moment - held;
    Ok(MemoryPlan {
        settings: settings.clone(),
        params: p,
        weights,
        gradients,
        master,
        moments,
        activations: acts.at_backward_start(),
        reference,
        workspace: ws + runtime,
        peak,
        peak_at,
    })
}

#[cfg(test)]
mod tests;

//! The maths of DAMA, Data- and Model-aware DPO (Lu et al., ICML 2025), and nothing else: no
//! tensors, no I/O, `no_std` + `alloc`, so that the trainer, the scorer and the browser explorer
//! compute exactly the same numbers from one implementation.
//!
//! - [`data_aware`]: δ from CLIP sub-sentence scores (Eqs. 3–5), δ̄, α_D (Eq. 6), hardness bands.
//! - [`model_aware`](mod@model_aware): the `official` and `paper` presets of the mask M, α_M and the EMA ḡ
//!   (Eqs. 8–14), with the filter ablation and K.
//! - [`combine`]: modes dpo / d2po / mdpo / dama, α = α_D·α_M or a weighted sum, the β clamp.
//! - [`loss`]: the masked per-pair-β DPO loss and ∂L/∂h_i.
//! - [`step`](mod@step): all of it for one global batch, with the statistics to log.
//!
//! The contract these modules implement is `docs/SPEC.md` at the repository root, rendered here
//! as the [`spec`] page: every formula, both presets, the edge cases, the numerics and the
//! gradient-accumulation and data-parallel rules. Equation numbers in the docs are the paper's.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod combine;
pub mod data_aware;
pub mod error;
pub mod explain;
pub mod hash;
pub mod loss;
pub mod model_aware;
pub mod names;
pub mod num;
pub mod rng;
pub mod sampling;
pub mod stats;
pub mod step;

#[doc = include_str!("../../../docs/SPEC.md")]
pub mod spec {}

pub use combine::{BETA_MIN, Combine, Mode, pair_beta};
pub use data_aware::{
    Band, DeltaEdge, EdgeCounts, Estimator, Hardness, HardnessBands, alpha_d, delta, delta_mean,
    subsentence_probs,
};
pub use error::CoreError;
pub use loss::masked_dpo_loss;
pub use model_aware::{Filter, ModelAware, ModelAwareParams, Preset, default_keep, model_aware};
pub use names::{Named, UnknownName};
pub use num::Real;
pub use rng::Xoshiro256;
pub use sampling::Sampling;
pub use stats::{Rewards, Summary};
pub use step::{DamaConfig, DamaState, StepInput, StepOutcome, StepStats, step};

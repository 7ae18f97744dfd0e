//! The DAMA trainer as a library: what `dama-native train` and `ref-logps` run, with no
//! command line (the binary parses flags into a [`TrainConfig`] and shows an [`Observer`]'s
//! events as progress).
//!
//! A run ([`train`]) is [`prepare`](prepare::prepare)d (output folder, `run.json`, the
//! [`data`], the [`reference`] log-probs and their [`ref_cache`]), gets its
//! [`policy`](policy::build_policy) (the model, [`optim`]'s AdamW and the run's state), then
//! loops over global batches in the [`order`] of a seeded permutation: each [`step`] scores
//! the batch, lets `dama_core` turn the margins into β_C, the mask and ∂L/∂h_i, and
//! backpropagates; [`metrics`] are logged per step, [`checkpoint`]s make a killed run resume
//! bit for bit. The maths is `dama_core`'s; docs/SPEC.md is the contract.
//!
//! Two more loops share the data, order and optimizer: [`sft`] (supervised fine-tuning on the
//! chosen answers, LLaVA's second stage) and [`clip`] (contrastive training of a CLIP, for a
//! world of one's own).

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod data;
pub mod dist;
pub mod error;
mod files;
pub mod metrics;
pub mod observer;
pub mod optim;
pub mod order;
pub mod plan;
pub mod policy;
pub mod prepare;
pub mod ref_cache;
pub mod reference;
pub mod run;
pub mod schedule;
pub mod sft;
pub mod step;

pub use clip::{ClipPair, ClipStep, ClipTrainConfig, ClipTrainData, train_clip};
pub use config::{LoraSettings, OptimMaster, OptimState, Precision, TrainConfig};
pub use data::{DataOptions, TrainData, TrainPair};
pub use error::{Result, TrainError};
pub use metrics::{MetricsLog, StepMetrics};
pub use observer::{Observer, Silent};
pub use reference::{RefLogps, ReferencePass, reference_logps, reference_logps_on};
pub use run::{RunSummary, train, train_on};
pub use sft::{SftConfig, SftStep, SftSummary, sft};

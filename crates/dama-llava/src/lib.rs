//! LLaVA-1.5 on candle, for preference training.
//!
//! The trainer needs, for a batch of preference pairs (image, question, chosen, rejected), the
//! sum of log-probabilities of each answer's tokens and its closing `</s>`, with gradients for
//! the trainable weights. This crate provides exactly that, checked against transformers'
//! `LlavaForConditionalGeneration` on tiny random models (`tests/`):
//!
//! - [`LlavaConfig`], [`WeightFiles`]: an HF folder's `config.json` and safetensors (one file or
//!   sharded; any key layout transformers has written), memory-mapped;
//! - [`LlavaProcessor`]: CLIP preprocessing (or LLaVA's `pad` mode) and the vicuna_v1 template
//!   with its answer labels ([`template`]);
//! - [`LlavaModel::pair_logps`]: per-pair answer log-prob sums, with the image + question
//!   prefix computed once for both answers when asked ([`layout`]);
//! - [`Trainable`]: full fine-tuning of projector + language model (the paper's), or LoRA;
//!   the trainable weights are [`candle_core::Var`]s ([`LlavaModel::trainable_vars`]);
//! - [`LlavaModel::save_pretrained`]: an HF folder transformers loads (LoRA merged);
//! - [`LlavaModel::generate`]: answers with a KV cache, greedy, beam search or sampling, as
//!   transformers' `generate` ([`generate`]).
//!
//! Every op where gradients flow has a backward in candle 0.11.1 ([`ops`]); the vision tower is
//! frozen and runs `dama_clip`'s forward-only CLIP.

pub mod config;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod layout;
pub mod linear;
pub mod llama;
pub mod model;
pub mod names;
pub mod ops;
pub mod params;
pub mod processor;
pub mod projector;
pub mod random;
pub mod save;
pub mod template;
pub mod vision;
pub mod weights;

pub use config::LlavaConfig;
pub use decoder::{LayerBackward, LayerRun};
pub use error::{LlavaError, Result};
pub use generate::{Finish, GenerateConfig, Generation, Prompt, SampleConfig, Strategy};
pub use model::{LlavaModel, LoadOptions, PairLogps};
pub use params::{Grad, LoraConfig, Projection, Trainable};
pub use processor::{AspectMode, Images, LlavaProcessor, PairBatch, PairExample};
pub use template::{EncodedAnswer, EncodedPair, PairEncoder};
pub use weights::{KeyLayout, WeightFiles};

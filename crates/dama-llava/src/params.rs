//! Which weights train, and how they are loaded: trainable ones become `candle_core::Var`s
//! (the trainer runs its own AdamW over them and saves them), frozen ones stay plain tensors.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{LlavaError, Result};
use crate::weights::{KeyLayout, WeightFiles};

/// The seven projections of a decoder layer, in the layer's order (attention q, k, v, o; MLP
/// gate, up, down). LoRA targets them by PEFT's `target_modules` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Projection {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Projection {
    pub const ALL: [Projection; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// PEFT's module name (`q_proj`, …), also the last part of the weight's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// Position in [`Projection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses a PEFT module name (`q_proj`, ...).
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                LlavaError::Invalid(format!(
                    "unknown LoRA target `{name}` (expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
                ))
            })
    }
}

/// LoRA on the language model: `W x + (alpha/rank)·B A x`, A `(rank, in)` drawn like PEFT
/// (uniform ±1/√in, kaiming-uniform with a = √5), B `(out, rank)` zero, so an untrained adapter
/// leaves the model unchanged. Dropout is 0 (DPO needs the policy deterministic).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<Projection>,
    /// Also train the projector fully, as LLaVA's own LoRA recipe does. Off by default.
    pub train_projector: bool,
    /// Seeds A's initialisation (each matrix derives its stream from its name).
    pub seed: u64,
}

impl LoraConfig {
    pub fn new(rank: usize, alpha: f64, targets: Vec<Projection>) -> Self {
        Self {
            rank,
            alpha,
            targets,
            train_projector: false,
            seed: 0,
        }
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// What trains. The vision tower never does.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Trainable {
    /// Nothing (a reference model): no variables, no graph.
    #[default]
    Frozen,
    /// The paper's setting: projector and the whole language model, embeddings and lm_head
    /// included.
    Full,
    /// LoRA adapters on the language model's linear layers.
    Lora(LoraConfig),
}

impl Trainable {
    pub(crate) fn projector(&self) -> bool {
        match self {
            Trainable::Frozen => false,
            Trainable::Full => true,
            Trainable::Lora(l) => l.train_projector,
        }
    }

    pub(crate) fn language_model(&self) -> bool {
        matches!(self, Trainable::Full)
    }

    pub(crate) fn lora_for(&self, target: Projection) -> Option<&LoraConfig> {
        match self {
            Trainable::Lora(l) if l.targets.contains(&target) => Some(l),
            _ => None,
        }
    }
}

/// Whether a forward pass records the graph for a backward. `Off` reads every weight through
/// `detach()` (same storage, no op tracking), so a policy model can score the reference side
/// or evaluate without building a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grad {
    Track,
    Off,
}

impl Grad {
    pub(crate) fn w(self, t: &Tensor) -> Tensor {
        match self {
            Grad::Track => t.clone(),
            Grad::Off => t.detach(),
        }
    }
}

/// Reads weights by canonical (llava-hf layout) name and registers the trainable ones.
pub(crate) struct ParamLoader<'a> {
    pub ckpt: &'a WeightFiles,
    pub layout: &'a KeyLayout,
    pub dtype: DType,
    pub device: &'a Device,
    pub vars: BTreeMap<String, Var>,
}

impl ParamLoader<'_> {
    /// Loads `canonical` with the given shape; a trainable one becomes a `Var` named by it.
    pub fn load(&mut self, canonical: &str, shape: &[usize], trainable: bool) -> Result<Tensor> {
        let t = self
            .ckpt
            .tensor(&self.layout.key(canonical), shape, self.dtype, self.device)?;
        if !trainable {
            return Ok(t);
        }
        let var = Var::from_tensor(&t)?;
        let t = var.as_tensor().clone();
        self.vars.insert(canonical.to_string(), var);
        Ok(t)
    }

    /// Registers a new trainable tensor (a LoRA matrix) under `name`.
    pub fn new_var(&mut self, name: String, t: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&t)?;
        let t = var.as_tensor().clone();
        self.vars.insert(name, var);
        Ok(t)
    }
}

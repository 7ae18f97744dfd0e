//! Every setting of a run in one place (as nanoGPT keeps them), with the paper's values as
//! the one source of defaults: the command line, the demo and the tests all start from
//! [`TrainConfig::paper`].

use std::path::PathBuf;

use candle_core::DType;
use dama_core::DamaConfig;
use dama_llava::{LoraConfig, Trainable};
use serde::{Deserialize, Serialize};

use crate::dist::zero::{DEFAULT_BUCKET, ZeroStage};
use crate::error::{Result, TrainError};
use crate::ref_cache::hash_parts;

/// The dtype a model's weights run in. Saved as `f32` / `bf16` / `f16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

dama_core::named!(Precision, "precision", {
    F32 => "f32",
    Bf16 => "bf16",
    F16 => "f16",
});

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// What a run uses when not told: bf16 on a GPU (the paper's), f32 on a CPU.
    pub fn default_for(cuda: bool) -> Self {
        if cuda {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}

/// The optimizer's master weights (`--optim-master`): an fp32 copy per non-f32 variable (the
/// default, exactly torch's fp32 AdamW), or `bf16-sr`: bf16 variables are their own master,
/// each update rounded stochastically (seeded by the run's seed; 8 bytes of optimizer state
/// per parameter instead of 12). No effect on f32 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OptimMaster {
    #[default]
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "bf16-sr")]
    Bf16Sr,
}

dama_core::named!(OptimMaster, "optimizer master", {
    F32 => "f32",
    Bf16Sr => "bf16-sr",
});

impl OptimMaster {
    fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

/// How the optimizer keeps AdamW's two moments (`--optim-state`): `f32` (the default, exactly
/// torch's AdamW: 8 bytes per parameter) or `8bit`, bitsandbytes' block-wise dynamic
/// quantisation (blocks of 2048 values with one absmax each, a signed dynamic map for the first
/// moment and an unsigned one for the second; tensors under 4096 values stay f32): 2 bytes per
/// parameter, dequantised, updated and requantised inside the fused update. With either
/// `--optim-master`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OptimState {
    #[default]
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "8bit")]
    Dynamic8,
}

dama_core::named!(OptimState, "optimizer state", {
    F32 => "f32",
    Dynamic8 => "8bit",
});

impl OptimState {
    fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

/// LoRA settings of a run (`None` in [`TrainConfig::lora`] = full fine-tuning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub train_projector: bool,
}

impl LoraSettings {
    /// LLaVA's LoRA recipe: rank 64, α 16, every projection of the language model.
    pub fn llava() -> Self {
        Self {
            rank: 64,
            alpha: 16.0,
            targets: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
            train_projector: false,
        }
    }
}

/// Everything that defines a run. Saved as `run.json`; a resume must present the same values
/// (except the fields marked as free to change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Initial policy weights (a Hugging Face folder).
    pub model: PathBuf,
    /// Reference model; the initial policy when `None`.
    pub ref_model: Option<PathBuf>,
    pub data: PathBuf,
    pub images: Option<PathBuf>,
    /// Read absolute image paths where they point instead of refusing them (the data decides
    /// which pairs are read, so it is part of the run's identity; absent from `run.json` when
    /// off, so older runs resume unchanged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_absolute_images: bool,
    pub dama: DamaConfig<f32>,
    /// Global batch N.
    pub batch_size: usize,
    pub micro_batch: usize,
    pub epochs: u64,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Absent from `run.json` (and its hash) when f32, so older runs resume unchanged.
    #[serde(default, skip_serializing_if = "OptimMaster::is_f32")]
    pub optim_master: OptimMaster,
    /// Absent from `run.json` (and its hash) when f32, so older runs resume unchanged.
    #[serde(default, skip_serializing_if = "OptimState::is_f32")]
    pub optim_state: OptimState,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    pub shuffle: bool,
    pub lora: Option<LoraSettings>,
    /// The weights' dtype (the optimizer's state is f32 either way).
    #[serde(rename = "dtype")]
    pub precision: Precision,
    pub aspect_pad: bool,
    pub max_length: Option<usize>,
    pub shared_prefix: bool,
    // Free to change on resume:
    pub save_every: u64,
    pub save_total_limit: usize,
    pub skip_bad: bool,
    pub ref_cache: Option<PathBuf>,
    /// Recompute each decoder layer in the backward instead of keeping its activations (same
    /// numbers, less memory, one more forward of the language model per pass).
    #[serde(default, alias = "activation_checkpointing")]
    pub recompute_activations: bool,
    /// With several ranks, how far the optimizer state is sharded (`--zero`); the weights
    /// come out the same. Absent from `run.json` at 0.
    #[serde(default, skip_serializing_if = "ZeroStage::is_zero")]
    pub zero: ZeroStage,
    /// Elements per collective call of the gradient and weight exchanges (`--bucket-size`).
    #[serde(default = "default_bucket", skip_serializing_if = "is_default_bucket")]
    pub bucket_size: usize,
    /// With several ranks and ZeRO-0/1, start summing the gradients inside the backward
    /// (`--no-overlap-grads` turns it off); the same sums either way. Absent from `run.json`
    /// when on.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub overlap_grads: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

fn default_bucket() -> usize {
    DEFAULT_BUCKET
}

fn is_default_bucket(b: &usize) -> bool {
    *b == DEFAULT_BUCKET
}

/// The fields of [`TrainConfig`] a resumed run may change.
const FREE_ON_RESUME: [&str; 8] = [
    "save_every",
    "save_total_limit",
    "skip_bad",
    "ref_cache",
    "recompute_activations",
    // the same maths on another layout; a checkpoint's optimizer state is re-sharded
    "zero",
    "bucket_size",
    "overlap_grads",
];

impl TrainConfig {
    /// The paper's run on `data` from `model`: DAMA with the `official` preset, N = 16,
    /// 4 epochs, AdamW lr 5e-7 (cosine, 10% warm-up, no weight decay), clipping at 1.0, full
    /// fine-tuning, images padded, 2048 tokens, shared prefix; checkpoints every 100 steps.
    /// Precision f32 (a CPU's; the command line picks bf16 on a GPU).
    pub fn paper(model: PathBuf, data: PathBuf) -> Self {
        Self {
            model,
            ref_model: None,
            data,
            images: None,
            allow_absolute_images: false,
            dama: DamaConfig::default(),
            batch_size: 16,
            micro_batch: 16,
            epochs: 4,
            lr: 5e-7,
            warmup_ratio: 0.1,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            optim_master: OptimMaster::F32,
            optim_state: OptimState::F32,
            max_grad_norm: Some(1.0),
            seed: 42,
            shuffle: true,
            lora: None,
            precision: Precision::F32,
            aspect_pad: true,
            max_length: Some(2048),
            shared_prefix: true,
            save_every: 100,
            save_total_limit: 2,
            skip_bad: false,
            ref_cache: None,
            recompute_activations: false,
            zero: ZeroStage::Zero0,
            bucket_size: DEFAULT_BUCKET,
            overlap_grads: true,
        }
    }

    /// The checks that need no file: batch sizes and the DAMA settings.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.micro_batch == 0 {
            return Err(TrainError::Settings(
                "batch sizes must be at least 1".into(),
            ));
        }
        if self.bucket_size == 0 {
            return Err(TrainError::Settings(
                "the bucket size must be at least 1 element".into(),
            ));
        }
        self.dama.validate()?;
        Ok(())
    }

    /// Hash of the fields a resumed run must not change.
    pub fn identity(&self) -> Result<String> {
        let mut v = serde_json::to_value(self).expect("a config serialises");
        let obj = v.as_object_mut().expect("a struct serialises to an object");
        for free in FREE_ON_RESUME {
            obj.remove(free);
        }
        Ok(hash_parts([v.to_string().as_bytes()]))
    }

    /// What of the model is trained: everything (the paper's) or LoRA adapters.
    pub fn trainable(&self) -> Result<Trainable> {
        Ok(match &self.lora {
            None => Trainable::Full,
            Some(l) => {
                let targets = l
                    .targets
                    .iter()
                    .map(|t| dama_llava::Projection::parse(t))
                    .collect::<dama_llava::Result<Vec<_>>>()?;
                let mut cfg = LoraConfig::new(l.rank, l.alpha, targets);
                cfg.train_projector = l.train_projector;
                cfg.seed = self.seed;
                Trainable::Lora(cfg)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dama_core::Named;

    #[test]
    fn names_round_trip_and_serialise_as_before() {
        for &p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        for &m in OptimMaster::ALL {
            assert_eq!(m.name().parse::<OptimMaster>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        for &s in OptimState::ALL {
            assert_eq!(s.name().parse::<OptimState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("fp8".parse::<Precision>().is_err());
        // run.json keeps its `dtype` field, so that earlier runs resume with the same identity
        let cfg = TrainConfig::paper("m".into(), "d".into());
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(v["dtype"], "f32");
        assert!(v.get("optim_master").is_none());
        assert!(v.get("zero").is_none() && v.get("bucket_size").is_none());
        assert!(v.get("optim_state").is_none());
        let eight = TrainConfig {
            optim_state: OptimState::Dynamic8,
            ..cfg.clone()
        };
        assert_eq!(serde_json::to_value(&eight).unwrap()["optim_state"], "8bit");
        assert_ne!(cfg.identity().unwrap(), eight.identity().unwrap());
    }

    #[test]
    fn identity_ignores_only_the_free_fields() {
        let a = TrainConfig::paper("m".into(), "d".into());
        let free = TrainConfig {
            save_every: 7,
            skip_bad: true,
            recompute_activations: true,
            zero: ZeroStage::Zero2,
            bucket_size: 1000,
            overlap_grads: false,
            ..a.clone()
        };
        assert_eq!(a.identity().unwrap(), free.identity().unwrap());
        let other = TrainConfig {
            lr: 1e-6,
            ..a.clone()
        };
        assert_ne!(a.identity().unwrap(), other.identity().unwrap());
    }
}

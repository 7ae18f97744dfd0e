//! One full DAMA training step of a LLaVA-1.5-shaped model with random weights, run by the
//! trainer's own code (`dama_train::step::train_step`, what `dama-native train` runs): the
//! step `scripts/bench/torch_dpo_step.py` times in PyTorch (its header lists what each side
//! does differently and `scripts/bench/flops.py` counts each side's FLOPs). ViT-L/14-336 tower
//! (frozen, forward), projector and
//! LLaMA language model fully trained, bf16, per-pair log-probs with the shared prefix, the
//! DAMA maths of `dama-core`, backward of Σ wᵢ·hᵢ, clipping at 1.0, AdamW. Random weights are
//! drawn on the GPU (drawing 7B numbers on the host would take minutes of device time).
//!
//! The optimizer (`--optim`): `fused` (the default) is the product's `--optim-master f32`, fp32
//! master weights and fp32 moments (`dama_train::optim::AdamW`); `fused-sr` its
//! `--optim-master bf16-sr`, no master copy, the bf16 weights their own master rounded
//! stochastically (8 bytes of state per parameter instead of 12: what fits 7b); a `-8bit`
//! suffix (`fused-8bit`, `fused-sr-8bit`) is `--optim-state 8bit`, the moments in block-wise
//! 8 bits (2 bytes per parameter instead of 8); `candle` is
//! `candle_nn::AdamW` (moments in bf16, no master) after the trainer's own gradients, for
//! comparison.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use dama_clip::config::ClipVisionConfig;
use dama_core::{DamaConfig, DamaState};
use dama_llava::{
    EncodedAnswer, EncodedPair, Images, LayerBackward, LlavaConfig, LlavaModel, LoadOptions,
    PairBatch, Trainable, WeightFiles,
};
use dama_train::optim::{AdamW, AdamWConfig, Master, Param, StateFormat};
use dama_train::step::{BatchRefs, StepSettings, gradients, train_step};
use serde_json::json;

/// H100 SXM dense bf16 peak, the MFU denominator (the anchor script's too).
const PEAK_BF16: f64 = 989.4e12;
const IMAGE_TOKEN: u32 = 32000;

pub(crate) fn config(lm: &str) -> Result<LlavaConfig> {
    let (h, ff, layers, heads, kv) = match lm {
        "7b" => (4096, 11008, 32, 32, 32),
        "1b" => (2048, 5632, 22, 32, 4),
        "tiny" => (64, 128, 2, 4, 2),
        other => anyhow::bail!("unknown model shape {other} (1b, 7b, tiny)"),
    };
    let vision = if lm == "tiny" {
        json!({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "image_size": 336, "patch_size": 14})
    } else {
        json!({"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
               "num_attention_heads": 16, "image_size": 336, "patch_size": 14})
    };
    let cfg = json!({
        "model_type": "llava", "image_token_index": IMAGE_TOKEN, "pad_token_id": 0,
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu", "vision_config": vision,
        "text_config": {"model_type": "llama", "hidden_size": h, "intermediate_size": ff,
                        "num_hidden_layers": layers, "num_attention_heads": heads,
                        "num_key_value_heads": kv, "vocab_size": 32064, "rms_norm_eps": 1e-5}
    });
    Ok(LlavaConfig::from_json_str(
        &cfg.to_string(),
        Path::new("gpu_bench step config"),
    )?)
}

/// Random weights in the llava-hf layout, drawn on `dev` in bf16: matrices N(0, 1/fan_in),
/// embeddings N(0, 1), norm scales N(1, 0.1²), biases N(0, 0.1²). Trainable ones (projector,
/// language model) are made `Var`s here, so that loading them makes no second copy.
pub(crate) fn random_weights(
    cfg: &LlavaConfig,
    dev: &Device,
) -> Result<(HashMap<String, Tensor>, usize)> {
    let v: ClipVisionConfig = serde_json::from_value(cfg.vision_json.clone())?;
    let mut map = HashMap::new();
    let mut vit_params = 0usize;
    let mut add = |name: String, shape: &[usize], kind: u8, trainable: bool| -> Result<()> {
        let (mean, std) = match kind {
            0 => (
                0.0,
                1.0 / (shape[1..].iter().product::<usize>() as f64).sqrt(),
            ),
            1 => (0.0, 1.0),
            2 => (1.0, 0.1),
            _ => (0.0, 0.1),
        };
        let t = Tensor::randn(mean as f32, std as f32, shape, dev)?.to_dtype(DType::BF16)?;
        let t = if trainable {
            Var::from_tensor(&t)?.as_tensor().clone()
        } else {
            vit_params += t.elem_count();
            t
        };
        map.insert(name, t);
        Ok(())
    };
    let (mat, emb, scale, bias) = (0u8, 1u8, 2u8, 3u8);
    let vp = "vision_tower.vision_model";
    let (d, c, p) = (v.hidden_size, v.num_channels, v.patch_size);
    add(format!("{vp}.embeddings.class_embedding"), &[d], emb, false)?;
    add(
        format!("{vp}.embeddings.patch_embedding.weight"),
        &[d, c, p, p],
        mat,
        false,
    )?;
    add(
        format!("{vp}.embeddings.position_embedding.weight"),
        &[v.num_positions(), d],
        emb,
        false,
    )?;
    for ln in ["pre_layrnorm", "post_layernorm"] {
        add(format!("{vp}.{ln}.weight"), &[d], scale, false)?;
        add(format!("{vp}.{ln}.bias"), &[d], bias, false)?;
    }
    for i in 0..v.num_hidden_layers {
        let l = format!("{vp}.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add(format!("{l}.self_attn.{proj}.weight"), &[d, d], mat, false)?;
            add(format!("{l}.self_attn.{proj}.bias"), &[d], bias, false)?;
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            add(format!("{l}.{ln}.weight"), &[d], scale, false)?;
            add(format!("{l}.{ln}.bias"), &[d], bias, false)?;
        }
        add(
            format!("{l}.mlp.fc1.weight"),
            &[v.intermediate_size, d],
            mat,
            false,
        )?;
        add(
            format!("{l}.mlp.fc1.bias"),
            &[v.intermediate_size],
            bias,
            false,
        )?;
        add(
            format!("{l}.mlp.fc2.weight"),
            &[d, v.intermediate_size],
            mat,
            false,
        )?;
        add(format!("{l}.mlp.fc2.bias"), &[d], bias, false)?;
    }
    let t = &cfg.text;
    let h = t.hidden_size;
    for (name, inp) in [("linear_1", cfg.projector_in()), ("linear_2", h)] {
        add(
            format!("multi_modal_projector.{name}.weight"),
            &[h, inp],
            mat,
            true,
        )?;
        if cfg.projector_bias {
            add(
                format!("multi_modal_projector.{name}.bias"),
                &[h],
                bias,
                true,
            )?;
        }
    }
    let lm = "language_model.model";
    add(
        format!("{lm}.embed_tokens.weight"),
        &[t.vocab_size, h],
        emb,
        true,
    )?;
    let (q, kv) = (
        t.num_attention_heads * t.head_dim,
        t.num_key_value_heads * t.head_dim,
    );
    for i in 0..t.num_hidden_layers {
        let l = format!("{lm}.layers.{i}");
        for (name, out, inp) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", t.intermediate_size, h),
            ("mlp.up_proj", t.intermediate_size, h),
            ("mlp.down_proj", h, t.intermediate_size),
        ] {
            add(format!("{l}.{name}.weight"), &[out, inp], mat, true)?;
        }
        add(format!("{l}.input_layernorm.weight"), &[h], scale, true)?;
        add(
            format!("{l}.post_attention_layernorm.weight"),
            &[h],
            scale,
            true,
        )?;
    }
    add(format!("{lm}.norm.weight"), &[h], scale, true)?;
    add(
        "language_model.lm_head.weight".into(),
        &[t.vocab_size, h],
        mat,
        true,
    )?;
    Ok((map, vit_params))
}

/// Pairs shaped like the anchor's: 576 image tokens + `text_len` text tokens per sequence, the
/// last `text_len / 2` of them the scored answer; chosen and rejected share the rest.
fn batch(pairs: usize, text_len: usize, dev: &Device) -> Result<PairBatch> {
    let answer = text_len / 2;
    let prompt = text_len - answer - 1;
    let tok = |i: usize| (1 + (i * 7919) % 31990) as u32;
    let encoded = (0..pairs)
        .map(|p| {
            let mut prefix = vec![1u32];
            prefix.extend(std::iter::repeat_n(IMAGE_TOKEN, 576));
            prefix.extend((0..prompt).map(|i| tok(p * 1000 + i)));
            let side = |off: usize| {
                let mut ids = prefix.clone();
                ids.extend((0..answer).map(|i| tok(off + p * 1000 + i)));
                EncodedAnswer {
                    input_ids: ids,
                    answer_start: prefix.len(),
                    boundary_merged: false,
                    truncated: false,
                }
            };
            EncodedPair {
                chosen: side(100_000),
                rejected: side(200_000),
                shared_prefix: prefix.len(),
            }
        })
        .collect();
    let px = Tensor::randn(0f32, 1.0, (pairs, 3, 336, 336), dev)?.to_dtype(DType::BF16)?;
    Ok(PairBatch {
        images: Images::Pixels(px),
        pairs: encoded,
    })
}

/// Device memory in use (all processes), GiB.
#[cfg(feature = "cuda")]
fn used_gib() -> Option<f64> {
    let (free, total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
    Some((total - free) as f64 / (1u64 << 30) as f64)
}

#[cfg(not(feature = "cuda"))]
fn used_gib() -> Option<f64> {
    None
}

/// The bench step's learning rate (the paper's); betas 0.9 / 0.999, eps 1e-8, no weight decay.
const LR: f64 = 5e-7;

/// The optimizer of the bench step.
pub enum Optim {
    /// The product's AdamW: `fused` (fp32 masters and moments) or `fused-sr` (the bf16
    /// weights their own master, stochastic rounding, fp32 moments).
    Product(AdamW),
    /// `candle_nn::AdamW` (moments in the variables' dtype, no master) after the product's
    /// gradients; with its variables and its state bytes.
    Candle {
        opt: candle_nn::AdamW,
        params: Vec<Param>,
        bytes: usize,
    },
}

impl Optim {
    pub fn new(kind: &str, params: Vec<Param>) -> Result<Self> {
        let (kind, state) = match kind.strip_suffix("-8bit") {
            Some(k) => (k, StateFormat::Dynamic8),
            None => (kind, StateFormat::F32),
        };
        let master = match kind {
            "fused" => Master::F32,
            "fused-sr" => Master::StochasticBf16 { seed: 0 },
            "candle" => {
                let bytes = params
                    .iter()
                    .map(|p| 2 * p.var.elem_count() * p.var.dtype().size_in_bytes())
                    .sum();
                let vars = params.iter().map(|p| p.var.clone()).collect();
                let opt = candle_nn::AdamW::new(
                    vars,
                    ParamsAdamW {
                        lr: LR,
                        weight_decay: 0.0,
                        ..Default::default()
                    },
                )?;
                return Ok(Self::Candle { opt, params, bytes });
            }
            other => anyhow::bail!(
                "unknown optimizer {other} (fused, fused-sr, fused-8bit, fused-sr-8bit, candle)"
            ),
        };
        let cfg = AdamWConfig {
            master,
            state,
            ..AdamWConfig::default()
        };
        Ok(Self::Product(AdamW::new(params, cfg)?))
    }

    /// Bytes of optimizer state on the device.
    pub fn state_bytes(&self) -> usize {
        match self {
            Self::Product(opt) => opt.state_bytes(),
            Self::Candle { bytes, .. } => *bytes,
        }
    }

    /// One training step: the product's `train_step` (scoring, DAMA maths, backward, the
    /// global norm, clipping inside the update), or its gradients and candle's update.
    fn step(&mut self, model: &LlavaModel, batch: &PairBatch, step: &StepArgs<'_>) -> Result<()> {
        let StepArgs {
            refs,
            dama,
            settings,
        } = step;
        let mut state = step_state();
        match self {
            Self::Product(opt) => {
                train_step(model, opt, batch, *refs, dama, &mut state, settings, LR)?;
            }
            Self::Candle { opt, params, .. } => {
                let g = gradients(model, params, batch, *refs, dama, &mut state, settings)?;
                let mut store = GradStore::default();
                for (p, grad) in params.iter().zip(g.grads) {
                    if let Some(grad) = grad {
                        store.insert(p.var.as_tensor(), grad);
                    }
                }
                opt.step(&store)?;
            }
        }
        Ok(())
    }
}

/// What every bench step gets: the batch's reference log-probs and α_D, the DAMA settings,
/// the step settings (one micro-batch, shared prefix, clipping at 1.0).
struct StepArgs<'a> {
    refs: BatchRefs<'a>,
    dama: DamaConfig<f32>,
    settings: StepSettings,
}

/// ḡ and the sampling stream of a first step: every bench step starts from it, so that each
/// keeps the same pairs.
fn step_state() -> DamaState<f32> {
    DamaState::new(0)
}

pub fn run(
    dev: &Device,
    lm: &str,
    pairs: usize,
    steps: usize,
    optim: &str,
    layer_backward: LayerBackward,
    recompute_activations: bool,
) -> Result<()> {
    let text_len = 160;
    let cfg = config(lm)?;
    let t0 = Instant::now();
    let (weights, vit_params) = random_weights(&cfg, dev)?;
    let opts = LoadOptions {
        dtype: DType::BF16,
        device: dev.clone(),
        trainable: Trainable::Full,
    };
    let mut model = LlavaModel::from_weights(
        cfg.clone(),
        WeightFiles::from_tensors(weights, "random (GPU)"),
        &opts,
    )?;
    model.set_layer_backward(layer_backward);
    model.set_recompute_activations(recompute_activations);
    dev.synchronize()?;
    eprintln!(
        "llava-{lm}: random weights on the GPU in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let params = Param::all(model.trainable_vars());
    let n_train: usize = params.iter().map(|p| p.var.elem_count()).sum();
    let mut opt = Optim::new(optim, params)?;
    dev.synchronize()?;
    eprintln!(
        "optimizer {optim}: {:.1} GiB of state, {:.1} GiB in use",
        opt.state_bytes() as f64 / (1u64 << 30) as f64,
        used_gib().unwrap_or(f64::NAN)
    );
    let batch = batch(pairs, text_len, dev)?;
    let rc: Vec<f32> = (0..pairs).map(|i| -200.0 - (i % 7) as f32).collect();
    let rr: Vec<f32> = (0..pairs).map(|i| -200.5 - (i % 5) as f32).collect();
    let alpha_d: Vec<f32> = (0..pairs).map(|i| 0.5 + (i % 10) as f32 / 10.0).collect();
    let step_args = StepArgs {
        refs: BatchRefs {
            ref_chosen: &rc,
            ref_rejected: &rr,
            alpha_d: Some(&alpha_d),
        },
        dama: DamaConfig::default(),
        settings: StepSettings {
            micro_batch: pairs,
            shared_prefix: true,
            max_grad_norm: Some(1.0),
            overlap_grads: false,
        },
    };
    let (mut times, mut peak) = (Vec::new(), 0f64);
    for s in 0..steps + 2 {
        dev.synchronize()?;
        let t = Instant::now();
        opt.step(&model, &batch, &step_args)?;
        dev.synchronize()?;
        peak = peak.max(used_gib().unwrap_or(0.0));
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let step = times[times.len() / 2];
    let reference_ms = reference_pass_ms(dev, &model, &batch)?;
    let (phases, profile) = profiled(dev, &model, &mut opt, &batch, &step_args)?;
    let t = &cfg.text;
    let seq = 576 + text_len;
    let flops = Flops {
        pairs,
        seq,
        answer: text_len / 2,
        vocab: t.vocab_size,
        hidden: t.hidden_size,
        layers: t.num_hidden_layers,
        projector: cfg.projector_in() * t.hidden_size + t.hidden_size * t.hidden_size,
        trainable: n_train,
        vision: vit_params,
    };
    let lm_tokens = pairs * (seq + text_len / 2);
    let planned = planned_peak_gib(&cfg, pairs, text_len, optim, recompute_activations, dev)?;
    println!(
        "{}",
        json!({"config": format!("llava-{lm}"), "optim": optim,
               "layer_backward": format!("{layer_backward:?}").to_lowercase(),
               "recompute_activations": recompute_activations,
               // dama_kernels::cuda_device's pool threshold and event tracking (or CUDA's defaults)
               "cuda_defaults": std::env::var("DAMA_CUDA_DEFAULTS").as_deref() == Ok("1"),
               "optim_state_gib": opt.state_bytes() as f64 / (1u64 << 30) as f64,
               "pairs_per_step": pairs, "seq_len": seq,
               "trainable_params": n_train, "step_s": step, "pairs_per_s": pairs as f64 / step,
               "lm_tokens_per_step_shared_prefix": lm_tokens,
               "step_flops_executed": flops.executed(),
               "mfu_executed": flops.executed() / step / PEAK_BF16,
               "mfu_vs_989_anchor_flops": flops.anchor() / step / PEAK_BF16,
               "device_mem_used_gib_max_after_step": peak,
               // dama_train::plan's peak for this very shape and settings (compare with the
               // stage's nvidia-smi peak, peak_mem_mib)
               "planned_peak_gib": planned,
               "phases_ms": {"vision": phases.vision, "reference": reference_ms,
                             "policy_forward": phases.forward, "backward": phases.backward,
                             "optimizer": phases.optimizer},
               "phases_step_sum_ms": phases.vision + phases.forward + phases.backward + phases.optimizer,
               // the anchor's reference pass: tower + forward over 2·pairs sequences
               "ref_logp_seqs_per_s": (2 * pairs) as f64 / ((phases.vision + reference_ms) / 1e3),
               "profile": profile})
    );
    Ok(())
}

/// The memory planner's peak (GiB) for the bench step: bf16 weights, the `optim` layout,
/// `pairs` pairs of 1 + 576 + prompt tokens of prefix and `text_len / 2`-token answers.
fn planned_peak_gib(
    cfg: &LlavaConfig,
    pairs: usize,
    text_len: usize,
    optim: &str,
    checkpointing: bool,
    dev: &Device,
) -> Result<Option<f64>> {
    use dama_train::plan::{PlanSettings, Sequence, ZeroStage, plan};
    use dama_train::{OptimMaster, OptimState, Precision};
    let master = match optim.trim_end_matches("-8bit") {
        "fused" => OptimMaster::F32,
        "fused-sr" => OptimMaster::Bf16Sr,
        _ => return Ok(None),
    };
    let answer = text_len / 2;
    let settings = PlanSettings {
        precision: Precision::Bf16,
        master,
        state: if optim.ends_with("-8bit") {
            OptimState::Dynamic8
        } else {
            OptimState::F32
        },
        lora: None,
        batch_size: pairs,
        micro_batch: pairs,
        sequence: Sequence {
            prefix: 1 + 576 + (text_len - answer - 1),
            answer,
        },
        shared_prefix: true,
        recompute_activations: checkpointing,
        world_size: 1,
        zero: ZeroStage::Zero0,
        reference_resident: false,
        cuda: dev.is_cuda(),
    };
    Ok(Some(
        plan(cfg, &settings)?.peak as f64 / (1u64 << 30) as f64,
    ))
}

/// The FLOPs of one bench step (multiply-adds count 2).
struct Flops {
    pairs: usize,
    /// Tokens of one full sequence (576 image tokens + text).
    seq: usize,
    /// Tokens of each answer (the rest is the shared prefix).
    answer: usize,
    vocab: usize,
    hidden: usize,
    layers: usize,
    projector: usize,
    trainable: usize,
    vision: usize,
}

impl Flops {
    /// What dama executes: the tower forward once per pair (576 + 1 tokens); the projector on
    /// the 576 image tokens; the decoder's linear layers forward + backward (6 per parameter and
    /// token) over the shared prefix once and each answer once; causal attention over exactly
    /// the keys each query sees (4·d per key and layer forward, twice that backward); the head
    /// only on the scored answer tokens (the chunked head computes no other logits).
    fn executed(&self) -> f64 {
        let (p, a) = ((self.seq - self.answer) as f64, self.answer as f64);
        let tokens = p + 2.0 * a;
        let emb = (self.vocab * self.hidden) as f64;
        let decoder = self.trainable as f64 - 2.0 * emb - self.projector as f64;
        let keys = p * (p + 1.0) / 2.0 + 2.0 * (a * p + a * (a + 1.0) / 2.0);
        let per_pair = 6.0 * decoder * tokens
            + 6.0 * emb * 2.0 * a
            + 12.0 * (self.layers * self.hidden) as f64 * keys
            + 6.0 * self.projector as f64 * 576.0
            + 2.0 * self.vision as f64 * 577.0;
        per_pair * self.pairs as f64
    }

    /// The anchor script's count for its own work (2·pairs full sequences, every token through
    /// every trainable weight, the tower twice): comparable with its MFU, not with dama's work.
    fn anchor(&self) -> f64 {
        let toks = (2 * self.pairs * self.seq) as f64;
        let emb = (self.vocab * self.hidden) as f64;
        6.0 * (self.trainable as f64 - emb) * toks
            + 6.0 * 2.0 * (self.layers * self.hidden * self.seq) as f64 * toks / 2.0
            + 2.0 * self.vision as f64 * 577.0 * (2 * self.pairs) as f64
    }
}

/// Milliseconds per phase of one step, from the trainer's own spans (`step.vision`,
/// `step.forward`, `step.backward`, `step.optimizer`: clipping and the update).
struct Phases {
    vision: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// The reference pass of the batch's pairs (no graph; the work of precomputing reference
/// log-probs, here on the policy's weights): tower excluded, milliseconds.
fn reference_pass_ms(dev: &Device, model: &LlavaModel, batch: &PairBatch) -> Result<f64> {
    let Images::Pixels(px) = &batch.images else {
        anyhow::bail!("step: the batch carries pixels")
    };
    let with_features = PairBatch {
        images: Images::Features(model.image_features(px)?),
        pairs: batch.pairs.clone(),
    };
    dev.synchronize()?;
    let t = Instant::now();
    let reference = model.pair_logps_no_grad(&with_features, true)?;
    let _ = (
        reference.chosen.to_vec1::<f32>()?,
        reference.rejected.to_vec1::<f32>()?,
    );
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// One more step with `dama_kernels::profile` on: the step's phases and, inside them, every
/// decoder-layer stage, the embedding and the head summed over the layers, a device
/// synchronisation around each (so it runs a little slower than the measured steps). `other`
/// is what the stage spans do not cover (in the backward: candle's graph walk, the gradient
/// sums, the projector).
fn profiled(
    dev: &Device,
    model: &LlavaModel,
    opt: &mut Optim,
    batch: &PairBatch,
    step: &StepArgs<'_>,
) -> Result<(Phases, serde_json::Value)> {
    dev.synchronize()?;
    dama_kernels::profile::take();
    dama_kernels::profile::set_enabled(true);
    let ran = opt.step(model, batch, step);
    dama_kernels::profile::set_enabled(false);
    ran?;
    let spans = dama_kernels::profile::take();
    let ms = |name: &str| -> f64 { spans.iter().filter(|s| s.name == name).map(|s| s.ms).sum() };
    let phases = Phases {
        vision: ms("step.vision"),
        forward: ms("step.forward"),
        backward: ms("step.backward"),
        optimizer: ms("step.optimizer"),
    };
    let is_backward = |n: &str| n.starts_with("bwd.") || n.ends_with(".bwd");
    let table = |backward: bool, total: f64| {
        let rows: Vec<&dama_kernels::profile::Span> = spans
            .iter()
            .filter(|s| !s.name.starts_with("step.") && is_backward(s.name) == backward)
            .collect();
        let covered: f64 = rows.iter().map(|s| s.ms).sum();
        let mut out: Vec<serde_json::Value> = rows
            .iter()
            .map(|s| json!({"span": s.name, "calls": s.calls, "ms": s.ms}))
            .collect();
        out.push(json!({"span": "other", "calls": 0, "ms": total - covered}));
        json!({"total_ms": total, "spans": out})
    };
    let profile = json!({"forward": table(false, phases.forward),
                         "backward": table(true, phases.backward)});
    Ok((phases, profile))
}

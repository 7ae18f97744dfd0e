//! One full DAMA training step of a LLaVA-1.5-shaped model with random weights, the step
//! `scripts/bench/torch_dpo_step.py` times in PyTorch (its header lists what each side does
//! differently and `scripts/bench/flops.py` counts each side's FLOPs): ViT-L/14-336 tower
//! (frozen, forward), projector and
//! LLaMA language model fully trained, bf16, per-pair log-probs with the shared prefix, the
//! DAMA maths of `dama-core`, backward of Σ wᵢ·hᵢ, AdamW. Random weights are drawn on the GPU
//! (drawing 7B numbers on the host would take minutes of device time).
//!
//! The optimizer (`--optim`): `fused` (the default) is the product's semantics, fp32 master
//! weights and fp32 moments updated by `dama_kernels::adamw` (one kernel per variable, the
//! bf16 gradients read as they are); `fused-sr` the same kernel with no master copy, the bf16
//! weights their own master rounded stochastically (`Master::StochasticBf16`, fp32 moments:
//! 8 bytes of state per parameter instead of 12, what fits 7b); `candle` is `candle_nn::AdamW` (moments in bf16, no
//! master, ~15 element-wise kernels per variable), for comparison.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use dama_clip::config::ClipVisionConfig;
use dama_core::{DamaConfig, DamaState, StepInput};
use dama_kernels::adamw::{AdamWState, AdamWStep, Master};
use dama_llava::{
    Checkpoint, EncodedAnswer, EncodedPair, Images, LayerBackward, LlavaConfig, LlavaModel,
    LoadOptions, PairBatch, Trainable,
};
use serde_json::json;

/// H100 SXM dense bf16 peak, the anchor script's MFU denominator.
const PEAK_BF16: f64 = 989.4e12;
const IMAGE_TOKEN: u32 = 32000;

fn config(lm: &str) -> Result<LlavaConfig> {
    let (h, ff, layers, heads, kv) = match lm {
        "7b" => (4096, 11008, 32, 32, 32),
        "1b" => (2048, 5632, 22, 32, 4),
        "tiny" => (64, 128, 2, 4, 2),
        other => candle_core::bail!("unknown model shape {other} (1b, 7b, tiny)"),
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
    LlavaConfig::from_json_str(&cfg.to_string(), Path::new("gpu_bench step config"))
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// Random weights in the llava-hf layout, drawn on `dev` in bf16: matrices N(0, 1/fan_in),
/// embeddings N(0, 1), norm scales N(1, 0.1²), biases N(0, 0.1²). Trainable ones (projector,
/// language model) are made `Var`s here, so that loading them makes no second copy.
fn random_weights(cfg: &LlavaConfig, dev: &Device) -> Result<(HashMap<String, Tensor>, usize)> {
    let v: ClipVisionConfig = serde_json::from_value(cfg.vision_json.clone())
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
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

/// The optimizer of the bench step (lr 5e-7, betas 0.9 / 0.999, eps 1e-8, no weight decay).
pub enum Optim {
    /// fp32 master + fp32 moments, `dama_kernels::adamw` (the product's semantics), or
    /// (`fused-sr`) bf16 weights as their own master with stochastic rounding + fp32 moments.
    Fused {
        vars: Vec<(Var, AdamWState)>,
        steps: u64,
    },
    /// `candle_nn::AdamW`: moments in the variables' dtype (bf16), no master; its state bytes.
    Candle(AdamW, usize),
}

const LR: f64 = 5e-7;

impl Optim {
    pub fn new(kind: &str, vars: Vec<Var>) -> Result<Self> {
        match kind {
            "fused" | "fused-sr" => Ok(Self::Fused {
                vars: vars
                    .into_iter()
                    .map(|v| {
                        let master = if kind == "fused-sr" {
                            Master::StochasticBf16 { seed: 0 }
                        } else {
                            Master::F32
                        };
                        let s = AdamWState::with_master(v.as_tensor(), master)?;
                        Ok((v, s))
                    })
                    .collect::<Result<_>>()?,
                steps: 0,
            }),
            "candle" => {
                let bytes = vars
                    .iter()
                    .map(|v| 2 * v.elem_count() * v.dtype().size_in_bytes())
                    .sum();
                let opt = AdamW::new(
                    vars,
                    ParamsAdamW {
                        lr: LR,
                        weight_decay: 0.0,
                        ..Default::default()
                    },
                )?;
                Ok(Self::Candle(opt, bytes))
            }
            other => candle_core::bail!("unknown optimizer {other} (fused, fused-sr, candle)"),
        }
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        match self {
            Self::Fused { vars, steps } => {
                *steps += 1;
                // the product's step: the global norm, clipping at 1.0 inside the update
                let present: Vec<&Tensor> = vars
                    .iter()
                    .filter_map(|(v, _)| grads.get(v.as_tensor()))
                    .collect();
                let (_, clip) = dama_kernels::adamw::clip_grad_norm(&present, 1.0)?;
                let mut step = AdamWStep::new(LR, 0.9, 0.999, 1e-8, 0.0, *steps);
                if let Some(c) = clip {
                    step = step.with_grad_scale(c);
                }
                for (var, state) in vars.iter() {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        state.update(var, g, &step)?;
                    }
                }
                Ok(())
            }
            Self::Candle(opt, _) => opt.step(grads),
        }
    }

    /// Bytes of optimizer state on the device.
    pub fn state_bytes(&self) -> usize {
        match self {
            Self::Fused { vars, .. } => vars.iter().map(|(_, s)| 4 * s.buffer().elem_count()).sum(),
            Self::Candle(_, bytes) => *bytes,
        }
    }
}

pub fn run(
    dev: &Device,
    lm: &str,
    pairs: usize,
    steps: usize,
    optim: &str,
    layer_backward: LayerBackward,
    activation_checkpointing: bool,
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
    let mut model = LlavaModel::from_checkpoint(
        cfg.clone(),
        Checkpoint::from_tensors(weights, "random (GPU)"),
        &opts,
    )
    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    model.set_layer_backward(layer_backward);
    model.set_activation_checkpointing(activation_checkpointing);
    dev.synchronize()?;
    eprintln!(
        "llava-{lm}: random weights on the GPU in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let vars: Vec<Var> = model.trainable_vars().values().cloned().collect();
    let n_train: usize = vars.iter().map(|v| v.elem_count()).sum();
    let mut opt = Optim::new(optim, vars)?;
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
    let dama = DamaConfig::<f32>::default();
    let mut state = DamaState::<f32>::new(0);
    let (mut times, mut peak) = (Vec::new(), 0f64);
    for s in 0..steps + 2 {
        dev.synchronize()?;
        let t = Instant::now();
        let lp = model
            .pair_logps(&batch, true)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (pc, pr) = (lp.chosen.to_vec1::<f32>()?, lp.rejected.to_vec1::<f32>()?);
        let out = dama_core::step(
            &dama,
            &mut state,
            &StepInput {
                policy_chosen: &pc,
                policy_rejected: &pr,
                ref_chosen: &rc,
                ref_rejected: &rr,
                alpha_d: Some(&alpha_d),
                forced_mask: None,
            },
        )
        .map_err(|e| candle_core::Error::Msg(format!("{e:?}")))?;
        let w = Tensor::from_vec(out.grad_margins, pairs, dev)?;
        let objective = ((&lp.chosen - &lp.rejected)? * w)?.sum_all()?;
        let grads = objective.backward()?;
        opt.step(&grads)?;
        drop(grads);
        dev.synchronize()?;
        peak = peak.max(used_gib().unwrap_or(0.0));
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let step = times[times.len() / 2];
    let phases = phases(
        dev,
        &model,
        &mut opt,
        &batch,
        &dama,
        &mut state,
        (&rc, &rr, &alpha_d),
    )?;
    let profile = profiled(dev, &model, &batch)?;
    // The anchor's FLOP count for its own token count (2·pairs rows of 576 + text_len tokens),
    // so the two MFUs compare the same useful work; our shared prefix runs fewer tokens.
    let t = &cfg.text;
    let seq = 576 + text_len;
    let toks = (2 * pairs * seq) as f64;
    let emb = (t.vocab_size * t.hidden_size) as f64;
    let flops_lm = 6.0 * (n_train as f64 - emb) * toks
        + 6.0 * 2.0 * (t.num_hidden_layers * t.hidden_size * seq) as f64 * toks / 2.0;
    let flops_vit = 2.0 * vit_params as f64 * 577.0 * (2 * pairs) as f64;
    let lm_tokens = pairs * (seq + text_len / 2);
    println!(
        "{}",
        json!({"config": format!("llava-{lm}"), "optim": optim,
               "layer_backward": format!("{layer_backward:?}").to_lowercase(),
               "activation_checkpointing": activation_checkpointing,
               // dama_kernels::cuda_device's pool threshold and event tracking (or CUDA's defaults)
               "cuda_defaults": std::env::var("DAMA_CUDA_DEFAULTS").as_deref() == Ok("1"),
               "optim_state_gib": opt.state_bytes() as f64 / (1u64 << 30) as f64,
               "pairs_per_step": pairs, "seq_len": seq,
               "trainable_params": n_train, "step_s": step, "pairs_per_s": pairs as f64 / step,
               "lm_tokens_per_step_shared_prefix": lm_tokens,
               "mfu_vs_989_anchor_flops": (flops_lm + flops_vit) / step / PEAK_BF16,
               "device_mem_used_gib_max_after_step": peak,
               "phases_ms": {"vision": phases.vision, "reference": phases.reference,
                             "policy_forward": phases.forward, "backward": phases.backward,
                             "optimizer": phases.optimizer},
               "phases_step_sum_ms": phases.vision + phases.forward + phases.backward + phases.optimizer,
               // the anchor's reference pass: tower + forward over 2·pairs sequences
               "ref_logp_seqs_per_s": (2 * pairs) as f64 / ((phases.vision + phases.reference) / 1e3),
               "mem_gib_after_forward": phases.mem_after_forward,
               "profile": profile})
    );
    Ok(())
}

/// Milliseconds per phase of one step, and the device memory in use after the forward (GiB).
struct Phases {
    vision: f64,
    reference: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
    mem_after_forward: Option<f64>,
}

/// One more step, timed phase by phase with a device synchronisation between phases (so it
/// is a little slower than the measured steps, which overlap the host and the device):
/// the vision tower, a reference pass without a graph (the work of precomputing reference
/// log-probs, here on the policy's weights), the policy forward with the DAMA maths, the
/// backward, the AdamW update.
fn phases(
    dev: &Device,
    model: &LlavaModel,
    opt: &mut Optim,
    batch: &PairBatch,
    dama: &DamaConfig<f32>,
    state: &mut DamaState<f32>,
    (rc, rr, alpha_d): (&[f32], &[f32], &[f32]),
) -> Result<Phases> {
    let err = |e: dama_llava::LlavaError| candle_core::Error::Msg(e.to_string());
    let mut ms = std::collections::BTreeMap::new();
    let mut lap = |name: &'static str, t: &mut Instant| -> Result<()> {
        dev.synchronize()?;
        ms.insert(name, t.elapsed().as_secs_f64() * 1e3);
        *t = Instant::now();
        Ok(())
    };
    dev.synchronize()?;
    let mut t = Instant::now();
    let with_features = features_batch(model, batch)?;
    lap("vision", &mut t)?;
    let reference = model
        .pair_logps_no_grad(&with_features, true)
        .map_err(err)?;
    let _ = (
        reference.chosen.to_vec1::<f32>()?,
        reference.rejected.to_vec1::<f32>()?,
    );
    drop(reference);
    lap("reference", &mut t)?;
    let lp = model.pair_logps(&with_features, true).map_err(err)?;
    let (pc, pr) = (lp.chosen.to_vec1::<f32>()?, lp.rejected.to_vec1::<f32>()?);
    let out = dama_core::step(
        dama,
        state,
        &StepInput {
            policy_chosen: &pc,
            policy_rejected: &pr,
            ref_chosen: rc,
            ref_rejected: rr,
            alpha_d: Some(alpha_d),
            forced_mask: None,
        },
    )
    .map_err(|e| candle_core::Error::Msg(format!("{e:?}")))?;
    let w = Tensor::from_vec(out.grad_margins, pc.len(), dev)?;
    let objective = ((&lp.chosen - &lp.rejected)? * w)?.sum_all()?;
    lap("policy_forward", &mut t)?;
    let mem_after_forward = used_gib();
    let grads = objective.backward()?;
    lap("backward", &mut t)?;
    opt.step(&grads)?;
    drop(grads);
    lap("optimizer", &mut t)?;
    Ok(Phases {
        vision: ms["vision"],
        reference: ms["reference"],
        forward: ms["policy_forward"],
        backward: ms["backward"],
        optimizer: ms["optimizer"],
        mem_after_forward,
    })
}

/// One more forward + backward (no optimizer) with `dama_kernels::profile` spans on: every
/// decoder-layer stage, the embedding and the head, each summed over the layers, with a
/// device synchronisation around each; `other` is what the spans do not cover (in the
/// backward: candle's graph walk, the per-parameter gradient sums, the projector).
fn profiled(dev: &Device, model: &LlavaModel, batch: &PairBatch) -> Result<serde_json::Value> {
    let err = |e: dama_llava::LlavaError| candle_core::Error::Msg(e.to_string());
    let with_features = features_batch(model, batch)?;
    dev.synchronize()?;
    dama_kernels::profile::take();
    dama_kernels::profile::set_enabled(true);
    let t = Instant::now();
    let lp = model.pair_logps(&with_features, true).map_err(err)?;
    let objective = (lp.chosen.sum_all()? - lp.rejected.sum_all()?)?;
    dev.synchronize()?;
    let fwd = dama_kernels::profile::take();
    let fwd_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let grads = objective.backward()?;
    dev.synchronize()?;
    let bwd_ms = t.elapsed().as_secs_f64() * 1e3;
    dama_kernels::profile::set_enabled(false);
    let bwd = dama_kernels::profile::take();
    drop(grads);
    let table = |spans: &[dama_kernels::profile::Span], total: f64| {
        let covered: f64 = spans.iter().map(|s| s.ms).sum();
        let mut rows: Vec<serde_json::Value> = spans
            .iter()
            .map(|s| json!({"span": s.name, "calls": s.calls, "ms": s.ms}))
            .collect();
        rows.push(json!({"span": "other", "calls": 0, "ms": total - covered}));
        json!({"total_ms": total, "spans": rows})
    };
    Ok(json!({"forward": table(&fwd, fwd_ms), "backward": table(&bwd, bwd_ms)}))
}

/// `batch` with its pixels run through the (frozen) vision tower.
fn features_batch(model: &LlavaModel, batch: &PairBatch) -> Result<PairBatch> {
    let Images::Pixels(px) = &batch.images else {
        candle_core::bail!("step: the batch carries pixels")
    };
    Ok(PairBatch {
        images: Images::Features(
            model
                .image_features(px)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
        ),
        pairs: batch.pairs.clone(),
    })
}

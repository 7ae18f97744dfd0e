//! Random LLaVA weights in the llava-hf layout, generated in memory: benchmarks at sizes no
//! fixture can hold, and tests that need a model of their own. Nothing is downloaded.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use dama_clip::config::ClipVisionConfig;
use dama_core::Xoshiro256;

use crate::config::LlavaConfig;
use crate::error::{LlavaError, Result};
use crate::names::{self, LayerNames};
use crate::params::Projection;
use crate::weights::WeightFiles;

struct Gen(Xoshiro256);

impl Gen {
    /// Standard normal samples (Box–Muller).
    fn normal(&mut self, n: usize, std: f64, mean: f64) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.0.open01(), self.0.open01());
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            out.push((mean + std * r * a.cos()) as f32);
            out.push((mean + std * r * a.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

/// Weights for `cfg`: matrices N(0, 1/fan_in), embeddings N(0, 1), norm scales N(1, 0.1²),
/// biases N(0, 0.1²): activations of order one, so that log-probs and gradients are far from
/// the degenerate uniform case.
pub fn random_weights(cfg: &LlavaConfig, seed: u64) -> Result<WeightFiles> {
    let mut g = Gen(Xoshiro256::seed_from(seed));
    let mut map = HashMap::new();
    for (name, shape, kind) in weight_specs(cfg)? {
        let n: usize = shape.iter().product();
        let data = match kind {
            Kind::Matrix => g.normal(
                n,
                1.0 / (shape[1..].iter().product::<usize>() as f64).sqrt(),
                0.0,
            ),
            Kind::Embedding => g.normal(n, 1.0, 0.0),
            Kind::Scale => g.normal(n, 0.1, 1.0),
            Kind::Bias => g.normal(n, 0.1, 0.0),
        };
        map.insert(
            name,
            Tensor::from_vec(data, shape.as_slice(), &Device::Cpu)?,
        );
    }
    Ok(WeightFiles::from_tensors(
        map,
        format!("random weights (seed {seed})"),
    ))
}

/// Every weight of a LLaVA model of `cfg` in the llava-hf layout: (name, shape), in the order
/// [`random_weights`] draws them. What the memory planner counts.
pub fn weight_shapes(cfg: &LlavaConfig) -> Result<Vec<(String, Vec<usize>)>> {
    Ok(weight_specs(cfg)?
        .into_iter()
        .map(|(name, shape, _)| (name, shape))
        .collect())
}

fn weight_specs(cfg: &LlavaConfig) -> Result<Vec<(String, Vec<usize>, Kind)>> {
    let v: ClipVisionConfig = serde_json::from_value(cfg.vision_json.clone())
        .map_err(|e| LlavaError::config("random model", "vision_config", e.to_string()))?;
    let mut specs = Vec::new();
    let mut add = |name: String, shape: &[usize], kind: Kind| -> Result<()> {
        specs.push((name, shape.to_vec(), kind));
        Ok(())
    };
    use Kind::*;
    let vp = "vision_tower.vision_model";
    let (d, c, p) = (v.hidden_size, v.num_channels, v.patch_size);
    add(format!("{vp}.embeddings.class_embedding"), &[d], Embedding)?;
    add(
        format!("{vp}.embeddings.patch_embedding.weight"),
        &[d, c, p, p],
        Matrix,
    )?;
    add(
        format!("{vp}.embeddings.position_embedding.weight"),
        &[v.num_positions(), d],
        Embedding,
    )?;
    for ln in ["pre_layrnorm", "post_layernorm"] {
        add(format!("{vp}.{ln}.weight"), &[d], Scale)?;
        add(format!("{vp}.{ln}.bias"), &[d], Bias)?;
    }
    for i in 0..v.num_hidden_layers {
        let l = format!("{vp}.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add(format!("{l}.self_attn.{proj}.weight"), &[d, d], Matrix)?;
            add(format!("{l}.self_attn.{proj}.bias"), &[d], Bias)?;
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            add(format!("{l}.{ln}.weight"), &[d], Scale)?;
            add(format!("{l}.{ln}.bias"), &[d], Bias)?;
        }
        add(
            format!("{l}.mlp.fc1.weight"),
            &[v.intermediate_size, d],
            Matrix,
        )?;
        add(format!("{l}.mlp.fc1.bias"), &[v.intermediate_size], Bias)?;
        add(
            format!("{l}.mlp.fc2.weight"),
            &[d, v.intermediate_size],
            Matrix,
        )?;
        add(format!("{l}.mlp.fc2.bias"), &[d], Bias)?;
    }
    let t = &cfg.text;
    let h = t.hidden_size;
    for (layer, inp) in [(1, cfg.projector_in()), (2, h)] {
        let pr = names::projector(layer);
        add(pr.weight(), &[h, inp], Matrix)?;
        if cfg.projector_bias {
            add(pr.bias(), &[h], Bias)?;
        }
    }
    add(names::embed_tokens(), &[t.vocab_size, h], Embedding)?;
    for i in 0..t.num_hidden_layers {
        let l = LayerNames::new(i);
        for p in Projection::ALL {
            let (out, inp) = p.shape(t);
            let prefix = l.projection(p);
            add(prefix.weight(), &[out, inp], Matrix)?;
            if p.has_bias(t) {
                add(prefix.bias(), &[out], Bias)?;
            }
        }
        add(l.input_norm(), &[h], Scale)?;
        add(l.post_norm(), &[h], Scale)?;
    }
    add(names::final_norm(), &[h], Scale)?;
    if !cfg.tie_word_embeddings {
        add(names::lm_head(), &[t.vocab_size, h], Matrix)?;
    }
    Ok(specs)
}

#[derive(Clone, Copy)]
enum Kind {
    Matrix,
    Embedding,
    Scale,
    Bias,
}

/// The small LLaMA-style BPE tokenizer of the test fixtures (1024 tokens with byte fallback,
/// trained on simple English by `scripts/fixtures/llava.py`; `<image>` = 1000, `<pad>` = 1001).
/// Any text tokenises with it, so tiny models built on it can train on real sentences.
pub const TINY_TOKENIZER_JSON: &str = include_str!("../tests/fixtures/llava-tiny/tokenizer.json");

/// The shape of a tiny LLaVA-1.5 for demos and tests; the vocabulary is the tiny tokenizer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinySpec {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub vision_hidden_size: usize,
    pub vision_layers: usize,
    pub image_size: usize,
    pub patch_size: usize,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 160,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            vision_hidden_size: 32,
            vision_layers: 3,
            image_size: 56,
            patch_size: 14,
        }
    }
}

impl TinySpec {
    /// `config.json` in the llava-hf schema transformers writes.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "image_token_index": 1000,
            "pad_token_id": 1001,
            "projector_hidden_act": "gelu",
            "multimodal_projector_bias": true,
            "tie_word_embeddings": false,
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "image_seq_length": (self.image_size / self.patch_size).pow(2),
            "text_config": {
                "model_type": "llama", "hidden_act": "silu",
                "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
                "num_key_value_heads": self.num_kv_heads, "head_dim": self.hidden_size / self.num_heads,
                "vocab_size": 1024, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
                "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 1001,
                "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
                "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false
            },
            "vision_config": {
                "model_type": "clip_vision_model", "hidden_act": "quick_gelu",
                "hidden_size": self.vision_hidden_size, "intermediate_size": 2 * self.vision_hidden_size,
                "num_hidden_layers": self.vision_layers, "num_attention_heads": 4, "num_channels": 3,
                "image_size": self.image_size, "patch_size": self.patch_size,
                "layer_norm_eps": 1e-5, "projection_dim": 16
            }
        })
    }

    /// The image processor (CLIP's, at this model's image size), as `processor_config.json`
    /// nests it and `preprocessor_config.json` holds it.
    pub fn image_processor_json(&self) -> serde_json::Value {
        serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true, "size": {"shortest_edge": self.image_size}, "resample": 3,
            "do_center_crop": true, "crop_size": {"height": self.image_size, "width": self.image_size},
            "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_convert_rgb": true
        })
    }
}

/// Writes a random tiny LLaVA-1.5 folder in the Hugging Face layout: `config.json`,
/// `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`, `preprocessor_config.json`.
/// transformers loads it as a `LlavaForConditionalGeneration`.
pub fn write_tiny_model(dir: &std::path::Path, spec: &TinySpec, seed: u64) -> Result<()> {
    let config = spec.config_json();
    let cfg = LlavaConfig::from_json_str(&config.to_string(), std::path::Path::new("tiny config"))?;
    let ckpt = random_weights(&cfg, seed)?;
    let model = crate::LlavaModel::from_weights(cfg, ckpt, &Default::default())?;
    model.save_pretrained(dir)?;
    let write = |name: &str, text: String| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| LlavaError::io(&path, e))
    };
    write("tokenizer.json", TINY_TOKENIZER_JSON.to_string())?;
    let tokenizer_config = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "padding_side": "right", "processor_class": "LlavaProcessor",
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 2048
    });
    write("tokenizer_config.json", pretty(&tokenizer_config))?;
    write(
        "preprocessor_config.json",
        pretty(&spec.image_processor_json()),
    )
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LlavaProcessor, LoadOptions};

    #[test]
    fn a_written_tiny_model_loads_and_scores_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TinySpec::default();
        write_tiny_model(dir.path(), &spec, 3).unwrap();
        let model = crate::LlavaModel::load(dir.path(), &LoadOptions::default()).unwrap();
        let processor = LlavaProcessor::load(dir.path(), model.config()).unwrap();
        let image = image::DynamicImage::new_rgb8(70, 50);
        let ex = crate::PairExample {
            image: &image,
            question: "What is it?",
            chosen: "A red circle.",
            rejected: "A blue square.",
        };
        let batch = processor.batch(&[ex], model.device()).unwrap();
        let logps = model.pair_logps_no_grad(&batch, true).unwrap();
        let c = logps.chosen.to_vec1::<f32>().unwrap()[0];
        assert!(c.is_finite() && c < 0.0, "{c}");
        // Same seed, same weights.
        let again = tempfile::tempdir().unwrap();
        write_tiny_model(again.path(), &spec, 3).unwrap();
        let a = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let b = std::fs::read(again.path().join("model.safetensors")).unwrap();
        assert_eq!(a, b);
    }
}

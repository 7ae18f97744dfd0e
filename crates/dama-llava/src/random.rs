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
    write_side_files(dir)?;
    let path = dir.join("preprocessor_config.json");
    std::fs::write(&path, pretty(&spec.image_processor_json()))
        .map_err(|e| LlavaError::io(&path, e))
}

/// Writes a tiny LLaVA-1.5 whose vision tower is the CLIP in `clip_dir` (an HF `CLIPModel`
/// folder: its `vision_model.*` weights become `vision_tower.vision_model.*`, its
/// `vision_config` the model's, its `preprocessor_config.json` the model's image processor),
/// with a random projector and language model of `spec`'s shape (its vision fields are unused):
/// the starting point of LLaVA's supervised stage, on a CLIP of one's own.
pub fn write_llava_from_clip(
    dir: &std::path::Path,
    clip_dir: &std::path::Path,
    spec: &TinySpec,
    seed: u64,
) -> Result<()> {
    let clip_config = clip_dir.join("config.json");
    let clip: serde_json::Value = crate::error::read_json(&clip_config)?;
    let mut vision = clip.get("vision_config").cloned().ok_or_else(|| {
        LlavaError::config(
            clip_config.display().to_string(),
            "vision_config",
            "missing",
        )
    })?;
    vision["model_type"] = "clip_vision_model".into();
    let v: ClipVisionConfig = serde_json::from_value(vision.clone()).map_err(|e| {
        LlavaError::config(
            clip_config.display().to_string(),
            "vision_config",
            e.to_string(),
        )
    })?;
    let mut config = spec.config_json();
    config["vision_config"] = vision;
    config["image_seq_length"] = v.num_patches().into();
    let cfg = LlavaConfig::from_json_str(&config.to_string(), &clip_config)?;
    let random = random_weights(&cfg, seed)?;
    let mut tensors = HashMap::new();
    for name in random.names() {
        tensors.insert(name.to_owned(), random.raw(name)?);
    }
    let weights = clip_dir.join("model.safetensors");
    let clip_tensors =
        candle_core::safetensors::load(&weights, &Device::Cpu).map_err(|e| LlavaError::Tensor {
            origin: weights.display().to_string(),
            name: "*".into(),
            message: e.to_string(),
        })?;
    let mut copied = 0;
    for (name, t) in clip_tensors {
        if let Some(rest) = name.strip_prefix("vision_model.") {
            let key = format!("vision_tower.vision_model.{rest}");
            if let Some(shape) = random.shape(&key)
                && shape != t.dims()
            {
                return Err(LlavaError::TensorShape {
                    origin: weights.display().to_string(),
                    name,
                    found: t.dims().to_vec(),
                    expected: shape.to_vec(),
                });
            }
            tensors.insert(key, t);
            copied += 1;
        }
    }
    if copied == 0 {
        return Err(LlavaError::MissingTensor {
            origin: weights.display().to_string(),
            name: "vision_model.*".into(),
        });
    }
    let ckpt = WeightFiles::from_tensors(
        tensors,
        format!("{} + random LLaVA (seed {seed})", clip_dir.display()),
    );
    let model = crate::LlavaModel::from_weights(cfg, ckpt, &Default::default())?;
    model.save_pretrained(dir)?;
    write_side_files(dir)?;
    let pre = clip_dir.join("preprocessor_config.json");
    let text = std::fs::read_to_string(&pre).map_err(|e| LlavaError::io(&pre, e))?;
    let path = dir.join("preprocessor_config.json");
    std::fs::write(&path, text).map_err(|e| LlavaError::io(&path, e))
}

/// The tiny tokenizer and its `tokenizer_config.json`.
fn write_side_files(dir: &std::path::Path) -> Result<()> {
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
    write("tokenizer_config.json", pretty(&tokenizer_config))
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LlavaProcessor, LoadOptions};

    /// The model's vision features are the CLIP's hidden state −2 without the class token, and
    /// its image processor is the CLIP's.
    #[test]
    fn a_llava_from_a_clip_sees_with_that_clip() {
        let clip_spec = dama_clip::TinyClipSpec {
            vocab_size: 20,
            max_positions: 16,
            text_hidden: 16,
            text_layers: 1,
            vision_hidden: 32,
            vision_layers: 3,
            heads: 4,
            image_size: 32,
            patch_size: 8,
            projection_dim: 8,
        };
        let clip_dir = tempfile::tempdir().unwrap();
        let clip = dama_clip::TrainableClip::random(&clip_spec.config(), 1, &Device::Cpu).unwrap();
        let words: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let pre = dama_clip::train::preprocessor_config(32).to_string();
        clip.save(
            clip_dir.path(),
            &dama_clip::word_level_tokenizer_json(&words),
            &pre,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_llava_from_clip(dir.path(), clip_dir.path(), &TinySpec::default(), 2).unwrap();
        let model = crate::LlavaModel::load(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(model.config().num_image_tokens(), 16);
        let processor = LlavaProcessor::load(dir.path(), model.config()).unwrap();
        let image = image::DynamicImage::new_rgb8(40, 40);
        let px = processor.pixel_values(&[&image], &Device::Cpu).unwrap();
        let got = model.image_features(&px).unwrap();
        let tower =
            dama_clip::ClipModel::load(clip_dir.path(), &Device::Cpu, candle_core::DType::F32)
                .unwrap();
        let want = tower
            .vision_model
            .hidden_state(&px, -2)
            .unwrap()
            .narrow(1, 1, 16)
            .unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // A CLIP folder without vision weights is an error that names its file.
        let empty = tempfile::tempdir().unwrap();
        std::fs::copy(
            clip_dir.path().join("config.json"),
            empty.path().join("config.json"),
        )
        .unwrap();
        candle_core::safetensors::save(
            &HashMap::from([(
                "logit_scale".to_string(),
                Tensor::new(1f32, &Device::Cpu).unwrap(),
            )]),
            empty.path().join("model.safetensors"),
        )
        .unwrap();
        let err = write_llava_from_clip(dir.path(), empty.path(), &TinySpec::default(), 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("vision_model"),
            "{err}"
        );
    }

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

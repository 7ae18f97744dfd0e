//! `config.json` of a Hugging Face `LlavaForConditionalGeneration` (the `llava-hf` schema).
//!
//! Defaults follow transformers: a missing `text_config` field takes `LlamaConfig`'s default,
//! a `vision_config` object that is present takes `CLIPVisionConfig`'s defaults for missing
//! fields, and an absent `vision_config` takes LLaVA's own (CLIP ViT-L/14-336). The real
//! llava-hf configs are sparse and rely on exactly these defaults (the 7B `text_config` names
//! only `vocab_size`, `rms_norm_eps` and `max_position_embeddings`).

use std::path::Path;

use serde::Deserialize;

use crate::error::{LlavaError, Result, parse_json};

/// The LLaMA / Vicuna language model.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Linear RoPE scaling factor (`rope_type: "linear"`); 1 for the default RoPE.
    pub rope_linear_factor: f64,
    pub max_position_embeddings: usize,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

/// Which hidden states of the vision tower feed the projector, as transformers'
/// `vision_feature_select_strategy`: `Default` drops the CLS token, `Full` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectStrategy {
    Default,
    Full,
}

/// The projector's activation (`projector_hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorAct {
    /// `gelu`: the exact erf form (LLaVA-1.5's `mlp2x_gelu`).
    Gelu,
    /// `gelu_pytorch_tanh` / `gelu_new`: the tanh approximation.
    GeluTanh,
}

/// The few vision-tower numbers this crate needs itself (the tower reads the full
/// `vision_config` through `dama_clip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionShape {
    pub hidden_size: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_hidden_layers: usize,
}

/// A LLaVA configuration, validated.
#[derive(Debug, Clone)]
pub struct LlavaConfig {
    pub text: TextConfig,
    pub vision: VisionShape,
    /// The `vision_config` object as given (or LLaVA's default), for `dama_clip` to parse.
    pub vision_json: serde_json::Value,
    /// Id of the `<image>` placeholder (`image_token_index`, alias `image_token_id`).
    pub image_token_id: u32,
    /// Indices into transformers' `hidden_states` (negative from the end), concatenated.
    pub vision_feature_layers: Vec<i64>,
    pub select_strategy: SelectStrategy,
    pub projector_act: ProjectorAct,
    pub projector_bias: bool,
    pub tie_word_embeddings: bool,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// Tokens that end an answer (`text_config.eos_token_id`, one id or a list; LLaMA's `</s>`
    /// = 2 when absent): where generation stops.
    pub eos_token_ids: Vec<u32>,
    /// The whole `config.json`, written back unchanged (but for the dtype) on save.
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FeatureLayer {
    One(i64),
    Many(Vec<i64>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RawRope {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    factor: Option<f64>,
}

#[derive(Deserialize, Default)]
struct RawText {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
    pad_token_id: Option<u32>,
    model_type: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawVision {
    hidden_size: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
}

#[derive(Deserialize)]
struct RawLlava {
    model_type: Option<String>,
    text_config: Option<RawText>,
    vision_config: Option<serde_json::Value>,
    image_token_index: Option<u32>,
    image_token_id: Option<u32>,
    projector_hidden_act: Option<String>,
    vision_feature_layer: Option<FeatureLayer>,
    vision_feature_select_strategy: Option<String>,
    multimodal_projector_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    pad_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
}

/// LLaVA's default vision tower (transformers' `LlavaConfig.sub_configs_defaults`), used only
/// when `vision_config` is absent altogether.
fn default_vision_json() -> serde_json::Value {
    serde_json::json!({
        "model_type": "clip_vision_model",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "patch_size": 14,
        "image_size": 336,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "projection_dim": 768
    })
}

impl LlavaConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LlavaError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses config text; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self> {
        let raw_value: serde_json::Value = parse_json(text, origin)?;
        let raw: RawLlava = parse_json(text, origin)?;
        let o = origin.display().to_string();
        if let Some(mt) = &raw.model_type
            && mt != "llava"
        {
            return Err(LlavaError::config(
                &o,
                "model_type",
                format!("`{mt}` is not a LLaVA (`llava`) configuration"),
            ));
        }
        let rt = raw.text_config.unwrap_or_default();
        let text = text_config(&rt, &o)?;
        let vision_json = raw.vision_config.unwrap_or_else(default_vision_json);
        let rv: RawVision =
            serde_path_to_error::deserialize(&vision_json).map_err(|e| LlavaError::Json {
                path: origin.to_path_buf(),
                field: format!("vision_config.{}", e.path()),
                message: e.inner().to_string(),
            })?;
        // CLIPVisionConfig's own defaults (ViT-B/32), as transformers applies them to a given
        // `vision_config` object.
        let vision = VisionShape {
            hidden_size: rv.hidden_size.unwrap_or(768),
            image_size: rv.image_size.unwrap_or(224),
            patch_size: rv.patch_size.unwrap_or(32),
            num_hidden_layers: rv.num_hidden_layers.unwrap_or(12),
        };
        let heads = rv.num_attention_heads.unwrap_or(12);
        if vision.patch_size == 0 || !vision.image_size.is_multiple_of(vision.patch_size) {
            return Err(LlavaError::config(
                &o,
                "vision_config.patch_size",
                format!(
                    "{} does not divide image_size {}",
                    vision.patch_size, vision.image_size
                ),
            ));
        }
        if heads == 0 || !vision.hidden_size.is_multiple_of(heads) {
            return Err(LlavaError::config(
                &o,
                "vision_config.num_attention_heads",
                format!("{heads} does not divide hidden_size {}", vision.hidden_size),
            ));
        }
        let select_strategy = match raw.vision_feature_select_strategy.as_deref() {
            None | Some("default") => SelectStrategy::Default,
            Some("full") => SelectStrategy::Full,
            Some(s) => {
                return Err(LlavaError::config(
                    &o,
                    "vision_feature_select_strategy",
                    format!("`{s}` is neither `default` nor `full`"),
                ));
            }
        };
        let projector_act = match raw.projector_hidden_act.as_deref() {
            None | Some("gelu") => ProjectorAct::Gelu,
            Some("gelu_pytorch_tanh" | "gelu_new") => ProjectorAct::GeluTanh,
            Some(s) => {
                return Err(LlavaError::config(
                    &o,
                    "projector_hidden_act",
                    format!("`{s}` is not supported (gelu, gelu_pytorch_tanh, gelu_new)"),
                ));
            }
        };
        let vision_feature_layers = match raw.vision_feature_layer {
            None => vec![-2],
            Some(FeatureLayer::One(l)) => vec![l],
            Some(FeatureLayer::Many(ls)) => ls,
        };
        let cfg = Self {
            text,
            vision,
            vision_json,
            image_token_id: raw
                .image_token_index
                .or(raw.image_token_id)
                .unwrap_or(32000),
            vision_feature_layers,
            select_strategy,
            projector_act,
            projector_bias: raw.multimodal_projector_bias.unwrap_or(true),
            // transformers: the text config's tie flag wins when the top level says false
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false)
                || rt.tie_word_embeddings.unwrap_or(false),
            pad_token_id: raw.pad_token_id.or(rt.pad_token_id),
            bos_token_id: match rt.bos_token_id {
                None => Some(1),
                Some(TokenIds::One(id)) => Some(id),
                Some(TokenIds::Many(ids)) => ids.first().copied(),
            },
            // LlamaConfig's default eos is 2; the top level (older configs) as a fallback
            eos_token_ids: match rt.eos_token_id.or(raw.eos_token_id) {
                None => vec![2],
                Some(TokenIds::One(id)) => vec![id],
                Some(TokenIds::Many(ids)) => ids,
            },
            raw: raw_value,
        };
        if cfg.vision_feature_layers.is_empty() {
            return Err(LlavaError::config(&o, "vision_feature_layer", "empty list"));
        }
        for &l in &cfg.vision_feature_layers {
            cfg.hidden_state_index(l).ok_or_else(|| {
                LlavaError::config(
                    &o,
                    "vision_feature_layer",
                    format!(
                        "{l} is outside the {} hidden states of the vision tower",
                        cfg.vision.num_hidden_layers + 1
                    ),
                )
            })?;
        }
        Ok(cfg)
    }

    /// Number of patches of one image: 576 for CLIP ViT-L/14-336.
    pub fn num_patches(&self) -> usize {
        let side = self.vision.image_size / self.vision.patch_size;
        side * side
    }

    /// How many `<image>` tokens one image expands to (what LlavaProcessor inserts).
    pub fn num_image_tokens(&self) -> usize {
        match self.select_strategy {
            SelectStrategy::Default => self.num_patches(),
            SelectStrategy::Full => self.num_patches() + 1,
        }
    }

    /// Index into `hidden_states` (0 = embeddings, k = after encoder layer k) of a feature layer.
    pub fn hidden_state_index(&self, layer: i64) -> Option<usize> {
        let n = self.vision.num_hidden_layers as i64 + 1;
        let i = if layer < 0 { n + layer } else { layer };
        (0..n).contains(&i).then_some(i as usize)
    }

    /// Encoder layers the tower must run to produce every feature layer (LLaVA-1.5: 23 of 24).
    pub fn vision_layers_to_run(&self) -> usize {
        self.vision_feature_layers
            .iter()
            .filter_map(|&l| self.hidden_state_index(l))
            .max()
            .unwrap_or(0)
    }

    /// Width of the projector's input: the vision width times the number of feature layers.
    pub fn projector_in(&self) -> usize {
        self.vision.hidden_size * self.vision_feature_layers.len()
    }
}

fn text_config(rt: &RawText, o: &str) -> Result<TextConfig> {
    if let Some(mt) = &rt.model_type
        && mt != "llama"
    {
        return Err(LlavaError::config(
            o,
            "text_config.model_type",
            format!("`{mt}`: only LLaMA-family language models (`llama`) are supported"),
        ));
    }
    if let Some(act) = &rt.hidden_act
        && act != "silu"
    {
        return Err(LlavaError::config(
            o,
            "text_config.hidden_act",
            format!("`{act}`: LLaMA's MLP is SwiGLU (`silu`)"),
        ));
    }
    let hidden_size = rt.hidden_size.unwrap_or(4096);
    let num_attention_heads = rt.num_attention_heads.unwrap_or(32);
    let num_key_value_heads = rt.num_key_value_heads.unwrap_or(num_attention_heads);
    if num_attention_heads == 0 || num_key_value_heads == 0 {
        return Err(LlavaError::config(
            o,
            "text_config.num_attention_heads",
            "zero heads",
        ));
    }
    if !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(LlavaError::config(
            o,
            "text_config.num_key_value_heads",
            format!(
                "{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"
            ),
        ));
    }
    let head_dim = match rt.head_dim {
        Some(d) => d,
        None if hidden_size.is_multiple_of(num_attention_heads) => {
            hidden_size / num_attention_heads
        }
        None => {
            return Err(LlavaError::config(
                o,
                "text_config.num_attention_heads",
                format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
            ));
        }
    };
    if !head_dim.is_multiple_of(2) {
        return Err(LlavaError::config(
            o,
            "text_config.head_dim",
            "RoPE needs an even head_dim",
        ));
    }
    // transformers 5.x writes `rope_parameters`; 4.x wrote `rope_theta` + `rope_scaling`.
    let (rope, field) = match (&rt.rope_parameters, &rt.rope_scaling) {
        (Some(p), _) => (Some(p), "text_config.rope_parameters"),
        (None, Some(s)) => (Some(s), "text_config.rope_scaling"),
        (None, None) => (None, ""),
    };
    let mut rope_theta = rt.rope_theta.unwrap_or(10000.0);
    let mut rope_linear_factor = 1.0;
    if let Some(r) = rope {
        if let Some(t) = r.rope_theta {
            rope_theta = t;
        }
        match r.rope_type.as_deref().or(r.kind.as_deref()) {
            None | Some("default") => {}
            Some("linear") => {
                rope_linear_factor = r.factor.ok_or_else(|| {
                    LlavaError::config(o, field, "linear RoPE scaling without `factor`")
                })?;
            }
            Some(other) => {
                return Err(LlavaError::config(
                    o,
                    field,
                    format!("RoPE type `{other}` is not supported (default, linear)"),
                ));
            }
        }
    }
    Ok(TextConfig {
        vocab_size: rt.vocab_size.unwrap_or(32000),
        hidden_size,
        intermediate_size: rt.intermediate_size.unwrap_or(11008),
        num_hidden_layers: rt.num_hidden_layers.unwrap_or(32),
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: rt.rms_norm_eps.unwrap_or(1e-6),
        rope_theta,
        rope_linear_factor,
        max_position_embeddings: rt.max_position_embeddings.unwrap_or(2048),
        attention_bias: rt.attention_bias.unwrap_or(false),
        mlp_bias: rt.mlp_bias.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config.json of llava-hf/llava-1.5-7b-hf as published (sparse: defaults do the rest).
    const LLAVA_7B: &str = r#"{
      "architectures": ["LlavaForConditionalGeneration"],
      "ignore_index": -100, "image_token_index": 32000, "model_type": "llava",
      "pad_token_id": 32001, "projector_hidden_act": "gelu",
      "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
        "torch_dtype": "float16", "vocab_size": 32064},
      "tie_word_embeddings": false, "torch_dtype": "float16", "transformers_version": "4.36.0.dev0",
      "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
        "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
        "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
      "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064
    }"#;

    /// llava-hf/llava-1.5-13b-hf: only the language model's shape differs.
    const LLAVA_13B_TEXT: &str = r#""text_config": {"hidden_size": 5120, "intermediate_size": 13824,
        "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": 40,
        "num_hidden_layers": 40, "num_key_value_heads": 40, "rms_norm_eps": 1e-05,
        "torch_dtype": "float16", "vocab_size": 32064}"#;

    fn parse(text: &str) -> Result<LlavaConfig> {
        LlavaConfig::from_json_str(text, Path::new("config.json"))
    }

    #[test]
    fn llava_1_5_7b_shapes() {
        let c = parse(LLAVA_7B).unwrap();
        assert_eq!(c.text.hidden_size, 4096);
        assert_eq!(c.text.intermediate_size, 11008);
        assert_eq!(c.text.num_hidden_layers, 32);
        assert_eq!(c.text.num_key_value_heads, 32);
        assert_eq!(c.text.head_dim, 128);
        assert_eq!(c.text.vocab_size, 32064);
        assert_eq!(c.text.rms_norm_eps, 1e-5);
        assert_eq!(c.text.rope_theta, 10000.0);
        assert_eq!(c.image_token_id, 32000);
        assert_eq!(c.pad_token_id, Some(32001));
        assert_eq!(c.num_patches(), 576);
        assert_eq!(c.num_image_tokens(), 576);
        assert_eq!(c.vision_layers_to_run(), 23);
        assert_eq!(c.projector_in(), 1024);
        assert_eq!(c.select_strategy, SelectStrategy::Default);
        assert_eq!(c.projector_act, ProjectorAct::Gelu);
        assert!(c.projector_bias && !c.tie_word_embeddings);
    }

    #[test]
    fn llava_1_5_13b_shapes() {
        let start = LLAVA_7B.find("\"text_config\"").unwrap();
        let end = start + LLAVA_7B[start..].find('}').unwrap() + 1;
        let text = format!(
            "{}{}{}",
            &LLAVA_7B[..start],
            LLAVA_13B_TEXT,
            &LLAVA_7B[end..]
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            (
                c.text.hidden_size,
                c.text.num_hidden_layers,
                c.text.head_dim
            ),
            (5120, 40, 128)
        );
    }

    #[test]
    fn absent_vision_config_is_llava_default_present_one_is_clip_default() {
        let c = parse(r#"{"model_type": "llava"}"#).unwrap();
        assert_eq!(c.vision.image_size, 336);
        assert_eq!(c.vision.num_hidden_layers, 24);
        let c = parse(r#"{"vision_config": {"hidden_size": 768}}"#).unwrap();
        assert_eq!((c.vision.image_size, c.vision.patch_size), (224, 32));
    }

    #[test]
    fn transformers_5_rope_parameters_and_feature_layer_lists() {
        let c = parse(
            r#"{"text_config": {"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}},
                "vision_feature_layer": [-2, -5], "vision_feature_select_strategy": "full",
                "image_token_id": 7}"#,
        )
        .unwrap();
        assert_eq!(c.text.rope_theta, 500000.0);
        assert_eq!(c.vision_feature_layers, vec![-2, -5]);
        assert_eq!(c.projector_in(), 2048);
        assert_eq!(c.num_image_tokens(), 577);
        assert_eq!(c.image_token_id, 7);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"{"text_config": {"hidden_size": "big"}}"#).unwrap_err();
        assert!(e.to_string().contains("text_config.hidden_size"), "{e}");
        let e = parse(r#"{"text_config": {"hidden_act": "gelu"}}"#).unwrap_err();
        assert!(e.to_string().contains("text_config.hidden_act"), "{e}");
        let e = parse(r#"{"vision_feature_layer": -30}"#).unwrap_err();
        assert!(e.to_string().contains("vision_feature_layer"), "{e}");
        let e = parse(r#"{"text_config": {"num_key_value_heads": 5}}"#).unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
        let e = parse(r#"{"vision_config": {"patch_size": 5}}"#).unwrap_err();
        assert!(e.to_string().contains("vision_config.patch_size"), "{e}");
        let e = parse(r#"{"model_type": "llava_next"}"#).unwrap_err();
        assert!(e.to_string().contains("model_type"), "{e}");
        let e = parse(r#"{"text_config": {"rope_scaling": {"type": "yarn", "factor": 2}}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("rope_scaling"), "{e}");
    }
}

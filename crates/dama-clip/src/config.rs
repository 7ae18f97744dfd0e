//! CLIP configurations as Hugging Face writes them in `config.json`.
//!
//! Every field takes the default transformers' `CLIPTextConfig` / `CLIPVisionConfig` /
//! `CLIPConfig` apply when it is absent, because real files omit them freely: llava-hf's
//! `vision_config` has no `hidden_act` and relies on `quick_gelu`. Unknown keys (HF configs
//! carry dozens of generic ones) are ignored.

use serde::{Deserialize, Deserializer};

use crate::error::{ClipError, Result, parse_json};

/// The MLP activation (`hidden_act`), as transformers' `ACT2FN` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x·σ(1.702x)`: what every OpenAI CLIP checkpoint uses.
    QuickGelu,
    /// The exact, erf-based GELU (`nn.GELU()`).
    Gelu,
    /// The tanh approximation, under both of its names.
    GeluNew,
    GeluPytorchTanh,
    Relu,
    #[serde(alias = "swish")]
    Silu,
}

fn default_act() -> Activation {
    Activation::QuickGelu
}

/// `image_size` / `patch_size`: transformers accepts an int or an `[h, w]` pair; CLIP's
/// position table is square, so a pair must have equal sides.
fn square_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        One(usize),
        Pair([usize; 2]),
    }
    match Size::deserialize(d)? {
        Size::One(n) => Ok(n),
        Size::Pair([h, w]) if h == w => Ok(h),
        Size::Pair([h, w]) => Err(serde::de::Error::custom(format!(
            "CLIP needs a square size, got [{h}, {w}]"
        ))),
    }
}

/// `layer_norm_eps` may be `null` in transformers' text config type; null means the default.
fn eps_or_default<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(1e-5))
}

/// The `text_config` object of an HF CLIP `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    /// Only `CLIPTextModelWithProjection` reads this; `CLIPModel` uses the top-level one.
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(deserialize_with = "eps_or_default")]
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// Decides text pooling: the legacy value 2 (the openai repos) means "argmax of the ids",
    /// anything else "first position holding this id" (see [`crate::text`]).
    pub eos_token_id: Option<u32>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
        }
    }
}

/// The `vision_config` object of an HF CLIP (or LLaVA) `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    /// Only `CLIPVisionModelWithProjection` reads this; `CLIPModel` uses the top-level one.
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    #[serde(deserialize_with = "square_size")]
    pub image_size: usize,
    #[serde(deserialize_with = "square_size")]
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// Patches per side: the patch convolution has no padding, so a remainder is dropped.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Tokens per image: the class token and the patches (50 for ViT-B/32, 577 for ViT-L/14-336).
    pub fn num_positions(&self) -> usize {
        self.num_patches() + 1
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks what serde cannot; `file` names the document in the error, `prefix` the path of
    /// this object inside it (`vision_config`).
    pub fn validate(&self, file: &str, prefix: &str) -> Result<()> {
        check_heads(file, prefix, self.hidden_size, self.num_attention_heads)?;
        positive(
            file,
            &format!("{prefix}.num_hidden_layers"),
            self.num_hidden_layers,
        )?;
        positive(file, &format!("{prefix}.num_channels"), self.num_channels)?;
        positive(file, &format!("{prefix}.patch_size"), self.patch_size)?;
        if self.patch_size > self.image_size {
            return Err(ClipError::invalid(
                file,
                &format!("{prefix}.patch_size"),
                format!(
                    "{} is larger than image_size {}",
                    self.patch_size, self.image_size
                ),
            ));
        }
        Ok(())
    }
}

impl ClipTextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn validate(&self, file: &str, prefix: &str) -> Result<()> {
        check_heads(file, prefix, self.hidden_size, self.num_attention_heads)?;
        positive(
            file,
            &format!("{prefix}.num_hidden_layers"),
            self.num_hidden_layers,
        )?;
        positive(
            file,
            &format!("{prefix}.max_position_embeddings"),
            self.max_position_embeddings,
        )?;
        if self.eos_token_id.is_none() {
            return Err(ClipError::invalid(
                file,
                &format!("{prefix}.eos_token_id"),
                "is null; text pooling needs the end-of-text id",
            ));
        }
        Ok(())
    }
}

fn check_heads(file: &str, prefix: &str, hidden: usize, heads: usize) -> Result<()> {
    if heads == 0 || hidden == 0 || !hidden.is_multiple_of(heads) {
        return Err(ClipError::invalid(
            file,
            &format!("{prefix}.num_attention_heads"),
            format!(
                "the hidden size ({hidden}) is not a positive multiple of the head count ({heads})"
            ),
        ));
    }
    Ok(())
}

fn positive(file: &str, field: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(ClipError::invalid(file, field, "must be positive"));
    }
    Ok(())
}

/// An HF `CLIPModel` `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    /// Width of the joint embedding space: `visual_projection` and `text_projection` map into it.
    pub projection_dim: usize,
    /// Only initialises `logit_scale` in training; the checkpoint's `logit_scale` tensor is used.
    pub logit_scale_init_value: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

/// The raw document: the sub-configs stay JSON until the legacy `*_config_dict` keys are merged.
#[derive(Deserialize)]
struct RawClipConfig {
    #[serde(default)]
    text_config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    vision_config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    text_config_dict: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    vision_config_dict: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
    #[serde(default = "default_logit_scale")]
    logit_scale_init_value: f64,
}

fn default_projection_dim() -> usize {
    512
}

fn default_logit_scale() -> f64 {
    2.6592
}

impl ClipConfig {
    /// Parses a `config.json`; `file` names it in errors.
    pub fn from_json(file: &str, bytes: &[u8]) -> Result<Self> {
        let raw: RawClipConfig = parse_json(file, bytes)?;
        let text_config =
            merge_sub_config(file, "text_config", raw.text_config, raw.text_config_dict)?;
        let vision_config = merge_sub_config(
            file,
            "vision_config",
            raw.vision_config,
            raw.vision_config_dict,
        )?;
        let cfg = ClipConfig {
            text_config,
            vision_config,
            projection_dim: raw.projection_dim,
            logit_scale_init_value: raw.logit_scale_init_value,
        };
        cfg.text_config.validate(file, "text_config")?;
        cfg.vision_config.validate(file, "vision_config")?;
        positive(file, "projection_dim", cfg.projection_dim)?;
        Ok(cfg)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| ClipError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&path.display().to_string(), &bytes)
    }
}

/// transformers' `CLIPConfig.__post_init__`: a legacy `text_config_dict` overrides the keys of
/// `text_config` (some early checkpoints carry both).
fn merge_sub_config<T: serde::de::DeserializeOwned>(
    file: &str,
    name: &str,
    base: Option<serde_json::Map<String, serde_json::Value>>,
    legacy: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<T> {
    let mut merged = base.unwrap_or_default();
    merged.extend(legacy.unwrap_or_default());
    let text = serde_json::to_vec(&serde_json::Value::Object(merged))
        .map_err(|e| ClipError::invalid(file, name, e.to_string()))?;
    parse_json::<T>(file, &text).map_err(|e| match e {
        ClipError::Json {
            file,
            field,
            message,
            ..
        } => ClipError::Invalid {
            file,
            field: format!("{name}.{field}"),
            message,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_take_transformers_defaults() {
        let cfg = ClipConfig::from_json("c.json", b"{}").unwrap();
        assert_eq!(cfg, ClipConfig::default());
        let v: ClipVisionConfig =
            serde_json::from_str(r#"{"hidden_size": 1024, "image_size": 336}"#).unwrap();
        assert_eq!(v.hidden_act, Activation::QuickGelu);
        assert_eq!(v.patch_size, 32);
        assert_eq!(v.layer_norm_eps, 1e-5);
    }

    #[test]
    fn sizes_may_be_square_pairs() {
        let v: ClipVisionConfig =
            serde_json::from_str(r#"{"image_size": [336, 336], "patch_size": 14}"#).unwrap();
        assert_eq!(
            (v.image_size, v.num_patches(), v.num_positions()),
            (336, 576, 577)
        );
        let err = ClipConfig::from_json(
            "c.json",
            br#"{"vision_config": {"image_size": [336, 224]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("vision_config.image_size") && err.contains("square"),
            "{err}"
        );
    }

    #[test]
    fn legacy_dict_overrides_the_sub_config() {
        let cfg = ClipConfig::from_json(
            "c.json",
            br#"{"text_config": {"hidden_size": 64, "num_attention_heads": 4},
                 "text_config_dict": {"hidden_size": 128}, "projection_dim": 32}"#,
        )
        .unwrap();
        assert_eq!(cfg.text_config.hidden_size, 128);
        assert_eq!(cfg.text_config.num_attention_heads, 4);
        assert_eq!(cfg.projection_dim, 32);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = ClipConfig::from_json(
            "m/config.json",
            br#"{"vision_config": {"hidden_act": "gelu_fancy"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("m/config.json: field `vision_config.hidden_act`"),
            "{err}"
        );
        let err =
            ClipConfig::from_json("m/config.json", br#"{"text_config": {"hidden_size": 10}}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("text_config.num_attention_heads"), "{err}");
        let err = ClipConfig::from_json("m/config.json", b"{\n  \"projection_dim\": \"x\"\n}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`projection_dim`") && err.contains("line 2"),
            "{err}"
        );
        let err = ClipConfig::from_json(
            "m/config.json",
            br#"{"text_config": {"eos_token_id": null}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("text_config.eos_token_id"), "{err}");
    }

    #[test]
    fn null_layer_norm_eps_is_the_default() {
        let t: ClipTextConfig = serde_json::from_str(r#"{"layer_norm_eps": null}"#).unwrap();
        assert_eq!(t.layer_norm_eps, 1e-5);
    }
}

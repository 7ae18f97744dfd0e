//! Training CLIP: the same model as [`ClipModel`] (the same config, the same weight names), with
//! every weight a [`Var`] and a forward made of candle's differentiable ops only.
//!
//! The inference path ([`crate::encoder`]) is built for speed with fused forward-only CPU
//! kernels (LayerNorm, softmax, attention) that record no graph, so gradients would vanish
//! through it. This forward uses `layer_norm_slow`, `softmax`, `log_softmax`, `sigmoid`,
//! matmuls and index selects, which all have backwards in candle 0.11, and computes every row
//! of every layer (the inference path skips the rows pooling never reads). The tests check that
//! both give the same logits on the same weights, so a model trained here scores as it trained.
//!
//! [`contrastive_loss`] is CLIP's symmetric InfoNCE with a learnable temperature
//! (`logit_scale`), generalised to several positives per row: when a batch holds the same
//! sentence twice, or two sentences of the same image, each is a positive of the other's image
//! instead of a negative. [`TrainableClip::save`] writes the Hugging Face `CLIPModel` layout
//! that [`crate::ClipScorer::load`] (and transformers) read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use dama_core::Xoshiro256;

use crate::config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::encoder::activation;
use crate::error::{ClipError, Result};
use crate::model::ClipModel;
use crate::text::pooled_positions;

/// CLIP with trainable weights, by their Hugging Face names (`vision_model.encoder.layers.0.
/// self_attn.q_proj.weight`, `logit_scale`…).
pub struct TrainableClip {
    config: ClipConfig,
    vars: BTreeMap<String, Var>,
    device: Device,
}

/// Normal samples by Box–Muller from dama's seeded PRNG (the same numbers on every platform).
fn normal(rng: &mut Xoshiro256, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (rng.open01(), rng.open01());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((std * r * a.cos()) as f32);
        out.push((std * r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// How a weight starts.
enum Init {
    Normal(f64),
    Ones,
    Zeros,
    Value(f32),
}

/// The shape and initialisation of every weight of `cfg`, in a fixed order: transformers'
/// `CLIPPreTrainedModel._init_weights` with factor 1 (embeddings N(0, 0.02²), the class token
/// N(0, 1/d), attention inputs N(0, 1/(d·2L)), outputs N(0, 1/d), MLP N(0, 1/2d) and
/// N(0, 1/(d·2L)), LayerNorms 1 and 0, biases 0, projections N(0, 1/d)).
fn weight_specs(cfg: &ClipConfig) -> Vec<(String, Vec<usize>, Init)> {
    let mut out = Vec::new();
    let encoder = |prefix: &str, d: usize, inter: usize, layers: usize| {
        let ins = (d as f64).powf(-0.5) * ((2 * layers) as f64).powf(-0.5);
        let outs = (d as f64).powf(-0.5);
        let fc = ((2 * d) as f64).powf(-0.5);
        let mut v = Vec::new();
        for i in 0..layers {
            let l = format!("{prefix}.encoder.layers.{i}");
            for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                let std = if p == "out_proj" { outs } else { ins };
                v.push((
                    format!("{l}.self_attn.{p}.weight"),
                    vec![d, d],
                    Init::Normal(std),
                ));
                v.push((format!("{l}.self_attn.{p}.bias"), vec![d], Init::Zeros));
            }
            for n in ["layer_norm1", "layer_norm2"] {
                v.push((format!("{l}.{n}.weight"), vec![d], Init::Ones));
                v.push((format!("{l}.{n}.bias"), vec![d], Init::Zeros));
            }
            v.push((
                format!("{l}.mlp.fc1.weight"),
                vec![inter, d],
                Init::Normal(fc),
            ));
            v.push((format!("{l}.mlp.fc1.bias"), vec![inter], Init::Zeros));
            v.push((
                format!("{l}.mlp.fc2.weight"),
                vec![d, inter],
                Init::Normal(ins),
            ));
            v.push((format!("{l}.mlp.fc2.bias"), vec![d], Init::Zeros));
        }
        v
    };
    let t = &cfg.text_config;
    let d = t.hidden_size;
    out.push((
        "text_model.embeddings.token_embedding.weight".into(),
        vec![t.vocab_size, d],
        Init::Normal(0.02),
    ));
    out.push((
        "text_model.embeddings.position_embedding.weight".into(),
        vec![t.max_position_embeddings, d],
        Init::Normal(0.02),
    ));
    out.extend(encoder(
        "text_model",
        d,
        t.intermediate_size,
        t.num_hidden_layers,
    ));
    out.push((
        "text_model.final_layer_norm.weight".into(),
        vec![d],
        Init::Ones,
    ));
    out.push((
        "text_model.final_layer_norm.bias".into(),
        vec![d],
        Init::Zeros,
    ));
    let v = &cfg.vision_config;
    let (vd, c, p) = (v.hidden_size, v.num_channels, v.patch_size);
    let e = "vision_model.embeddings";
    out.push((
        format!("{e}.class_embedding"),
        vec![vd],
        Init::Normal((vd as f64).powf(-0.5)),
    ));
    out.push((
        format!("{e}.patch_embedding.weight"),
        vec![vd, c, p, p],
        Init::Normal(0.02),
    ));
    out.push((
        format!("{e}.position_embedding.weight"),
        vec![v.num_positions(), vd],
        Init::Normal(0.02),
    ));
    for n in ["vision_model.pre_layrnorm", "vision_model.post_layernorm"] {
        out.push((format!("{n}.weight"), vec![vd], Init::Ones));
        out.push((format!("{n}.bias"), vec![vd], Init::Zeros));
    }
    out.extend(encoder(
        "vision_model",
        vd,
        v.intermediate_size,
        v.num_hidden_layers,
    ));
    let pd = cfg.projection_dim;
    out.push((
        "visual_projection.weight".into(),
        vec![pd, vd],
        Init::Normal((vd as f64).powf(-0.5)),
    ));
    out.push((
        "text_projection.weight".into(),
        vec![pd, d],
        Init::Normal((d as f64).powf(-0.5)),
    ));
    out.push((
        "logit_scale".into(),
        vec![],
        Init::Value(cfg.logit_scale_init_value as f32),
    ));
    out
}

impl TrainableClip {
    /// Fresh weights for `config`, drawn from `seed` (the same weights on every machine).
    pub fn random(config: &ClipConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = Xoshiro256::seed_from(seed);
        let mut tensors = HashMap::new();
        for (name, shape, init) in weight_specs(config) {
            let n: usize = shape.iter().product();
            let data = match init {
                Init::Normal(std) => normal(&mut rng, n, std),
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
                Init::Value(v) => vec![v; n],
            };
            tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        }
        Self::from_tensors(config, tensors, device)
    }

    /// The weights of an HF `CLIPModel` checkpoint as trainable f32 variables. Every weight of
    /// the config must be there with its shape; other tensors are ignored.
    pub fn from_tensors(
        config: &ClipConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, shape, _) in weight_specs(config) {
            let t = tensors
                .get(&name)
                .ok_or_else(|| ClipError::Input(format!("the checkpoint has no `{name}`")))?;
            if t.dims() != shape.as_slice() {
                return Err(ClipError::Input(format!(
                    "`{name}` has shape {:?}, the config needs {shape:?}",
                    t.dims()
                )));
            }
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Self {
            config: config.clone(),
            vars,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every weight, by its HF name; an optimizer's `Var::set` updates the model in place.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    fn w(&self, name: &str) -> Result<&Tensor> {
        self.vars
            .get(name)
            .map(Var::as_tensor)
            .ok_or_else(|| ClipError::Input(format!("no weight `{name}`")))
    }

    /// The current weights as plain tensors (a copy of none: they share storage).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// The inference model on the current weights.
    pub fn to_inference(&self) -> Result<ClipModel> {
        let vb = VarBuilder::from_tensors(self.tensors(), DType::F32, &self.device);
        Ok(ClipModel::new(vb, &self.config)?)
    }

    /// exp(logit_scale) as a tensor of the graph.
    pub fn scale(&self) -> Result<Tensor> {
        Ok(self.w("logit_scale")?.exp()?)
    }

    fn linear(&self, x: &Tensor, prefix: &str, bias: bool) -> Result<Tensor> {
        let w = self.w(&format!("{prefix}.weight"))?;
        let dims = x.dims().to_vec();
        let k = *dims.last().expect("rank ≥ 1");
        let rows = x.elem_count() / k;
        let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
        let y = if bias {
            y.broadcast_add(self.w(&format!("{prefix}.bias"))?)?
        } else {
            y
        };
        let mut out = dims;
        *out.last_mut().expect("rank ≥ 1") = w.dim(0)?;
        Ok(y.reshape(out)?)
    }

    fn layer_norm(&self, x: &Tensor, prefix: &str, eps: f64) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm_slow(
            x,
            self.w(&format!("{prefix}.weight"))?,
            self.w(&format!("{prefix}.bias"))?,
            eps as f32,
        )?)
    }

    /// One pre-LayerNorm encoder layer over x (b, t, d); `mask` is added to the scores.
    fn layer(&self, x: &Tensor, l: &str, shape: &Shape, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (heads, hd) = (shape.heads, d / shape.heads);
        let h = self.layer_norm(x, &format!("{l}.layer_norm1"), shape.eps)?;
        let split = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let a = format!("{l}.self_attn");
        let q = split((self.linear(&h, &format!("{a}.q_proj"), true)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.linear(&h, &format!("{a}.k_proj"), true)?)?;
        let v = split(self.linear(&h, &format!("{a}.v_proj"), true)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        let x = (x + self.linear(&out, &format!("{a}.out_proj"), true)?)?;
        let h = self.layer_norm(&x, &format!("{l}.layer_norm2"), shape.eps)?;
        let h = self.linear(&h, &format!("{l}.mlp.fc1"), true)?;
        let h = activation(shape.act, &h)?;
        Ok((x + self.linear(&h, &format!("{l}.mlp.fc2"), true)?)?)
    }

    /// Unit-norm image embeddings (b, projection_dim) of normalised pixels (b, c, H, W).
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let cfg: &ClipVisionConfig = &self.config.vision_config;
        let (b, c, h, w) = pixel_values.dims4()?;
        if (c, h, w) != (cfg.num_channels, cfg.image_size, cfg.image_size) {
            return Err(ClipError::Input(format!(
                "pixel_values are ({c}, {h}, {w}) per image; the model takes ({}, {s}, {s})",
                cfg.num_channels,
                s = cfg.image_size
            )));
        }
        let (p, g, d) = (cfg.patch_size, cfg.grid_size(), cfg.hidden_size);
        let x = pixel_values.to_dtype(DType::F32)?;
        let x = if g * p != h {
            x.narrow(2, 0, g * p)?.narrow(3, 0, g * p)?
        } else {
            x
        };
        let patches = x
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let e = "vision_model.embeddings";
        let kernel = self
            .w(&format!("{e}.patch_embedding.weight"))?
            .reshape((d, c * p * p))?;
        let patch_embeds = patches.matmul(&kernel.t()?)?.reshape((b, g * g, d))?;
        let class = self
            .w(&format!("{e}.class_embedding"))?
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&class, &patch_embeds], 1)?
            .broadcast_add(self.w(&format!("{e}.position_embedding.weight"))?)?;
        let mut x = self.layer_norm(&x, "vision_model.pre_layrnorm", cfg.layer_norm_eps)?;
        let shape = Shape {
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        };
        for i in 0..cfg.num_hidden_layers {
            x = self.layer(
                &x,
                &format!("vision_model.encoder.layers.{i}"),
                &shape,
                None,
            )?;
        }
        let pooled = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.layer_norm(&pooled, "vision_model.post_layernorm", cfg.layer_norm_eps)?;
        l2_normalize(&self.linear(&pooled, "visual_projection", false)?)
    }

    /// Unit-norm text embeddings (n, projection_dim) of token ids with `<|startoftext|>` and
    /// `<|endoftext|>` (rows of any lengths; pooled as transformers pools).
    pub fn text_embeds(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let cfg: &ClipTextConfig = &self.config.text_config;
        let eos = cfg.eos_token_id.ok_or_else(|| {
            ClipError::Input("text_config.eos_token_id is null: no pooled row".into())
        })?;
        let t = ids.iter().map(Vec::len).max().unwrap_or(0);
        if ids.is_empty() || t == 0 {
            return Err(ClipError::Input("an empty text batch".into()));
        }
        if t > cfg.max_position_embeddings {
            return Err(ClipError::Input(format!(
                "a text of {t} tokens, more than max_position_embeddings {}",
                cfg.max_position_embeddings
            )));
        }
        if let Some(bad) = ids
            .iter()
            .flatten()
            .find(|&&v| v as usize >= cfg.vocab_size)
        {
            return Err(ClipError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                cfg.vocab_size
            )));
        }
        let b = ids.len();
        let flat: Vec<u32> = ids
            .iter()
            .flat_map(|row| (0..t).map(move |j| row.get(j).copied().unwrap_or(eos)))
            .collect();
        let flat = Tensor::from_vec(flat, b * t, &self.device)?;
        let e = "text_model.embeddings";
        let d = cfg.hidden_size;
        let x = self
            .w(&format!("{e}.token_embedding.weight"))?
            .index_select(&flat, 0)?
            .reshape((b, t, d))?
            .broadcast_add(
                &self
                    .w(&format!("{e}.position_embedding.weight"))?
                    .narrow(0, 0, t)?,
            )?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &self.device)?;
        let shape = Shape {
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        };
        let mut x = x;
        for i in 0..cfg.num_hidden_layers {
            x = self.layer(
                &x,
                &format!("text_model.encoder.layers.{i}"),
                &shape,
                Some(&mask),
            )?;
        }
        let x = self.layer_norm(&x, "text_model.final_layer_norm", cfg.layer_norm_eps)?;
        let rows: Vec<u32> = pooled_positions(ids, eos)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i * t + p) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, &self.device)?;
        let pooled = x.reshape((b * t, d))?.index_select(&rows, 0)?;
        l2_normalize(&self.linear(&pooled, "text_projection", false)?)
    }

    /// Γ = exp(logit_scale)·cos for every image × text: (n_images, n_texts).
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        Ok(image_embeds
            .matmul(&text_embeds.t()?)?
            .broadcast_mul(&self.scale()?)?)
    }

    /// Writes the Hugging Face `CLIPModel` folder: `config.json`, `model.safetensors`, and the
    /// given `tokenizer.json` and `preprocessor_config.json` (with a `tokenizer_config.json`
    /// that lets transformers' `AutoTokenizer` read any `tokenizer.json`).
    pub fn save(&self, dir: &Path, tokenizer_json: &str, preprocessor_json: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|error| ClipError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        let write = |name: &str, text: &str| -> Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|error| ClipError::Io { path, error })
        };
        let config = serde_json::to_string_pretty(&config_json(&self.config))
            .expect("JSON values serialise");
        write("config.json", &(config + "\n"))?;
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&self.tensors(), &path).map_err(|error| {
            ClipError::Weights {
                file: path.display().to_string(),
                error,
            }
        })?;
        write("tokenizer.json", tokenizer_json)?;
        write("preprocessor_config.json", preprocessor_json)?;
        let tokenizer_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|unk|>", "pad_token": "<|endoftext|>",
            "model_max_length": self.config.text_config.max_position_embeddings
        });
        write(
            "tokenizer_config.json",
            &(serde_json::to_string_pretty(&tokenizer_config).expect("serialises") + "\n"),
        )
    }
}

/// The shape of a small CLIP to train from scratch (the demo's); `vocab_size` is the
/// tokenizer's, ids `vocab_size − 2` and `vocab_size − 1` its `<|startoftext|>` and
/// `<|endoftext|>` (as [`crate::tokenizer::word_level_tokenizer_json`] numbers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TinyClipSpec {
    pub vocab_size: usize,
    pub max_positions: usize,
    pub text_hidden: usize,
    pub text_layers: usize,
    pub vision_hidden: usize,
    pub vision_layers: usize,
    pub heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub projection_dim: usize,
}

impl TinyClipSpec {
    pub fn config(&self) -> ClipConfig {
        let (bos, eos) = (self.vocab_size - 2, self.vocab_size - 1);
        ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: self.vocab_size,
                hidden_size: self.text_hidden,
                intermediate_size: 4 * self.text_hidden,
                projection_dim: self.projection_dim,
                num_hidden_layers: self.text_layers,
                num_attention_heads: self.heads,
                max_position_embeddings: self.max_positions,
                hidden_act: Activation::QuickGelu,
                layer_norm_eps: 1e-5,
                pad_token_id: Some(eos as u32),
                bos_token_id: Some(bos as u32),
                eos_token_id: Some(eos as u32),
            },
            vision_config: ClipVisionConfig {
                hidden_size: self.vision_hidden,
                intermediate_size: 4 * self.vision_hidden,
                projection_dim: self.projection_dim,
                num_hidden_layers: self.vision_layers,
                num_attention_heads: self.heads,
                num_channels: 3,
                image_size: self.image_size,
                patch_size: self.patch_size,
                hidden_act: Activation::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            projection_dim: self.projection_dim,
            logit_scale_init_value: 2.6592,
        }
    }
}

/// `preprocessor_config.json` of CLIP's image processor at `size` (OpenAI's mean and std).
pub fn preprocessor_config(size: usize) -> serde_json::Value {
    serde_json::json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true, "size": {"shortest_edge": size}, "resample": 3,
        "do_center_crop": true, "crop_size": {"height": size, "width": size},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": true
    })
}

struct Shape {
    heads: usize,
    eps: f64,
    act: Activation,
}

fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?)
}

fn activation_name(act: Activation) -> &'static str {
    match act {
        Activation::QuickGelu => "quick_gelu",
        Activation::Gelu => "gelu",
        Activation::GeluNew => "gelu_new",
        Activation::GeluPytorchTanh => "gelu_pytorch_tanh",
        Activation::Relu => "relu",
        Activation::Silu => "silu",
    }
}

/// `config.json` of a `CLIPModel` with this configuration, every field spelled out.
pub fn config_json(cfg: &ClipConfig) -> serde_json::Value {
    let t = &cfg.text_config;
    let v = &cfg.vision_config;
    serde_json::json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": cfg.projection_dim,
        "logit_scale_init_value": cfg.logit_scale_init_value,
        "initializer_factor": 1.0,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size, "projection_dim": cfg.projection_dim,
            "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": activation_name(t.hidden_act), "layer_norm_eps": t.layer_norm_eps,
            "pad_token_id": t.pad_token_id, "bos_token_id": t.bos_token_id,
            "eos_token_id": t.eos_token_id
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
            "projection_dim": cfg.projection_dim, "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads, "num_channels": v.num_channels,
            "image_size": v.image_size, "patch_size": v.patch_size,
            "hidden_act": activation_name(v.hidden_act), "layer_norm_eps": v.layer_norm_eps
        }
    })
}

/// CLIP's symmetric InfoNCE over a batch: the mean of the image→text cross-entropy of every
/// image and the text→image cross-entropy of every caption, each against a target spread
/// evenly over that row's positives.
///
/// `logits` is (n_images, n_texts); `positives[i][j]` says whether text j describes image i.
/// Every image needs at least one positive text; the text→image term runs over the texts that
/// are a positive of some image (hard negatives, true of no image of the batch, only sharpen
/// the image→text term). With one positive per image and per text on the diagonal this is
/// exactly CLIP's loss.
pub fn contrastive_loss(logits: &Tensor, positives: &[Vec<bool>]) -> Result<Tensor> {
    let (n, m) = logits.dims2()?;
    if positives.len() != n || positives.iter().any(|r| r.len() != m) {
        return Err(ClipError::Input(format!(
            "the positives are not an {n}×{m} table"
        )));
    }
    let targets = |rows: usize, cols: usize, at: &dyn Fn(usize, usize) -> bool| {
        let mut t = vec![0f32; rows * cols];
        let mut kept = Vec::new();
        for r in 0..rows {
            let k = (0..cols).filter(|&c| at(r, c)).count();
            if k > 0 {
                kept.push(r as u32);
                for c in 0..cols {
                    if at(r, c) {
                        t[r * cols + c] = 1.0 / k as f32;
                    }
                }
            }
        }
        (t, kept)
    };
    let (ti, kept_images) = targets(n, m, &|i, j| positives[i][j]);
    if kept_images.len() != n {
        return Err(ClipError::Input(
            "an image of the batch has no positive text".into(),
        ));
    }
    let (tt, kept_texts) = targets(m, n, &|j, i| positives[i][j]);
    let dev = logits.device();
    let ce = |logits: &Tensor, t: Vec<f32>, kept: Vec<u32>| -> Result<Tensor> {
        let (rows, cols) = logits.dims2()?;
        let t = Tensor::from_vec(t, (rows, cols), dev)?;
        let idx = Tensor::from_vec(kept.clone(), kept.len(), dev)?;
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let per_row = (logp * t)?.sum(1)?.index_select(&idx, 0)?;
        Ok((per_row.mean_all()?.neg())?)
    };
    let image_loss = ce(logits, ti, kept_images)?;
    let text_loss = ce(&logits.t()?.contiguous()?, tt, kept_texts)?;
    Ok(((image_loss + text_loss)? * 0.5)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> ClipConfig {
        let text = r#"{"projection_dim": 12,
            "text_config": {"vocab_size": 30, "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 10,
                "eos_token_id": 29, "bos_token_id": 28, "hidden_act": "gelu"},
            "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "image_size": 20, "patch_size": 8}}"#;
        ClipConfig::from_json("tiny", text.as_bytes()).unwrap()
    }

    fn ids() -> Vec<Vec<u32>> {
        vec![
            vec![28, 3, 4, 5, 29],
            vec![28, 7, 29],
            vec![28, 9, 9, 1, 2, 6, 8, 29],
        ]
    }

    /// Pixel values from a seeded stream (the test's inputs are the same every run).
    fn pixels(seed: u64) -> Tensor {
        let mut rng = Xoshiro256::seed_from(seed);
        Tensor::from_vec(
            normal(&mut rng, 3 * 3 * 20 * 20, 1.0),
            (3, 3, 20, 20),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Training and inference forwards agree on the same weights (random ones here; the
    /// transformers fixture in tests/ checks the same on weights transformers made). The
    /// image size leaves a remainder the patch convolution drops (20 = 2·8 + 4).
    #[test]
    fn training_forward_equals_inference_forward() {
        let cfg = tiny_config();
        let clip = TrainableClip::random(&cfg, 3, &Device::Cpu).unwrap();
        let px = pixels(7);
        let train = clip
            .logits(
                &clip.image_embeds(&px).unwrap(),
                &clip.text_embeds(&ids()).unwrap(),
            )
            .unwrap();
        let model = clip.to_inference().unwrap();
        let infer = model
            .logits_from_embeds(
                &model.image_embeds(&px).unwrap(),
                &model.text_embeds_ids(&ids()).unwrap(),
            )
            .unwrap();
        assert_eq!(train.dims(), &[3, 3]);
        let d = max_diff(&train, &infer);
        assert!(d < 1e-5, "{d}");
        assert!((model.logit_scale_exp() - (2.6592f32).exp()).abs() < 1e-5);
    }

    #[test]
    fn the_loss_is_clips_on_the_diagonal_and_shares_duplicates() {
        let logits = Tensor::new(
            &[[2.0f32, 0.5, -1.0], [0.0, 1.0, 0.3], [0.2, 0.1, 3.0]],
            &Device::Cpu,
        )
        .unwrap();
        let eye: Vec<Vec<bool>> = (0..3).map(|i| (0..3).map(|j| i == j).collect()).collect();
        let got = contrastive_loss(&logits, &eye)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // By hand: mean of row-wise and column-wise cross-entropy at the diagonal.
        let l: Vec<Vec<f64>> = logits
            .to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|r| r.into_iter().map(f64::from).collect())
            .collect();
        let ce = |xs: &[f64], k: usize| {
            let lse = xs.iter().map(|x| x.exp()).sum::<f64>().ln();
            lse - xs[k]
        };
        let rows: f64 = (0..3).map(|i| ce(&l[i], i)).sum::<f64>() / 3.0;
        let cols: f64 = (0..3)
            .map(|j| ce(&[l[0][j], l[1][j], l[2][j]], j))
            .sum::<f64>()
            / 3.0;
        assert!((f64::from(got) - (rows + cols) / 2.0).abs() < 1e-6);
        // A fourth text true of no image (a hard negative) only enters the image→text side.
        let logits4 = Tensor::new(
            &[
                [2.0f32, 0.5, -1.0, 1.5],
                [0.0, 1.0, 0.3, 0.2],
                [0.2, 0.1, 3.0, 0.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let pos4: Vec<Vec<bool>> = (0..3).map(|i| (0..4).map(|j| i == j).collect()).collect();
        let with_neg = contrastive_loss(&logits4, &pos4)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let rows4: f64 = (0..3)
            .map(|i| {
                let r: Vec<f64> = logits4.to_vec2::<f32>().unwrap()[i]
                    .iter()
                    .map(|&x| x.into())
                    .collect();
                ce(&r, i)
            })
            .sum::<f64>()
            / 3.0;
        assert!((f64::from(with_neg) - (rows4 + cols) / 2.0).abs() < 1e-6);
        // Two positives in a row: the target is ½ each.
        let mut two = eye.clone();
        two[0][1] = true;
        let got = contrastive_loss(&logits, &two)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let lse0 = l[0].iter().map(|x| x.exp()).sum::<f64>().ln();
        let row0 = lse0 - 0.5 * (l[0][0] + l[0][1]);
        let rows2 = (row0 + ce(&l[1], 1) + ce(&l[2], 2)) / 3.0;
        let col1 = {
            let c = [l[0][1], l[1][1], l[2][1]];
            c.iter().map(|x| x.exp()).sum::<f64>().ln() - 0.5 * (c[0] + c[1])
        };
        let cols2 =
            (ce(&[l[0][0], l[1][0], l[2][0]], 0) + col1 + ce(&[l[0][2], l[1][2], l[2][2]], 2))
                / 3.0;
        assert!((f64::from(got) - (rows2 + cols2) / 2.0).abs() < 1e-6);
        let mut none = eye;
        none[1][1] = false;
        assert!(contrastive_loss(&logits, &none).is_err());
    }

    /// The gradient candle's autograd gives for a few weights against central differences of
    /// the loss (f32, so the tolerance is loose; a vanished gradient would be 0).
    #[test]
    fn gradients_match_finite_differences() {
        for seed in [7, 8, 9, 10, 11, 12] {
            gradients_at(seed);
        }
    }

    fn gradients_at(seed: u64) {
        let cfg = tiny_config();
        let clip = TrainableClip::random(&cfg, 5, &Device::Cpu).unwrap();
        let px = pixels(seed);
        let eye: Vec<Vec<bool>> = (0..3).map(|i| (0..3).map(|j| i == j).collect()).collect();
        let loss = |c: &TrainableClip| -> Tensor {
            let l = c
                .logits(
                    &c.image_embeds(&px).unwrap(),
                    &c.text_embeds(&ids()).unwrap(),
                )
                .unwrap();
            contrastive_loss(&l, &eye).unwrap()
        };
        let grads = loss(&clip).backward().unwrap();
        for (name, index) in [
            ("logit_scale", 0usize),
            ("vision_model.encoder.layers.1.mlp.fc1.weight", 7),
            ("vision_model.embeddings.patch_embedding.weight", 100),
            ("text_model.encoder.layers.0.self_attn.q_proj.weight", 5),
            ("text_model.embeddings.token_embedding.weight", 16 * 9 + 3),
            ("text_projection.weight", 11),
        ] {
            let var = &clip.vars()[name];
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap()[index];
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let h = 2e-3f32;
            let at = |delta: f32| -> f32 {
                let mut v = base.clone();
                v[index] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss(&clip).to_scalar::<f32>().unwrap()
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            at(0.0);
            assert!(g.abs() > 1e-6, "{name}: a vanished gradient");
            assert!(
                (fd - g).abs() < 2e-2 * g.abs() + 2e-3,
                "{name}: autograd {g}, differences {fd}"
            );
        }
    }
}

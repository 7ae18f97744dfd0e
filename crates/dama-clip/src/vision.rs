//! CLIP's vision tower (transformers' `CLIPVisionTransformer`): patch embedding, class token,
//! learned positions, `pre_layrnorm` (sic, the HF name), the encoder and `post_layernorm` on the
//! class token.
//!
//! LLaVA-1.5 reads an intermediate layer of this tower. [`ClipVisionTransformer::hidden_states`]
//! follows transformers' `output_hidden_states` indexing exactly: index 0 is
//! `pre_layrnorm(embeddings)`, index k the output of encoder layer k. (candle-transformers'
//! CLIP returns the layers without the embeddings, so its index −2 is one layer off.)

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::ClipVisionConfig;
use crate::encoder::{Encoder, EncoderShape, Norm, layer_norm};

/// `embeddings.*`: the patch "convolution", the class token and the position table.
struct VisionEmbeddings {
    /// The Conv2d kernel (hidden, channels, patch, patch) flattened to (hidden, channels·p·p).
    /// A convolution whose stride equals its kernel size and has no bias is a matmul over
    /// non-overlapping patches; doing it as one GEMM is exact up to summation order and much
    /// faster than candle's im2col `conv2d`.
    patch_weight: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    cfg: ClipVisionConfig,
}

impl VisionEmbeddings {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let (d, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let patch_weight = vb
            .get((d, c, p, p), "patch_embedding.weight")?
            .reshape((d, c * p * p))?;
        Ok(Self {
            patch_weight,
            class_embedding: vb.get(d, "class_embedding")?,
            position_embedding: vb.get((cfg.num_positions(), d), "position_embedding.weight")?,
            cfg: cfg.clone(),
        })
    }

    /// (b, c, H, W) → (b, 1 + patches, d).
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4()?;
        let cfg = &self.cfg;
        if h != cfg.image_size || w != cfg.image_size || c != cfg.num_channels {
            candle_core::bail!(
                "pixel_values are ({c}, {h}, {w}) per image; the model takes ({}, {s}, {s})",
                cfg.num_channels,
                s = cfg.image_size
            );
        }
        let (p, g, d) = (cfg.patch_size, cfg.grid_size(), cfg.hidden_size);
        let x = pixel_values.to_dtype(self.patch_weight.dtype())?;
        // Valid convolution: rows/columns past the last whole patch are ignored.
        let x = if g * p != h {
            x.narrow(2, 0, g * p)?.narrow(3, 0, g * p)?
        } else {
            x
        };
        let patches = x
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * g * g, c * p * p))?;
        let patch_embeds = patches
            .matmul(&self.patch_weight.t()?)?
            .reshape((b, g * g, d))?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        Tensor::cat(&[&class, &patch_embeds], 1)?.broadcast_add(&self.position_embedding)
    }
}

/// The vision tower; build it with `vb` at the `vision_model` prefix.
pub struct ClipVisionTransformer {
    embeddings: VisionEmbeddings,
    pre_layrnorm: Norm,
    encoder: Encoder,
    /// Only the pooled output needs it; checkpoints that keep the tower for its hidden states
    /// alone (LLaVA's) may lack it.
    post_layernorm: Option<Norm>,
    cfg: ClipVisionConfig,
}

impl ClipVisionTransformer {
    pub fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        let shape = EncoderShape {
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            num_heads: cfg.num_attention_heads,
            num_layers: cfg.num_hidden_layers,
            layer_norm_eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        };
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            embeddings: VisionEmbeddings::new(cfg, vb.pp("embeddings"))?,
            pre_layrnorm: layer_norm(cfg.hidden_size, eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(&shape, vb.pp("encoder"))?,
            post_layernorm: if vb.contains_tensor("post_layernorm.weight") {
                Some(layer_norm(cfg.hidden_size, eps, vb.pp("post_layernorm"))?)
            } else {
                None
            },
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.embeddings.patch_weight.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embeddings.patch_weight.device()
    }

    /// `pre_layrnorm(embeddings(pixel_values))`: transformers' `hidden_states[0]`.
    fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.pre_layrnorm
            .forward(&self.embeddings.forward(pixel_values)?)
    }

    /// transformers' `hidden_states[0..=num_layers]` for `pixel_values` (b, c, H, W): index 0 is
    /// `pre_layrnorm(embeddings)`, index k the output of encoder layer k, each (b, 1 + patches,
    /// hidden). Runs only `num_layers` encoder layers, so LLaVA's `hidden_states[-2]` costs
    /// N − 1 layers.
    pub fn hidden_states(&self, pixel_values: &Tensor, num_layers: usize) -> Result<Vec<Tensor>> {
        let total = self.encoder.layers.len();
        if num_layers > total {
            candle_core::bail!(
                "asked for {num_layers} encoder layers; the vision tower has {total}"
            );
        }
        let mut states = Vec::with_capacity(num_layers + 1);
        states.push(self.embed(pixel_values)?);
        for layer in &self.encoder.layers[..num_layers] {
            let next = layer.forward(states.last().expect("non-empty"), None)?;
            states.push(next);
        }
        Ok(states)
    }

    /// One entry of transformers' `hidden_states`, with Python indexing: `index` in
    /// `-(N+1)..=N` for N encoder layers (LLaVA-1.5's `vision_feature_layer` is −2). Keeps no
    /// other state alive.
    pub fn hidden_state(&self, pixel_values: &Tensor, index: isize) -> Result<Tensor> {
        let count = self.encoder.layers.len() as isize + 1;
        let k = if index < 0 { count + index } else { index };
        if !(0..count).contains(&k) {
            candle_core::bail!(
                "hidden state index {index} is out of range for {count} hidden states"
            );
        }
        let mut x = self.embed(pixel_values)?;
        for layer in &self.encoder.layers[..k as usize] {
            x = layer.forward(&x, None)?;
        }
        Ok(x)
    }

    /// The pooled output (transformers' `pooler_output`): the class token after the last layer,
    /// through `post_layernorm`, (b, hidden). The last layer is computed for the class token
    /// alone.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let Some(post_layernorm) = &self.post_layernorm else {
            candle_core::bail!(
                "the checkpoint has no vision_model.post_layernorm: no pooled output"
            );
        };
        let x = self.embed(pixel_values)?;
        let (b, t, _) = x.dims3()?;
        let rows: Vec<u32> = (0..b).map(|i| (i * t) as u32).collect();
        let rows = Tensor::from_vec(rows, b, x.device())?;
        let pooled = self.encoder.forward_pooled(&x, None, &rows, None)?;
        post_layernorm.forward(&pooled)
    }
}

//! transformers' `CLIPModel`: both towers, the two projections into the joint space and
//! `logit_scale`, so that `logits_per_image = exp(logit_scale) · cos(image, text)`: the paper's
//! Γ(I, s) (Eq. 3).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::config::ClipConfig;
use crate::encoder::l2_normalize;
use crate::error::Result;
use crate::text::ClipTextTransformer;
use crate::vision::ClipVisionTransformer;

/// A CLIP model on one device in one dtype. Build it with [`ClipModel::new`] from a
/// `VarBuilder` at the checkpoint's root, or with the loaders of [`crate::load`].
pub struct ClipModel {
    pub text_model: ClipTextTransformer,
    pub vision_model: ClipVisionTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    /// exp(logit_scale), read once from the checkpoint.
    scale: f32,
    config: ClipConfig,
}

impl ClipModel {
    pub fn new(vb: VarBuilder, config: &ClipConfig) -> candle_core::Result<Self> {
        let (t, v, p) = (
            &config.text_config,
            &config.vision_config,
            config.projection_dim,
        );
        let visual_projection = Linear::new(
            vb.get((p, v.hidden_size), "visual_projection.weight")?,
            None,
        );
        let text_projection =
            Linear::new(vb.get((p, t.hidden_size), "text_projection.weight")?, None);
        let logit_scale = vb
            .get((), "logit_scale")?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        Ok(Self {
            text_model: ClipTextTransformer::new(vb.pp("text_model"), t)?,
            vision_model: ClipVisionTransformer::new(vb.pp("vision_model"), v)?,
            visual_projection,
            text_projection,
            scale: logit_scale.exp(),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        self.vision_model.device()
    }

    pub fn dtype(&self) -> DType {
        self.vision_model.dtype()
    }

    /// exp(logit_scale): 100 for the OpenAI checkpoints.
    pub fn logit_scale_exp(&self) -> f32 {
        self.scale
    }

    /// transformers' `get_image_features`: the projected class token, not normalised, (b, p).
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(self
            .visual_projection
            .forward(&self.vision_model.forward(pixel_values)?)?)
    }

    /// transformers' `get_text_features` for right-padded ids (b, t), not normalised, (b, p).
    pub fn text_features(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self
            .text_projection
            .forward(&self.text_model.forward(input_ids)?)?)
    }

    /// As [`Self::text_features`], from host ids of any lengths.
    pub fn text_features_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        Ok(self
            .text_projection
            .forward(&self.text_model.forward_ids(ids)?)?)
    }

    /// `CLIPOutput.image_embeds`: unit-norm image embeddings in f32, (b, p).
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(l2_normalize(
            &self.image_features(pixel_values)?.to_dtype(DType::F32)?,
        )?)
    }

    /// `CLIPOutput.text_embeds`: unit-norm text embeddings in f32, (b, p).
    pub fn text_embeds(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(l2_normalize(
            &self.text_features(input_ids)?.to_dtype(DType::F32)?,
        )?)
    }

    /// As [`Self::text_embeds`], from host ids of any lengths.
    pub fn text_embeds_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        Ok(l2_normalize(
            &self.text_features_ids(ids)?.to_dtype(DType::F32)?,
        )?)
    }

    /// Γ for every image × text from unit-norm embeddings: (n_images, n_texts).
    pub fn logits_from_embeds(
        &self,
        image_embeds: &Tensor,
        text_embeds: &Tensor,
    ) -> Result<Tensor> {
        Ok((image_embeds.matmul(&text_embeds.t()?)? * self.scale as f64)?)
    }

    /// `CLIPOutput.logits_per_image`: (n_images, n_texts).
    pub fn logits_per_image(&self, pixel_values: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let image = self.image_embeds(pixel_values)?;
        let text = self.text_embeds(input_ids)?;
        self.logits_from_embeds(&image, &text)
    }
}

//! LLaVA's frozen vision tower: `dama_clip`'s CLIP vision transformer read from the LLaVA
//! checkpoint, and the feature selection of transformers' `LlavaModel.get_image_features`
//! (hidden state `vision_feature_layer`, CLS dropped under the `default` strategy).

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use dama_clip::config::ClipVisionConfig;
use dama_clip::vision::ClipVisionTransformer;

use crate::config::{LlavaConfig, SelectStrategy};
use crate::error::{LlavaError, Result};
use crate::weights::{KeyLayout, WeightFiles};

/// Lets `dama_clip` read its weights straight from our (memory-mapped) checkpoint, with our
/// error messages (file and tensor name) on a missing or misshaped tensor.
struct WeightFilesBackend(Arc<WeightFiles>);

impl SimpleBackend for WeightFilesBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .tensor(name, s.dims(), dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = self
            .0
            .shape(name)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: missing tensor `{name}`", self.0.origin()))
            })?
            .to_vec();
        self.get(
            Shape::from(shape),
            name,
            candle_nn::Init::Const(0.),
            dtype,
            dev,
        )
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

pub struct VisionTower {
    tower: ClipVisionTransformer,
    /// Indices into `hidden_states`, in the config's order.
    feature_states: Vec<usize>,
    select: SelectStrategy,
}

impl VisionTower {
    pub(crate) fn load(
        ckpt: Arc<WeightFiles>,
        layout: &KeyLayout,
        cfg: &LlavaConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let origin = ckpt.origin().to_string();
        let vcfg: ClipVisionConfig =
            serde_path_to_error::deserialize(&cfg.vision_json).map_err(|e| {
                LlavaError::config(
                    &origin,
                    format!("vision_config.{}", e.path()),
                    e.inner().to_string(),
                )
            })?;
        vcfg.validate(&origin, "vision_config")
            .map_err(|e| LlavaError::config(&origin, "vision_config", e.to_string()))?;
        let vb = candle_nn::VarBuilder::from_backend(
            Box::new(WeightFilesBackend(ckpt)),
            dtype,
            device.clone(),
        );
        let tower =
            ClipVisionTransformer::new(vb.pp(&layout.vision_model), &vcfg).map_err(|e| {
                LlavaError::Tensor {
                    origin,
                    name: layout.vision_model.clone(),
                    message: e.to_string(),
                }
            })?;
        let feature_states = cfg
            .vision_feature_layers
            .iter()
            .map(|&l| cfg.hidden_state_index(l).expect("validated by LlavaConfig"))
            .collect();
        Ok(Self {
            tower,
            feature_states,
            select: cfg.select_strategy,
        })
    }

    /// `(b, 3, H, W)` pixels → `(b, tokens, width·layers)` projector input, detached (the tower
    /// is frozen; nothing upstream of the projector needs a gradient).
    pub fn features(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        let states = match self.feature_states.as_slice() {
            [one] => vec![self.tower.hidden_state(pixel_values, *one as isize)?],
            many => {
                let run = *many.iter().max().expect("non-empty");
                let all = self.tower.hidden_states(pixel_values, run)?;
                many.iter().map(|&i| all[i].clone()).collect()
            }
        };
        let states = states
            .into_iter()
            .map(|s| match self.select {
                SelectStrategy::Default => {
                    let n = s.dim(1)?;
                    s.narrow(1, 1, n - 1)
                }
                SelectStrategy::Full => Ok(s),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&states, 2)?.detach())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::random_weights;

    fn config(layers: &str, strategy: &str) -> LlavaConfig {
        let text = format!(
            r#"{{"vision_feature_layer": {layers}, "vision_feature_select_strategy": "{strategy}",
                "vision_config": {{"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3,
                                   "num_attention_heads": 2, "image_size": 28, "patch_size": 14}},
                "text_config": {{"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "vocab_size": 64}},
                "image_token_index": 63}}"#
        );
        LlavaConfig::from_json_str(&text, std::path::Path::new("test")).unwrap()
    }

    fn tower(cfg: &LlavaConfig) -> VisionTower {
        // The vision weights are drawn first, so every config here gets the same tower.
        let ckpt = Arc::new(random_weights(cfg, 3).unwrap());
        VisionTower::load(ckpt, &KeyLayout::llava_hf(), cfg, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn several_feature_layers_are_concatenated_and_full_keeps_cls() {
        let px = Tensor::randn(0f32, 1.0, (2, 3, 28, 28), &Device::Cpu).unwrap();
        let one = tower(&config("-2", "default")).features(&px).unwrap();
        assert_eq!(one.dims(), &[2, 4, 16]);
        let other = tower(&config("0", "default")).features(&px).unwrap();
        let two = tower(&config("[-2, 0]", "default")).features(&px).unwrap();
        assert_eq!(two.dims(), &[2, 4, 32]);
        let want = Tensor::cat(&[&one, &other], 2).unwrap();
        let diff = (two - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        let full = tower(&config("-2", "full")).features(&px).unwrap();
        assert_eq!(full.dims(), &[2, 5, 16]);
        let tail = full.narrow(1, 1, 4).unwrap();
        let diff = (tail - &one).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(
            diff.to_scalar::<f32>().unwrap(),
            0.0,
            "full = CLS + default"
        );
    }
}

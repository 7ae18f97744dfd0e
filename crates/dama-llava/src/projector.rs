//! LLaVA-1.5's `mlp2x_gelu` projector: vision features → two linear layers with a GELU
//! between them → language-model embeddings.

use candle_core::Tensor;

use crate::config::{LlavaConfig, ProjectorAct};
use crate::error::Result;
use crate::linear::Linear;
use crate::names;
use crate::params::{Grad, ParamLoader};

pub struct Projector {
    pub(crate) linear_1: Linear,
    pub(crate) linear_2: Linear,
    act: ProjectorAct,
}

impl Projector {
    pub(crate) fn load(
        p: &mut ParamLoader<'_>,
        cfg: &LlavaConfig,
        trainable: bool,
    ) -> Result<Self> {
        let h = cfg.text.hidden_size;
        let bias = cfg.projector_bias;
        Ok(Self {
            linear_1: Linear::load(
                p,
                names::projector(1).as_str(),
                (h, cfg.projector_in()),
                bias,
                trainable,
                None,
            )?,
            linear_2: Linear::load(
                p,
                names::projector(2).as_str(),
                (h, h),
                bias,
                trainable,
                None,
            )?,
            act: cfg.projector_act,
        })
    }

    /// `(n, vision_width·layers)` → `(n, hidden)`.
    pub fn forward(&self, x: &Tensor, grad: Grad) -> candle_core::Result<Tensor> {
        let h = self.linear_1.forward(x, grad)?;
        // `gelu` in transformers is the exact erf form; candle's `gelu` is the tanh one.
        let h = match self.act {
            ProjectorAct::Gelu => h.gelu_erf()?,
            ProjectorAct::GeluTanh => h.gelu()?,
        };
        self.linear_2.forward(&h, grad)
    }

    pub(crate) fn named_weights(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = self.linear_1.named_weights()?;
        out.extend(self.linear_2.named_weights()?);
        Ok(out)
    }
}

//! Every weight name of the language model and projector, built in one place (as candle's
//! `VarBuilder::pp` builds them): the loader, the saver and the random-weight maker all ask
//! here, so a name cannot be spelled two ways. Names are transformers' `llava_hf` layout;
//! [`crate::weights::KeyLayout`] maps them to whatever layout a checkpoint was written in.

use std::fmt::Display;

use crate::config::TextConfig;
use crate::params::Projection;

/// A dotted name prefix: `Prefix::new("a").pp("b").pp(3).leaf("weight")` is `a.b.3.weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn new(root: impl Into<String>) -> Self {
        Self(root.into())
    }

    pub fn pp(&self, part: impl Display) -> Self {
        Self(format!("{}.{part}", self.0))
    }

    pub fn leaf(&self, leaf: &str) -> String {
        format!("{}.{leaf}", self.0)
    }

    pub fn weight(&self) -> String {
        self.leaf("weight")
    }

    pub fn bias(&self) -> String {
        self.leaf("bias")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `language_model.model`, the LLaMA body.
pub fn language_model() -> Prefix {
    Prefix::new("language_model.model")
}

pub fn embed_tokens() -> String {
    language_model().pp("embed_tokens").weight()
}

pub fn final_norm() -> String {
    language_model().pp("norm").weight()
}

/// The untied output projection (outside the LLaMA body, as transformers keeps it).
pub fn lm_head() -> String {
    Prefix::new("language_model.lm_head").weight()
}

/// The names of decoder layer `i`.
#[derive(Debug, Clone)]
pub struct LayerNames(Prefix);

impl LayerNames {
    pub fn new(i: usize) -> Self {
        Self(language_model().pp("layers").pp(i))
    }

    pub fn input_norm(&self) -> String {
        self.0.pp("input_layernorm").weight()
    }

    pub fn post_norm(&self) -> String {
        self.0.pp("post_attention_layernorm").weight()
    }

    /// The prefix of projection `p` (its `.weight`, `.bias` and LoRA matrices hang off it).
    pub fn projection(&self, p: Projection) -> Prefix {
        self.0.pp(p.path())
    }
}

/// The projector's two linear layers, `linear_1` then `linear_2`.
pub fn projector(layer: usize) -> Prefix {
    Prefix::new("multi_modal_projector").pp(format_args!("linear_{layer}"))
}

impl Projection {
    /// Where the projection sits in a decoder layer: `self_attn.q_proj`, `mlp.gate_proj`, ….
    pub fn path(self) -> String {
        let block = match self {
            Self::Q | Self::K | Self::V | Self::O => "self_attn",
            Self::Gate | Self::Up | Self::Down => "mlp",
        };
        format!("{block}.{}", self.name())
    }

    /// `(out, in)` of the projection's weight.
    pub fn shape(self, t: &TextConfig) -> (usize, usize) {
        let (h, q, kv, inter) = (
            t.hidden_size,
            t.num_attention_heads * t.head_dim,
            t.num_key_value_heads * t.head_dim,
            t.intermediate_size,
        );
        match self {
            Self::Q => (q, h),
            Self::K | Self::V => (kv, h),
            Self::O => (h, q),
            Self::Gate | Self::Up => (inter, h),
            Self::Down => (h, inter),
        }
    }

    /// Whether the config gives the projection a bias.
    pub fn has_bias(self, t: &TextConfig) -> bool {
        match self {
            Self::Q | Self::K | Self::V | Self::O => t.attention_bias,
            Self::Gate | Self::Up | Self::Down => t.mlp_bias,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_transformers_llava_hf_names() {
        assert_eq!(embed_tokens(), "language_model.model.embed_tokens.weight");
        assert_eq!(final_norm(), "language_model.model.norm.weight");
        assert_eq!(lm_head(), "language_model.lm_head.weight");
        let l = LayerNames::new(3);
        assert_eq!(
            l.input_norm(),
            "language_model.model.layers.3.input_layernorm.weight"
        );
        assert_eq!(
            l.post_norm(),
            "language_model.model.layers.3.post_attention_layernorm.weight"
        );
        assert_eq!(
            l.projection(Projection::K).bias(),
            "language_model.model.layers.3.self_attn.k_proj.bias"
        );
        assert_eq!(
            l.projection(Projection::Down).weight(),
            "language_model.model.layers.3.mlp.down_proj.weight"
        );
        assert_eq!(
            projector(2).weight(),
            "multi_modal_projector.linear_2.weight"
        );
    }
}

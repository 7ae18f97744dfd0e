//! The LLaMA / Vicuna language model of LLaVA, on flattened `(rows·seq, hidden)` activations.
//! Positions and the attention mask come from outside ([`AttentionInputs`]), built once per
//! batch: that is what lets one packed row hold a shared prefix and two answers.

use candle_core::Tensor;
use dama_kernels::AttnMask;

use crate::config::TextConfig;
use crate::decoder::{DecoderLayer, LayerBackward, LayerRun, layer_forward};
use crate::error::Result;
use crate::linear::Linear;
use crate::names::{self, LayerNames};
use crate::ops;
use crate::params::{Grad, ParamLoader, Projection, Trainable};

/// Per-batch inputs of every attention layer.
#[derive(Clone)]
pub struct AttentionInputs {
    pub rows: usize,
    pub seq_len: usize,
    /// `(rows, 1, seq, head_dim)`, one row per token's position.
    pub cos: Tensor,
    pub sin: Tensor,
    /// Which keys each query sees, as the fused attention's per-query key spans: built on the
    /// host from the layout, never materialised as a (seq × seq) tensor on the device.
    pub mask: AttnMask,
}

pub struct Llama {
    pub(crate) cfg: TextConfig,
    pub(crate) embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    pub(crate) norm: Tensor,
    /// Same tensor as `embed_tokens` when the config ties them.
    pub(crate) lm_head: Tensor,
    tied: bool,
    /// How the decoder layers run, but for `grad`, which each pass sets.
    layer_run: LayerRun,
}

impl Llama {
    pub(crate) fn load(
        p: &mut ParamLoader<'_>,
        cfg: &TextConfig,
        tied: bool,
        trainable: &Trainable,
    ) -> Result<Self> {
        let train = trainable.language_model();
        let h = cfg.hidden_size;
        let embed_tokens = p.load(&names::embed_tokens(), &[cfg.vocab_size, h], train)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let names = LayerNames::new(i);
            let mut proj = Vec::with_capacity(7);
            for pr in Projection::ALL {
                proj.push(Linear::load(
                    p,
                    names.projection(pr).as_str(),
                    pr.shape(cfg),
                    pr.has_bias(cfg),
                    train,
                    trainable.lora_for(pr),
                )?);
            }
            let [q, k, v, o, gate, up, down] =
                <[Linear; 7]>::try_from(proj).expect("one linear per projection");
            layers.push(DecoderLayer {
                input_norm: p.load(&names.input_norm(), &[h], train)?,
                q,
                k,
                v,
                o,
                post_norm: p.load(&names.post_norm(), &[h], train)?,
                gate,
                up,
                down,
            });
        }
        let norm = p.load(&names::final_norm(), &[h], train)?;
        let lm_head = if tied {
            embed_tokens.clone()
        } else {
            p.load(&names::lm_head(), &[cfg.vocab_size, h], train)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            tied,
            layer_run: LayerRun {
                grad: Grad::Off,
                backward: LayerBackward::default(),
                recompute: false,
            },
        })
    }

    /// Activation checkpointing: with `on`, a tracked forward keeps only each decoder layer's
    /// input and output, and the backward runs each layer again (one more forward of the
    /// language model per step, for a fraction of its activation memory). Same numbers.
    pub fn set_recompute_activations(&mut self, on: bool) {
        self.layer_run.recompute = on;
    }

    /// Which backward the decoder layers use (the hand-written one unless told otherwise).
    pub fn set_layer_backward(&mut self, mode: LayerBackward) {
        self.layer_run.backward = mode;
    }

    /// Token embeddings of `ids` `(n,)` → `(n, hidden)`.
    pub fn embed(&self, ids: &Tensor, grad: Grad) -> candle_core::Result<Tensor> {
        let table = grad.w(&self.embed_tokens);
        dama_kernels::profile::span(ids.device(), "embed", || {
            dama_kernels::embedding(ids, &table)
        })
    }

    /// Runs every decoder layer; returns the last hidden states before the final norm.
    pub fn forward(
        &self,
        x: &Tensor,
        att: &AttentionInputs,
        grad: Grad,
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer_forward(
                &self.cfg,
                layer,
                &x,
                att,
                LayerRun {
                    grad,
                    ..self.layer_run
                },
            )?;
        }
        Ok(x)
    }

    /// The decoder layers, in order (generation runs them one by one with its KV cache).
    pub(crate) fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// Next-token logits `(n, vocab)` in f32 (f64 for f64 models) of last hidden states
    /// `(n, hidden)`: final norm, vocabulary projection in the model dtype, then the cast
    /// (transformers' `logits.float()`).
    pub fn logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let h = dama_kernels::rms_norm(hidden, &self.norm.detach(), self.cfg.rms_norm_eps)?;
        let logits = h.matmul(&self.lm_head.detach().t()?)?;
        logits.to_dtype(dama_kernels::acc_dtype(logits.dtype()))
    }

    /// Sums of answer-token log-probs: final norm and vocabulary projection on the scored
    /// positions only. `positions` index rows of `hidden`; see [`ops::answer_logprobs`].
    pub fn answer_logprobs(
        &self,
        hidden: &Tensor,
        positions: &Tensor,
        targets: &Tensor,
        segments: &Tensor,
        num_segments: usize,
        grad: Grad,
    ) -> candle_core::Result<Tensor> {
        dama_kernels::profile::span(hidden.device(), "head", || {
            let h = hidden.index_select(positions, 0)?;
            let h = dama_kernels::rms_norm(&h, &grad.w(&self.norm), self.cfg.rms_norm_eps)?;
            ops::answer_logprobs(&h, &grad.w(&self.lm_head), targets, segments, num_segments)
        })
    }

    /// Every weight of the language model under its canonical name, LoRA merged (for saving).
    pub(crate) fn named_weights(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = vec![(names::embed_tokens(), self.embed_tokens.detach())];
        for (i, l) in self.layers.iter().enumerate() {
            let names = LayerNames::new(i);
            out.push((names.input_norm(), l.input_norm.detach()));
            out.push((names.post_norm(), l.post_norm.detach()));
            for lin in l.linears() {
                out.extend(lin.named_weights()?);
            }
        }
        out.push((names::final_norm(), self.norm.detach()));
        if !self.tied {
            out.push((names::lm_head(), self.lm_head.detach()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use crate::LayerBackward;
    use crate::params::{LoraConfig, Projection, Trainable};
    use crate::processor::{Images, PairBatch};
    use crate::template::{EncodedAnswer, EncodedPair};
    use crate::{LlavaConfig, LlavaModel, LoadOptions, random::random_weights};

    fn model(trainable: Trainable) -> LlavaModel {
        let text = r#"{"image_token_index": 60, "pad_token_id": 0,
            "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                              "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
            "text_config": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
                            "attention_bias": true}}"#;
        let cfg = LlavaConfig::from_json_str(text, std::path::Path::new("inline")).unwrap();
        let ckpt = random_weights(&cfg, 5).unwrap();
        let opts = LoadOptions {
            trainable,
            ..LoadOptions::default()
        };
        LlavaModel::from_weights(cfg, ckpt, &opts).unwrap()
    }

    fn batch(m: &LlavaModel) -> PairBatch {
        let np = m.config().num_image_tokens();
        let answer = |prefix: &[u32], tail: &[u32]| EncodedAnswer {
            input_ids: [prefix, tail].concat(),
            answer_start: prefix.len(),
            boundary_merged: false,
            truncated: false,
        };
        let pairs = (0..2u32)
            .map(|i| {
                let mut prefix = vec![1];
                prefix.extend(std::iter::repeat_n(60, np));
                prefix.extend([5 + i, 9, 12]);
                EncodedPair {
                    chosen: answer(&prefix, &[20 + i, 21, 22, 2]),
                    rejected: answer(&prefix, &[30, 31 + i, 2]),
                    shared_prefix: prefix.len(),
                }
            })
            .collect();
        let f = Tensor::randn(0f32, 1.0, (2, np, m.config().projector_in()), &Device::Cpu).unwrap();
        PairBatch {
            images: Images::Features(f),
            pairs,
        }
    }

    /// Log-prob sums and every trainable gradient, in f64 for comparing.
    fn run(m: &LlavaModel, b: &PairBatch) -> (Vec<f64>, Vec<Vec<f64>>) {
        let l = m.pair_logps(b, true).unwrap();
        let obj =
            (l.chosen.sum_all().unwrap() - (l.rejected.sum_all().unwrap() * 0.5).unwrap()).unwrap();
        let g = obj.backward().unwrap();
        let v = |t: &Tensor| -> Vec<f64> {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let sums = [v(&l.chosen), v(&l.rejected)].concat();
        let vars: Vec<&Var> = m.trainable_vars().values().collect();
        (
            sums,
            vars.iter()
                .map(|x| v(g.get(x.as_tensor()).expect("a gradient")))
                .collect(),
        )
    }

    /// The hand-written layer backward and checkpointing (with either backward) against
    /// candle's autograd through the plain layers: same sums, same gradients.
    #[test]
    fn layer_backwards_and_checkpointing_give_the_same_values_and_gradients_full_and_lora() {
        let lora = LoraConfig::new(2, 4.0, vec![Projection::Q, Projection::V, Projection::Down]);
        for trainable in [Trainable::Full, Trainable::Lora(lora)] {
            // LoRA's A gets an exactly zero gradient while B is zero (PEFT's initialisation)
            let full = trainable == Trainable::Full;
            let mut m = model(trainable);
            let b = batch(&m);
            m.set_layer_backward(LayerBackward::Autograd);
            let (s0, g0) = run(&m, &b);
            assert!(!g0.is_empty());
            // the no-grad forward (reference log-probs) gives the tracked forward's values
            let l = m.pair_logps_no_grad(&b, true).unwrap();
            let v = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            assert_eq!(s0, [v(&l.chosen), v(&l.rejected)].concat());
            for (mode, ckpt) in [
                (LayerBackward::Autograd, true),
                (LayerBackward::Manual, false),
                (LayerBackward::Manual, true),
            ] {
                m.set_layer_backward(mode);
                m.llama.set_recompute_activations(ckpt);
                let (s1, g1) = run(&m, &b);
                assert_eq!(
                    s0, s1,
                    "{mode:?} {ckpt}: the forward is the same computation"
                );
                assert_eq!(g0.len(), g1.len());
                for (a, c) in g0.iter().zip(&g1) {
                    let scale = a.iter().fold(0f64, |x, y| x.max(y.abs())).max(1e-30);
                    let err = a.iter().zip(c).fold(0f64, |x, (p, q)| x.max((p - q).abs())) / scale;
                    assert!(err < 1e-5, "{mode:?} {ckpt}: {err:e}");
                    assert!(!full || a.iter().any(|&x| x != 0.0));
                }
            }
        }
    }

    /// The saved activations are released by the first backward; a second backward through
    /// the same graph recomputes them and gives the same gradients.
    #[test]
    fn a_second_backward_through_the_same_graph_gives_the_same_gradients() {
        let m = model(Trainable::Full);
        let b = batch(&m);
        let l = m.pair_logps(&b, true).unwrap();
        let obj = (l.chosen.sum_all().unwrap() - l.rejected.sum_all().unwrap()).unwrap();
        let (g1, g2) = (obj.backward().unwrap(), obj.backward().unwrap());
        let mut compared = 0;
        for v in m.trainable_vars().values() {
            let (a, c) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            let d: f32 = (a - c)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(d, 0.0);
            compared += 1;
        }
        assert!(compared > 20);
    }
}

//! LLaVA-1.5 for preference training: per-sequence answer log-prob sums of chosen and
//! rejected answers, with gradients for the trainable weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use crate::config::LlavaConfig;
use crate::error::{LlavaError, Result};
use crate::layout::Layout;
use crate::llama::{AttentionInputs, Llama};
use crate::ops;
use crate::params::{Grad, ParamLoader, Trainable};
use crate::processor::{Images, PairBatch};
use crate::projector::Projector;
use crate::vision::VisionTower;
use crate::weights::{KeyLayout, WeightFiles};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// f32, bf16 (or f64 for gradient checks). Log-prob sums are always f32 or wider.
    pub dtype: DType,
    pub device: Device,
    pub trainable: Trainable,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            trainable: Trainable::Frozen,
        }
    }
}

/// Per-pair answer log-prob sums, `(B,)` each, and how many tokens each sum covers.
#[derive(Debug, Clone)]
pub struct PairLogps {
    pub chosen: Tensor,
    pub rejected: Tensor,
    pub chosen_tokens: Vec<usize>,
    pub rejected_tokens: Vec<usize>,
}

pub struct LlavaModel {
    pub(crate) config: LlavaConfig,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    vision: VisionTower,
    pub(crate) projector: Projector,
    pub(crate) llama: Llama,
    vars: BTreeMap<String, Var>,
    trainable: Trainable,
    pub(crate) inv_freq: Vec<f32>,
    pub(crate) weights: Arc<WeightFiles>,
    pub(crate) layout: KeyLayout,
    pub(crate) source_dir: Option<PathBuf>,
}

impl LlavaModel {
    /// Loads `config.json` and the safetensors weights of a Hugging Face model folder.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let config = LlavaConfig::from_file(&dir.join("config.json"))?;
        let ckpt = WeightFiles::open_dir(dir)?;
        let mut model = Self::from_weights(config, ckpt, opts)?;
        model.source_dir = Some(dir.to_path_buf());
        Ok(model)
    }

    /// Builds the model from a configuration and weights in any supported key layout.
    pub fn from_weights(
        config: LlavaConfig,
        ckpt: WeightFiles,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let layout = KeyLayout::detect(&ckpt, config.tie_word_embeddings)?;
        let ckpt = Arc::new(ckpt);
        let mut p = ParamLoader {
            ckpt: &ckpt,
            layout: &layout,
            dtype: opts.dtype,
            device: &opts.device,
            vars: BTreeMap::new(),
        };
        let projector = Projector::load(&mut p, &config, opts.trainable.projector())?;
        let llama = Llama::load(
            &mut p,
            &config.text,
            config.tie_word_embeddings,
            &opts.trainable,
        )?;
        let vars = std::mem::take(&mut p.vars);
        let vision = VisionTower::load(ckpt.clone(), &layout, &config, opts.dtype, &opts.device)?;
        let t = &config.text;
        Ok(Self {
            inv_freq: ops::rope_inv_freq(t.head_dim, t.rope_theta, t.rope_linear_factor),
            config,
            dtype: opts.dtype,
            device: opts.device.clone(),
            vision,
            projector,
            llama,
            vars,
            trainable: opts.trainable.clone(),
            weights: ckpt,
            layout,
            source_dir: None,
        })
    }

    pub fn config(&self) -> &LlavaConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn trainable(&self) -> &Trainable {
        &self.trainable
    }

    /// The trainable variables by canonical (llava-hf layout) name; LoRA matrices are named
    /// `{layer}.lora_A.weight` / `{layer}.lora_B.weight`. An optimiser's `Var::set` updates the
    /// model in place.
    pub fn trainable_vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// The projector's input for `pixel_values` `(B, 3, H, W)`: `(B, image_tokens,
    /// vision_width·layers)`, detached. Compute once per image and pass [`Images::Features`]
    /// to skip the tower on later passes.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let px = pixel_values.to_device(&self.device)?;
        Ok(self.vision.features(&px)?)
    }

    /// Recompute each decoder layer in the backward instead of keeping its activations: less
    /// memory for larger micro-batches, one more forward of the language model per step.
    pub fn set_recompute_activations(&mut self, on: bool) {
        self.llama.set_recompute_activations(on)
    }

    /// Which backward the decoder layers use: the hand-written one (the default) or candle's
    /// autograd (the reference it is tested against; slower, more memory).
    pub fn set_layer_backward(&mut self, mode: crate::LayerBackward) {
        self.llama.set_layer_backward(mode)
    }

    /// Chosen and rejected answer log-prob sums with gradients for [`Self::trainable_vars`].
    /// `shared_prefix` computes the common image + question prefix once per pair (see
    /// [`crate::layout`]); both layouts give the same numbers up to float order.
    pub fn pair_logps(&self, batch: &PairBatch, shared_prefix: bool) -> Result<PairLogps> {
        self.logps(batch, shared_prefix, Grad::Track)
    }

    /// The same without recording a graph (reference model, evaluation).
    pub fn pair_logps_no_grad(&self, batch: &PairBatch, shared_prefix: bool) -> Result<PairLogps> {
        self.logps(batch, shared_prefix, Grad::Off)
    }

    /// The input embeddings `(ids.len(), hidden)` of a flattened batch: token embeddings, with
    /// each `(position, feature row)` of `image_rows` replaced by that row of the projected
    /// `features` `(images, image_tokens, projector_in)` (what transformers' `masked_scatter`
    /// does), as one differentiable gather. Image positions of `ids` must hold a token inside
    /// the vocabulary (the pad token), since `image_token_index` may lie outside it (old llava
    /// configs: 32000 of 32000).
    pub(crate) fn embed_with_images(
        &self,
        ids: Vec<u32>,
        image_rows: &[(usize, usize)],
        features: &Tensor,
        grad: Grad,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let n = ids.len();
        let (images, np, _) = features.dims3()?;
        let image = self
            .projector
            .forward(&features.reshape((images * np, cfg.projector_in()))?, grad)?;
        let text = self
            .llama
            .embed(&Tensor::from_vec(ids, n, &self.device)?, grad)?;
        let mut source: Vec<u32> = (0..n as u32).collect();
        for &(flat, row) in image_rows {
            source[flat] = (n + row) as u32;
        }
        let source = Tensor::from_vec(source, n, &self.device)?;
        // a permutation of the rows: `embedding`'s backward scatters them back in one pass
        // (candle's `index_select` backward walks every row once per column)
        Ok(dama_kernels::embedding(
            &source,
            &Tensor::cat(&[&text, &image], 0)?,
        )?)
    }

    /// The vision features of `images` on this model's device and dtype, detached, checked
    /// to be `(count, image_tokens, projector_in)`.
    pub(crate) fn features_of(&self, images: &Images, count: usize) -> Result<Tensor> {
        let cfg = &self.config;
        let features = match images {
            Images::Pixels(px) => self.image_features(px)?,
            Images::Features(f) => f.to_device(&self.device)?.to_dtype(self.dtype)?.detach(),
        };
        let want = [count, cfg.num_image_tokens(), cfg.projector_in()];
        if features.dims() != want {
            return Err(LlavaError::Invalid(format!(
                "image features have shape {:?}, expected {want:?} (one image per example)",
                features.dims()
            )));
        }
        Ok(features)
    }

    /// The token that fills padding and image slots: the config's `pad_token_id` when it is
    /// inside the vocabulary, else 0 (its embedding is never read).
    pub(crate) fn pad_token(&self) -> u32 {
        let cfg = &self.config;
        cfg.pad_token_id
            .filter(|&p| (p as usize) < cfg.text.vocab_size)
            .unwrap_or(0)
    }

    fn logps(&self, batch: &PairBatch, shared: bool, grad: Grad) -> Result<PairLogps> {
        let cfg = &self.config;
        let b = batch.pairs.len();
        let np = cfg.num_image_tokens();
        let features = self.features_of(&batch.images, b)?;
        let pad = self.pad_token();
        let layout = Layout::build(&batch.pairs, shared, cfg.image_token_id, pad)?;
        let (rows, t) = (layout.rows, layout.seq_len);
        let dev = &self.device;

        // Image slots embed the pad token (their rows are replaced by image features anyway).
        let mut ids = layout.input_ids.clone();
        let mut image_rows = Vec::with_capacity(layout.image_slots.len());
        let mut seen = vec![0usize; rows];
        for &(flat, pair) in &layout.image_slots {
            ids[flat] = pad;
            let row = flat / t;
            let k = seen[row];
            if k >= np {
                return Err(LlavaError::Example {
                    index: pair,
                    side: "pair",
                    message: format!("more than {np} image tokens in one sequence"),
                });
            }
            image_rows.push((flat, pair * np + k));
            seen[row] += 1;
        }
        if let Some(row) = seen.iter().position(|&c| c != np) {
            let pair = if shared { row } else { row % b };
            return Err(LlavaError::Example {
                index: pair,
                side: "pair",
                message: format!("{} image tokens in a sequence, expected {np}", seen[row]),
            });
        }
        let x = self.embed_with_images(ids, &image_rows, &features, grad)?;

        let hd = cfg.text.head_dim;
        let (cos, sin) = ops::rope_tables(&layout.positions, &self.inv_freq, self.dtype, dev)?;
        let mask = dama_kernels::AttnMask::from_fn(rows, t, |r, q, k| {
            let (q, k) = (r * t + q, r * t + k);
            !layout.is_pad(q) && layout.allowed(q, k)
        })?;
        let att = AttentionInputs {
            rows,
            seq_len: t,
            cos: cos.reshape((rows, 1, t, hd))?,
            sin: sin.reshape((rows, 1, t, hd))?,
            mask,
        };
        let hidden = self.llama.forward(&x, &att, grad)?;

        let m = layout.score_positions.len();
        let positions = Tensor::from_slice(&layout.score_positions, m, dev)?;
        let targets = Tensor::from_slice(&layout.score_targets, m, dev)?;
        let segments = Tensor::from_slice(&layout.score_segments, m, dev)?;
        let sums =
            self.llama
                .answer_logprobs(&hidden, &positions, &targets, &segments, 2 * b, grad)?;
        Ok(PairLogps {
            chosen: sums.narrow(0, 0, b)?,
            rejected: sums.narrow(0, b, b)?,
            chosen_tokens: layout.chosen_tokens,
            rejected_tokens: layout.rejected_tokens,
        })
    }
}

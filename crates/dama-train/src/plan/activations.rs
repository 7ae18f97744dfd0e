//! The activation model: what one gradient pass over a micro-batch keeps, per decoder layer and
//! outside the layers, with and without activation checkpointing, from the shapes of
//! `dama_llava`'s forward (its decoder layer's hand-written backward, the fused ops of
//! `dama_kernels`).
//!
//! Per decoder layer and token, without checkpointing, the layer's backward holds (and
//! releases once it has run): the rotated queries and keys, the values, the attention output
//! and its log-sum-exp (f32, one per head), the residual between attention and MLP, the MLP's
//! gate and up projections. Candle's graph keeps every layer's input (the residual stream)
//! until the step's loss is dropped. With checkpointing only those inputs stay; each layer's
//! set is recomputed in its backward, one layer at a time.
//!
//! Outside the layers: the text embeddings, the text and image rows the sequence is gathered
//! from, the last layer's output, the scored rows' hidden states and their final norm for the
//! head (which recomputes its logits chunk by chunk and never holds the `(rows, vocabulary)`
//! logits), RoPE's per-token tables, the attention mask (two key spans per query) and, when
//! the projector trains, its input features and hidden activations per image.

use dama_kernels::DEFAULT_VOCAB_CHUNK;
use dama_llava::LlavaConfig;

/// Tokens of one preference pair: the shared prefix (image tokens + the prompt) and each
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    pub prefix: usize,
    pub answer: usize,
}

impl Sequence {
    /// A conversation of `tokens` (prefix + one answer) with `prompt` tokens of template and
    /// question after the model's image tokens; the answer is the rest (at least 1).
    pub fn of_length(cfg: &LlavaConfig, tokens: usize, prompt: usize) -> Self {
        let prefix = cfg.num_image_tokens() + prompt;
        Self {
            prefix,
            answer: tokens.saturating_sub(prefix).max(1),
        }
    }
}

/// How a micro-batch of pairs is laid out for the language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Sequences the model runs (pairs with the shared prefix, 2·pairs without).
    pub rows: u64,
    /// Tokens per row (rows are padded to the longest).
    pub t: u64,
    /// Answer tokens the head scores.
    pub scored: u64,
    /// Images through the projector.
    pub images: u64,
}

impl Layout {
    pub fn new(seq: Sequence, pairs: usize, shared_prefix: bool) -> Self {
        let (p, a, n) = (seq.prefix as u64, seq.answer as u64, pairs as u64);
        let (rows, t) = if shared_prefix {
            (n, p + 2 * a)
        } else {
            (2 * n, p + a)
        };
        Self {
            rows,
            t,
            scored: 2 * n * a,
            images: n,
        }
    }

    pub fn tokens(&self) -> u64 {
        self.rows * self.t
    }
}

/// Activation bytes of one gradient pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activations {
    /// Per decoder layer: held for its backward and released when it has run (0 with
    /// checkpointing).
    pub per_layer_released: u64,
    /// Per decoder layer: its input, kept by the graph until the step ends.
    pub per_layer_kept: u64,
    pub layers: u64,
    /// Outside the layers, kept until the step ends.
    pub other: u64,
    /// With checkpointing: one layer's set, recomputed in its backward (transient).
    pub recompute: u64,
}

impl Activations {
    /// Everything held when the backward starts.
    pub fn at_backward_start(&self) -> u64 {
        self.layers * (self.per_layer_released + self.per_layer_kept) + self.other
    }

    /// What is still held when the backward ends (the graph's kept tensors).
    pub fn at_backward_end(&self) -> u64 {
        self.layers * self.per_layer_kept + self.other
    }
}

/// The activations of a gradient pass over `layout` with activations of `bytes` bytes
/// (the model dtype), checkpointed or not; `projector_trains` adds the projector's.
pub fn activations(
    cfg: &LlavaConfig,
    layout: &Layout,
    bytes: u64,
    checkpointing: bool,
    projector_trains: bool,
) -> Activations {
    let t = &cfg.text;
    let tok = layout.tokens();
    let (d, i) = (t.hidden_size as u64, t.intermediate_size as u64);
    let q = (t.num_attention_heads * t.head_dim) as u64;
    let kv = (t.num_key_value_heads * t.head_dim) as u64;
    let heads = t.num_attention_heads as u64;
    let layer_set = tok * (bytes * (q + 2 * kv + q + d + 2 * i) + 4 * heads);
    // the attention mask: two key spans per query (u32)
    let mask = layout.rows * layout.t * 16;
    // RoPE's cos and sin tables, one row per token
    let rope = 2 * tok * t.head_dim as u64 * bytes;
    let image = cfg.num_image_tokens() as u64 * layout.images;
    let projector = if projector_trains {
        image * bytes * (cfg.projector_in() as u64 + 2 * d)
    } else {
        0
    };
    // the text embeddings, the text + image rows they are gathered from, the last layer's
    // output; the head's gathered rows and their norm, and its log-sum-exp
    let other = tok * d * bytes * 3
        + layout.images * cfg.num_image_tokens() as u64 * d * bytes
        + layout.scored * (2 * d * bytes + 4)
        + mask
        + rope
        + projector;
    Activations {
        per_layer_released: if checkpointing { 0 } else { layer_set },
        per_layer_kept: tok * d * bytes,
        layers: t.num_hidden_layers as u64,
        other,
        recompute: if checkpointing { layer_set } else { 0 },
    }
}

/// The step's three candidate peaks beyond what is held throughout (weights, master,
/// moments): at the head's backward, at the top decoder layer's backward, and at the end of
/// the backward. The largest is the step's peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moments {
    /// Every activation, and the head's backward: a chunk of logits and their gradient, its
    /// weight gradient's chunks and their concatenation, then candle's `zeros + dW`
    /// accumulation (three `V×d` tensors at once).
    pub head: u64,
    /// Every activation, the head's gradient, and one layer's backward: its MLP's recomputed
    /// activation and gradients (4 `T×I`, 2 `T×d`), or the attention's (on the CPU its f32
    /// copies of q, k, v and dO and its per-task dQ buffers); with checkpointing the
    /// recomputed layer's set too.
    pub layer: u64,
    /// What the graph still keeps, every gradient, and the larger of the embedding
    /// backward's f32 table (plus its rounding) and clipping's f32 squares.
    pub end: u64,
}

/// What [`Moments`] needs besides the activations.
pub struct StepShape {
    /// Bytes of one element of the model dtype.
    pub bytes: u64,
    /// `vocabulary × hidden`: the head's and the embedding's size.
    pub vocab_matrix: u64,
    /// The head and the embeddings train (full fine-tuning).
    pub vocab_trains: bool,
    /// All gradients held at the end of the backward (sums of earlier micro-batches included).
    pub gradients: u64,
    /// Gradient sums of earlier micro-batches, held during a later pass.
    pub sums: u64,
    /// The largest trainable tensor.
    pub largest: u64,
    pub cuda: bool,
}

/// The three candidate peaks of a gradient pass over `layout`.
pub fn moments(cfg: &LlavaConfig, layout: &Layout, acts: &Activations, s: &StepShape) -> Moments {
    let t = &cfg.text;
    let b = s.bytes;
    let tok = layout.tokens();
    let (d, i) = (t.hidden_size as u64, t.intermediate_size as u64);
    let q = (t.num_attention_heads * t.head_dim) as u64;
    let kv = (t.num_key_value_heads * t.head_dim) as u64;
    let vd = s.vocab_matrix;
    let chunk = DEFAULT_VOCAB_CHUNK.min(t.vocab_size) as u64;
    // a chunk's logits and their gradient in f32 and part of a third chunk-sized buffer:
    // 2.5 × (rows × chunk) f32, measured on the CPU (tests/plan_peak.rs) in f32 and bf16
    let logits = 10 * layout.scored * chunk;
    let head_work = if s.vocab_trains {
        (logits + 2 * vd * b).max(3 * vd * b)
    } else {
        logits
    };
    let head_grad = if s.vocab_trains { vd * b } else { 0 };
    let mlp = tok * b * (4 * i + 2 * d) + 3 * d * i * b;
    let attention = if s.cuda {
        tok * b * (2 * q + 2 * kv)
    } else {
        tok * 4 * (4 * q + 2 * kv) + tok * b * q
    };
    let layer_work = mlp.max(attention) + acts.recompute;
    let start = acts.at_backward_start() + s.sums;
    let embedding = if s.vocab_trains {
        (4 * vd + vd * b).max(2 * vd * b)
    } else {
        0
    };
    let clip = if b == 4 { 4 } else { 8 } * s.largest;
    Moments {
        head: start + head_work,
        layer: start + head_grad + layer_work,
        end: acts.at_backward_end() + s.gradients + embedding.max(clip),
    }
}

//! Fused candle ops with hand-written backwards for training LLaVA: the pieces of a LLaMA
//! decoder layer and the answer-log-prob head that candle 0.11 either lacks a backward for or
//! runs as long chains of small differentiable ops.
//!
//! | op | forward | backward |
//! | --- | --- | --- |
//! | [`rms_norm`] | one pass per row | input and weight gradients, one pass |
//! | [`rope`] | rotate-half RoPE on `(b, t, h, d)` views | rotation by −θ |
//! | [`attention`] | flash-style online softmax, masks as per-query key spans ([`AttnMask`]) | recomputed from the saved log-sum-exp, no `t×t` matrix |
//! | [`swiglu`] | `silu(a)·b` | both inputs |
//! | [`embedding`] | `table[ids]` | scatter-add into the table, f32 accumulation |
//! | [`token_logprobs`] | linear + log-softmax + gather, chunked over the vocabulary | hidden and weight gradients, chunked |
//! | [`layer_norm`], [`quick_gelu`] | forward only (the frozen CLIP tower on CUDA, through dama-clip's `kernels` feature) | none: an error if a graph reaches them |
//! | [`adamw`] | fused AdamW update (fp32 master + moments in one in-place buffer per variable; or 8-bit block-wise moments, [`quant8`]) | — |
//! | [`with_backward`] | a layer computed outside the graph | the layer's hand-written backward, all weights at once |
//! | [`recompute`] | runs a layer without keeping its activations | runs it again with a graph |
//!
//! Every op runs on the CPU (multi-threaded with rayon) and, with the `cuda` feature, on CUDA
//! (`kernels/*.cu`, compiled by nvcc at build time). Inputs may be f32, f64, bf16 or f16;
//! arithmetic is in f32 (f64 for f64 inputs); results are rounded to the input dtype where
//! transformers' eager implementation rounds, so a bf16 model keeps its oracle's numbers.
//! [`composed`] holds the compositions of differentiable candle ops the fused ops are tested
//! against.

pub mod adamw;
mod attention;
mod clip_ops;
pub mod composed;
#[cfg(feature = "cuda")]
mod cuda;
mod device;
mod elem;
mod embedding;
pub mod grad_ready;
mod head;
mod io;
mod layer;
mod mask;
pub mod profile;
pub mod quant8;
mod rms_norm;
mod rope;
mod swiglu;
#[cfg(test)]
mod testing;

pub use attention::{
    CudaAttention, MMA_HEAD_DIMS, attention, attention_backward, attention_forward, cuda_attention,
    cuda_attention_path, set_cuda_attention,
};
pub use clip_ops::{layer_norm, quick_gelu};
pub use device::cuda_device;
pub use elem::acc_dtype;
pub use embedding::embedding;
pub use head::{DEFAULT_VOCAB_CHUNK, token_logprobs};
pub use layer::{Backward, LayerGrads, Recompute, recompute, with_backward};
pub use mask::AttnMask;
pub use rms_norm::{rms_norm, rms_norm_backward};
pub use rope::{rope, rope_backward};
pub use swiglu::{swiglu, swiglu_backward};

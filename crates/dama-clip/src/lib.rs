//! CLIP on candle for the Hugging Face `CLIPModel` layout, equal to transformers: image
//! preprocessing bit-identical to the PIL-based `CLIPImageProcessor`, the CLIP BPE tokenizer
//! from `tokenizer.json`, both towers, and the paper's Γ(I, s) = exp(logit_scale)·cos(image,
//! text) for the sub-sentences of preference pairs ([`ClipScorer`]). The hardness δ computed from
//! those scores is dama-core's.
//!
//! Runs on any candle `Device` (CPU; CUDA with the `cuda` feature) in f32 (default), f16 or
//! bf16, and compiles for `wasm32-unknown-unknown` (load from bytes there).
//!
//! Speed on a CPU comes from doing less than transformers does for the same scores: texts are
//! grouped by length instead of padded to the longest, the last encoder layer runs only at the
//! pooled row, sentences repeated within a batch of pairs are encoded once, images of several
//! pairs share one batch (candle's matmul repacks the weights on every call, so one image at a
//! time costs ≈2.3× per image); and from element-wise ops done in place on the CPU. The `avx512`
//! feature turns on the AVX-512 kernels of the matmul crate under candle (≈1.4× on the matmuls
//! of a Xeon with AVX-512); `scripts/bench_clip.sh` measures both builds against transformers.
//!
//! ```no_run
//! # fn main() -> dama_clip::Result<()> {
//! use candle_core::{DType, Device};
//! let scorer = dama_clip::ClipScorer::load("clip-vit-base-patch32".as_ref(), &Device::Cpu, DType::F32)?;
//! let image = image::open("cat.jpg").expect("an image");
//! let scores = scorer.score_pair(&image, &["A cat sits on a mat."], &["A dog sits on a mat."])?;
//! println!("{:?} {:?}", scores.chosen, scores.rejected);
//! # Ok(()) }
//! ```

mod attention;
pub mod config;
mod encoder;
pub mod error;
mod fast;
pub mod load;
pub mod model;
pub mod preprocess;
pub mod resample;
pub mod score;
pub mod text;
pub mod tokenizer;
pub mod train;
pub mod vision;

pub use config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use error::{ClipError, Result};
pub use model::ClipModel;
pub use preprocess::{ImageProcessor, expand_to_square};
pub use score::{ClipScorer, PairInput, PairScores, ScorerOptions};
pub use text::ClipTextTransformer;
pub use tokenizer::{ClipTokenizer, word_level_tokenizer_json};
pub use train::{TinyClipSpec, TrainableClip, contrastive_loss};
pub use vision::ClipVisionTransformer;

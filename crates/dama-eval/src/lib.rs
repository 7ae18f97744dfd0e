//! Hallucination metrics computed as their reference code computes them, offline:
//!
//! - [`objhal`]: Object HalBench CHAIR, the RLHF-V / RLAIF-V protocol (CHAIRs, CHAIRs_refine,
//!   CHAIRi, object recall), with their synonym list and multi-word rules;
//! - [`amber`]: AMBER's discriminative (accuracy, precision, recall, F1) and generative
//!   (CHAIR, Cover, Hal, Cog) scores and the AMBER score;
//! - [`judge`]: LLM-judged benchmarks (MMHal-Bench's rubric) over an OpenAI-compatible endpoint,
//!   answers cached on disk;
//! - [`nlp`]: the NLTK pieces those need (`word_tokenize`, WordNet noun lemmas, `pos_tag`).
//!
//! Answers come from [`answers`]: the JSONL of `dama-native generate`, or the benchmarks' own
//! answer files. Nothing here generates answers; [`answers::AnswerSource`] is the seam where a
//! generator plugs in.

pub mod amber;
pub mod answers;
pub mod error;
pub mod judge;
pub mod llm;
pub mod nlp;
pub mod objhal;

pub use error::{EvalError, Location};

//! LLM-judged benchmarks: a rubric prompt per answer, sent to an OpenAI-compatible endpoint
//! (answers cached on disk, so a rerun costs nothing), the rating parsed from the reply.
//!
//! [`mmhal`]: MMHal-Bench (Sun et al. 2023, LLaVA-RLHF), 96 questions in 8 types, rated 0–6 by
//! GPT-4 with the benchmark's published rubric; a rating under 3 is a hallucination.
//!
//! [`llava_bench`]: LLaVA-Bench, the model's answer scored 1–10 against a reference answer
//! with LLaVA's rubric per category; the relative score is the ratio of the means.

pub mod llava_bench;
pub mod mmhal;

pub use llava_bench::{LlavaReport, LlavaSummary};
pub use mmhal::{MmhalRecord, MmhalReport, MmhalSummary};

//! LLM-judged benchmarks: a rubric prompt per answer, sent to an OpenAI-compatible endpoint
//! (answers cached on disk, so a rerun costs nothing), the rating parsed from the reply.
//!
//! [`mmhal`]: MMHal-Bench (Sun et al. 2023, LLaVA-RLHF), 96 questions in 8 types, rated 0–6 by
//! GPT-4 with the benchmark's published rubric; a rating under 3 is a hallucination.

pub mod mmhal;

pub use mmhal::{MmhalRecord, MmhalReport, MmhalSummary};

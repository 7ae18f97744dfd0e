//! Sub-sentence splitters (paper §3.1, step 1): each answer becomes short self-contained
//! statements, each of which CLIP scores against the image.
//!
//! - [`RuleSplitter`] (`rules-v1`): deterministic, offline, the default.
//! - `LlmSplitter` (feature `llm`, native): the paper's Appendix A.1 prompt sent to an
//!   OpenAI-compatible chat endpoint, as the authors did with LLaMA-3.

#[cfg(all(feature = "llm", not(target_arch = "wasm32")))]
pub mod llm;
pub mod rules;

pub use rules::{CLIP_CONTEXT, RuleSplitter, estimate_clip_tokens};

use crate::record::{PreferencePair, SubSentences};

/// Splits one answer (to its question) into sub-sentences.
pub trait Splitter {
    /// How the annotated header names this splitter: `rules-v1`, `llm:<model>`.
    fn name(&self) -> String;

    fn split(&self, question: &str, answer: &str) -> Result<Vec<String>, SplitError>;

    /// Both answers of a pair; an error names the pair and the answer.
    fn split_pair(&self, pair: &PreferencePair) -> Result<SubSentences, SplitError> {
        let side = |answer: &str, which: &'static str| {
            self.split(&pair.question, answer)
                .map_err(|e| SplitError::Pair {
                    id: pair.id.clone(),
                    answer: which,
                    error: Box::new(e),
                })
        };
        Ok(SubSentences {
            chosen: side(&pair.chosen, "chosen")?,
            rejected: side(&pair.rejected, "rejected")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("pair `{id}`, {answer} answer: {error}")]
    Pair {
        id: String,
        answer: &'static str,
        error: Box<SplitError>,
    },
    /// The endpoint could not be reached or kept failing after every retry.
    #[error("LLM request to {url} failed after {attempts} attempt(s): {why}")]
    Request {
        url: String,
        attempts: u32,
        why: String,
    },
    /// The endpoint answered, but not with a "### Facts:" list.
    #[error(
        "the LLM's answer has no usable \"### Facts:\" list: {why}; answer begins: {excerpt:?}"
    )]
    Malformed { why: String, excerpt: String },
    #[error("LLM splitter configuration: {0}")]
    Config(String),
    #[error("LLM answer cache {path}: {why}")]
    Cache { path: String, why: String },
}

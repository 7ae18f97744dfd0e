//! The one error type of the crate. Every variant names the input it refers to, so that the
//! trainer, the explain example and the browser can tell the user which field or pair is wrong.

use crate::combine::Mode;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("the batch is empty: a step needs at least one preference pair")]
    EmptyBatch,
    #[error("`{field}` has {got} entries, expected {expected} (one per pair)")]
    LengthMismatch {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("`{field}[{index}]` is not finite ({value})")]
    NonFinite {
        field: &'static str,
        index: usize,
        value: f64,
    },
    #[error("keep (K) = {keep} is outside 1..={n} for a batch of {n} pairs")]
    KeepOutOfRange { keep: usize, n: usize },
    #[error("`{name}` = {value} is invalid: {why}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        why: &'static str,
    },
    #[error(
        "mode `{mode}` needs the per-pair data hardness α_D, and none was given (use `dpo` or `mdpo`, or score the dataset first)"
    )]
    MissingAlphaD { mode: Mode },
    #[error("the forced mask keeps no pair")]
    EmptyForcedMask,
    #[error("the raw-ratio δ is undefined: the rejected sub-sentences' CLIP scores sum to zero")]
    ZeroRejectedScoreSum,
    #[error("cannot average δ over an empty dataset")]
    EmptyDataset,
    #[error(
        "α_M = σ({batch_gap})/σ(ḡ = {ema_gap}) is not finite: the reward-gap EMA is far from the batch's gaps, the run has diverged"
    )]
    AlphaMNotFinite { batch_gap: f64, ema_gap: f64 },
}

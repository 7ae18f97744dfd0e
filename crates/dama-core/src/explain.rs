//! The request and answer of `cargo run -p dama-core --example explain`: one global batch in,
//! every intermediate quantity out, for people who check our numbers against their own.
//!
//! Kept in the library (not in the example) so that other front ends, such as the browser
//! explorer, answer the same format with the same code.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::combine::{Combine, Mode};
use crate::data_aware::{DeltaEdge, Estimator, alpha_d, delta};
use crate::error::CoreError;
use crate::model_aware::{Filter, Preset};
use crate::num::Real;
use crate::sampling::Sampling;
use crate::stats::Summary;
use crate::step::{DamaConfig, DamaState, StepInput, step};

/// The float type the batch is computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    /// What the trainer uses.
    #[default]
    F32,
    F64,
}

/// CLIP scores of one pair's sub-sentences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairScores {
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
}

fn default_beta() -> f64 {
    0.1
}

fn default_gamma() -> f64 {
    0.9
}

/// One line of input. Omitted fields take the paper's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub preset: Preset,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub combine: Combine<f64>,
    #[serde(default = "default_beta")]
    pub beta: f64,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// K; `null` or absent → floor(0.8·N).
    #[serde(default)]
    pub keep: Option<usize>,
    /// ḡ before the step.
    #[serde(default)]
    pub ema_gap: f64,
    pub policy_chosen: Vec<f64>,
    pub policy_rejected: Vec<f64>,
    pub ref_chosen: Vec<f64>,
    pub ref_rejected: Vec<f64>,
    /// δ per pair, or …
    #[serde(default)]
    pub delta: Option<Vec<f64>>,
    /// … the CLIP scores per pair, turned into δ with `estimator`.
    #[serde(default)]
    pub scores: Option<Vec<PairScores>>,
    #[serde(default)]
    pub estimator: Estimator,
    /// δ̄ of the dataset; required with `delta` or `scores`.
    #[serde(default)]
    pub delta_mean: Option<f64>,
    /// Forces the kept set M.
    #[serde(default)]
    pub mask: Option<Vec<bool>>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub dtype: Dtype,
}

/// The statistics of the step, flattened for one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainStats {
    pub beta_d: Summary<f64>,
    pub beta_m: Summary<f64>,
    pub beta_c: Summary<f64>,
    pub rewards_chosen: f64,
    pub rewards_rejected: f64,
    pub rewards_margins: f64,
    pub rewards_accuracy: f64,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub margins: Vec<f64>,
    pub delta: Option<Vec<f64>>,
    pub delta_edge: Option<Vec<DeltaEdge>>,
    pub alpha_d: Vec<f64>,
    pub alpha_m: f64,
    pub beta: Vec<f64>,
    pub mask: Vec<bool>,
    pub drawn: Vec<usize>,
    pub sampling: Sampling,
    pub loss: f64,
    pub grad_margins: Vec<f64>,
    pub ema_gap_before: f64,
    /// ḡ after the step.
    pub ema_gap: f64,
    pub kept: usize,
    pub clamped: usize,
    pub stats: ExplainStats,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("`{field}`: {message}")]
    Field {
        field: &'static str,
        message: &'static str,
    },
    #[error("`scores[{index}]`: {error}")]
    Scores { index: usize, error: CoreError },
}

/// Answers one request in the float type it asks for.
pub fn explain(req: &Request) -> Result<Response, ExplainError> {
    match req.dtype {
        Dtype::F32 => explain_in::<f32>(req),
        Dtype::F64 => explain_in::<f64>(req),
    }
}

fn cast<F: Real>(xs: &[f64]) -> Vec<F> {
    xs.iter().map(|&x| F::of(x)).collect()
}

/// The f64 whose shortest decimal is the shortest decimal of `x`: an f32 0.12 prints as 0.12,
/// not 0.11999999731779099, and still parses back to the same f32.
fn report<F: Real>(x: F) -> f64 {
    alloc::format!("{x}").parse().unwrap_or(x.f64())
}

fn widen<F: Real>(xs: &[F]) -> Vec<f64> {
    xs.iter().map(|&x| report(x)).collect()
}

/// δ per pair (and the edge case that decided it, if scores were given), in `F`.
#[allow(clippy::type_complexity)]
fn deltas<F: Real>(
    req: &Request,
    n: usize,
) -> Result<Option<(Vec<F>, Option<Vec<DeltaEdge>>)>, ExplainError> {
    let field = |field, message| ExplainError::Field { field, message };
    match (&req.delta, &req.scores) {
        (Some(_), Some(_)) => Err(field("delta", "give either `delta` or `scores`, not both")),
        (None, None) => Ok(None),
        (Some(d), None) => {
            if d.len() != n {
                return Err(CoreError::LengthMismatch {
                    field: "delta",
                    expected: n,
                    got: d.len(),
                }
                .into());
            }
            Ok(Some((cast(d), None)))
        }
        (None, Some(scores)) => {
            if scores.len() != n {
                return Err(CoreError::LengthMismatch {
                    field: "scores",
                    expected: n,
                    got: scores.len(),
                }
                .into());
            }
            let mut values = Vec::with_capacity(n);
            let mut edges = Vec::with_capacity(n);
            for (index, s) in scores.iter().enumerate() {
                let h = delta::<F>(&cast(&s.chosen), &cast(&s.rejected), req.estimator)
                    .map_err(|error| ExplainError::Scores { index, error })?;
                values.push(h.delta);
                edges.push(h.edge);
            }
            Ok(Some((values, Some(edges))))
        }
    }
}

fn explain_in<F: Real>(req: &Request) -> Result<Response, ExplainError> {
    let n = req.policy_chosen.len();
    let deltas = deltas::<F>(req, n)?;
    let alpha_d: Option<Vec<F>> = match &deltas {
        None => None,
        Some((d, _)) => {
            let mean = req.delta_mean.ok_or(ExplainError::Field {
                field: "delta_mean",
                message: "δ̄ of the dataset is required with `delta` or `scores`",
            })?;
            Some(d.iter().map(|&x| alpha_d(x, F::of(mean))).collect())
        }
    };
    let combine = match req.combine {
        Combine::Product => Combine::Product,
        Combine::WeightedSum(rho) => Combine::WeightedSum(F::of(rho)),
    };
    let cfg = DamaConfig {
        mode: req.mode,
        preset: req.preset,
        filter: req.filter,
        combine,
        beta: F::of(req.beta),
        gamma: F::of(req.gamma),
        keep: req.keep,
    };
    let mut state = DamaState::<F>::new(req.seed);
    state.ema_gap = F::of(req.ema_gap);
    let (pc, pr, rc, rr) = (
        cast(&req.policy_chosen),
        cast(&req.policy_rejected),
        cast(&req.ref_chosen),
        cast(&req.ref_rejected),
    );
    let input = StepInput {
        policy_chosen: &pc,
        policy_rejected: &pr,
        ref_chosen: &rc,
        ref_rejected: &rr,
        alpha_d: alpha_d.as_deref(),
        forced_mask: req.mask.as_deref(),
    };
    let out = step(&cfg, &mut state, &input)?;
    let s = out.stats;
    let (delta, delta_edge) = match deltas {
        None => (None, None),
        Some((d, e)) => (Some(widen(&d)), e),
    };
    Ok(Response {
        margins: widen(&out.margins),
        delta,
        delta_edge,
        alpha_d: widen(&out.alpha_d),
        alpha_m: report(out.alpha_m),
        beta: widen(&out.beta),
        mask: out.keep_mask,
        drawn: out.drawn,
        sampling: out.sampling,
        loss: report(out.loss),
        grad_margins: widen(&out.grad_margins),
        ema_gap_before: report(out.ema_gap_before),
        ema_gap: report(out.ema_gap_after),
        kept: s.kept,
        clamped: s.clamped,
        stats: ExplainStats {
            beta_d: s.beta_d.map(report),
            beta_m: s.beta_m.map(report),
            beta_c: s.beta_c.map(report),
            rewards_chosen: report(s.rewards.chosen),
            rewards_rejected: report(s.rewards.rejected),
            rewards_margins: report(s.rewards.margins),
            rewards_accuracy: report(s.rewards.accuracy),
        },
    })
}

//! One optimisation step's worth of DAMA maths over a global batch: from the four log-prob sums
//! per pair (and α_D) to β_C, the mask, the loss, ∂L/∂h_i, the new ḡ and the statistics.
//!
//! The trainer calls [`step`] once per global batch with log-probs computed without gradients,
//! then backpropagates Σ_i grad_margins_i·h_i(θ) over micro-batches.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::combine::{Combine, Mode, pair_beta};
use crate::error::CoreError;
use crate::loss::masked_dpo_loss;
use crate::model_aware::{Filter, ModelAwareParams, Preset, default_keep, model_aware};
use crate::num::Real;
use crate::rng::Xoshiro256;
use crate::sampling::Sampling;
use crate::stats::{Rewards, Summary};

/// Hyper-parameters of the DAMA loss. `Default` is the paper's setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DamaConfig<F> {
    pub mode: Mode,
    pub preset: Preset,
    pub filter: Filter,
    pub combine: Combine<F>,
    /// Base β of Eq. 2 (0.1).
    pub beta: F,
    /// EMA momentum γ of Eq. 14 (0.9).
    pub gamma: F,
    /// K, pairs kept per global batch; `None` → floor(0.8·N).
    pub keep: Option<usize>,
}

impl<F: Real> Default for DamaConfig<F> {
    fn default() -> Self {
        Self {
            mode: Mode::Dama,
            preset: Preset::Official,
            filter: Filter::Both,
            combine: Combine::Product,
            beta: F::of(0.1),
            gamma: F::of(0.9),
            keep: None,
        }
    }
}

impl<F: Real> DamaConfig<F> {
    /// Checks the parameters that do not depend on the batch.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |name, value: F, why| {
            Err(CoreError::InvalidParameter {
                name,
                value: value.f64(),
                why,
            })
        };
        if !(self.beta > F::zero() && self.beta.is_finite()) {
            return bad("beta", self.beta, "must be a finite number > 0");
        }
        if !(self.gamma >= F::zero() && self.gamma <= F::one()) {
            return bad("gamma", self.gamma, "must lie in [0, 1]");
        }
        if let Combine::WeightedSum(rho) = self.combine
            && !(rho >= F::zero() && rho <= F::one())
        {
            return bad("rho", rho, "must lie in [0, 1]");
        }
        Ok(())
    }
}

/// What persists between steps; a checkpoint saves it whole and a resume continues exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DamaState<F> {
    /// ḡ, the EMA of the reward gap (R̄ in the paper), initialised to 0.
    pub ema_gap: F,
    /// The stream of the `official` preset's weighted sampling.
    pub rng: Xoshiro256,
    /// Steps taken so far.
    pub steps: u64,
}

impl<F: Real> DamaState<F> {
    pub fn new(seed: u64) -> Self {
        Self {
            ema_gap: F::zero(),
            rng: Xoshiro256::seed_from(seed),
            steps: 0,
        }
    }
}

/// The per-pair inputs of one global batch (all of length N).
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a, F> {
    /// log π_θ(y_w | I, x), summed over the answer tokens and `</s>`.
    pub policy_chosen: &'a [F],
    pub policy_rejected: &'a [F],
    /// The same under the frozen reference model.
    pub ref_chosen: &'a [F],
    pub ref_rejected: &'a [F],
    /// α_D per pair; `None` means 1 (allowed only in modes `dpo` and `mdpo`).
    pub alpha_d: Option<&'a [F]>,
    /// Forces M (to replay a run of the authors' code); no random number is drawn.
    pub forced_mask: Option<&'a [bool]>,
}

/// Everything a step computes, per pair and for the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome<F> {
    /// h_i = (pw_i − rw_i) − (pl_i − rl_i)
    pub margins: Vec<F>,
    pub alpha_d: Vec<F>,
    /// α_M, computed in every mode, applied in `mdpo` and `dama`.
    pub alpha_m: F,
    /// The preset's gap: A_i (`official`) or R̃_i (`paper`).
    pub gaps: Vec<F>,
    /// The β of each pair in the loss (β, β_D, β_M or β_C by mode), after the clamp.
    pub beta: Vec<F>,
    /// M_i applied to the loss (all true in `dpo` and `d2po`).
    pub keep_mask: Vec<bool>,
    /// The model-aware selection, even where the mode does not apply it.
    pub selected: Vec<bool>,
    pub drawn: Vec<usize>,
    pub sampling: Sampling,
    pub loss: F,
    /// ∂loss/∂h_i: the per-pair weights of the backward pass.
    pub grad_margins: Vec<F>,
    pub ema_gap_before: F,
    pub ema_gap_after: F,
    pub stats: StepStats<F>,
}

/// The statistics docs/SPEC.md says to log every step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats<F> {
    /// β·α_D,i over all N pairs, before the clamp.
    pub beta_d: Summary<F>,
    /// β·α_M over all N pairs, before the clamp (one value, so std = 0).
    pub beta_m: Summary<F>,
    /// The β used in the loss over all N pairs (the authors log this whole vector).
    pub beta_c: Summary<F>,
    /// Pairs in the loss.
    pub kept: usize,
    /// Pairs whose adaptive β was raised to the 1e-3 floor.
    pub clamped: usize,
    pub rewards: Rewards<F>,
}

fn check_len<T>(field: &'static str, xs: &[T], n: usize) -> Result<(), CoreError> {
    if xs.len() != n {
        return Err(CoreError::LengthMismatch {
            field,
            expected: n,
            got: xs.len(),
        });
    }
    Ok(())
}

fn check_finite<F: Real>(field: &'static str, xs: &[F]) -> Result<(), CoreError> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(CoreError::NonFinite {
            field,
            index,
            value: xs[index].f64(),
        }),
        None => Ok(()),
    }
}

/// Runs the DAMA maths of one step and advances `state` (ḡ, random stream, step count) only if
/// it succeeds.
pub fn step<F: Real>(
    cfg: &DamaConfig<F>,
    state: &mut DamaState<F>,
    input: &StepInput<'_, F>,
) -> Result<StepOutcome<F>, CoreError> {
    cfg.validate()?;
    let n = input.policy_chosen.len();
    if n == 0 {
        return Err(CoreError::EmptyBatch);
    }
    let logps = [
        ("policy_chosen", input.policy_chosen),
        ("policy_rejected", input.policy_rejected),
        ("ref_chosen", input.ref_chosen),
        ("ref_rejected", input.ref_rejected),
    ];
    for (field, xs) in logps {
        check_len(field, xs, n)?;
        check_finite(field, xs)?;
    }
    let alpha_d: Vec<F> = match input.alpha_d {
        Some(a) => {
            check_len("alpha_d", a, n)?;
            check_finite("alpha_d", a)?;
            a.to_vec()
        }
        None if cfg.mode.uses_alpha_d() => return Err(CoreError::MissingAlphaD { mode: cfg.mode }),
        None => alloc::vec![F::one(); n],
    };
    if let Some(mask) = input.forced_mask {
        check_len("mask", mask, n)?;
    }
    let keep = cfg.keep.unwrap_or_else(|| default_keep(n));
    if keep == 0 || keep > n {
        return Err(CoreError::KeepOutOfRange { keep, n });
    }

    let chosen_logratio: Vec<F> = (0..n)
        .map(|i| input.policy_chosen[i] - input.ref_chosen[i])
        .collect();
    let rejected_logratio: Vec<F> = (0..n)
        .map(|i| input.policy_rejected[i] - input.ref_rejected[i])
        .collect();
    let margins: Vec<F> = (0..n)
        .map(|i| chosen_logratio[i] - rejected_logratio[i])
        .collect();
    check_finite("margins", &margins)?;

    let mut rng = state.rng.clone();
    let params = ModelAwareParams {
        preset: cfg.preset,
        filter: cfg.filter,
        beta: cfg.beta,
        gamma: cfg.gamma,
        keep,
    };
    let model = model_aware(
        &params,
        state.ema_gap,
        &margins,
        input.forced_mask,
        &mut rng,
    )?;

    let mut clamped = 0;
    let beta: Vec<F> = alpha_d
        .iter()
        .map(|&ad| {
            let (b, hit) = pair_beta(cfg.mode, cfg.combine, cfg.beta, ad, model.alpha_m);
            clamped += hit as usize;
            b
        })
        .collect();
    let keep_mask = if cfg.mode.uses_mask() {
        model.keep_mask.clone()
    } else {
        alloc::vec![true; n]
    };
    let (loss, grad_margins) = masked_dpo_loss(&margins, &beta, &keep_mask);
    if !loss.is_finite() {
        // Only reachable when α_M is huge but finite and some β_i·h_i overflows.
        let index = grad_margins
            .iter()
            .position(|g| !g.is_finite())
            .unwrap_or(0);
        return Err(CoreError::NonFinite {
            field: "loss",
            index,
            value: loss.f64(),
        });
    }

    let beta_d: Vec<F> = alpha_d.iter().map(|&a| cfg.beta * a).collect();
    let beta_m = alloc::vec![cfg.beta * model.alpha_m; n];
    let chosen_rewards: Vec<F> = chosen_logratio.iter().map(|&r| cfg.beta * r).collect();
    let rejected_rewards: Vec<F> = rejected_logratio.iter().map(|&r| cfg.beta * r).collect();
    let wins = (0..n)
        .filter(|&i| chosen_rewards[i] > rejected_rewards[i])
        .count();
    let (chosen, rejected) = (
        crate::num::mean(&chosen_rewards),
        crate::num::mean(&rejected_rewards),
    );
    let stats = StepStats {
        beta_d: Summary::of(&beta_d),
        beta_m: Summary::of(&beta_m),
        beta_c: Summary::of(&beta),
        kept: keep_mask.iter().filter(|&&m| m).count(),
        clamped,
        rewards: Rewards {
            chosen,
            rejected,
            margins: chosen - rejected,
            accuracy: F::of(wins as f64 / n as f64),
        },
    };

    let ema_gap_before = state.ema_gap;
    state.ema_gap = model.ema_gap_after;
    state.rng = rng;
    state.steps += 1;
    Ok(StepOutcome {
        margins,
        alpha_d,
        alpha_m: model.alpha_m,
        gaps: model.gaps,
        beta,
        keep_mask,
        selected: model.keep_mask,
        drawn: model.drawn,
        sampling: model.sampling,
        loss,
        grad_margins,
        ema_gap_before,
        ema_gap_after: model.ema_gap_after,
        stats,
    })
}

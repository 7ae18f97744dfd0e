//! Model-aware part (paper §3.2, Eqs. 8–14): which pairs of the global batch are kept (the
//! mask M), how responsive the model is right now (α_M), and the moving average ḡ of the
//! reward gap that both are measured against.
//!
//! Two presets, because the paper and the authors' released code disagree (docs/SPEC.md, section 4):
//! `official` works on the unscaled margin A_i = h_i and samples the kept pairs at random with
//! weights exp(−½(A_i − ḡ)²); `paper` follows Eqs. 8–14 literally, with R_i = β·h_i normalised
//! by ḡ and a deterministic "K nearest to ḡ" rule.

use alloc::vec::Vec;
use core::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::num::{Real, log_mean_exp, log_sigmoid, mean, sigmoid_ratio};
use crate::rng::Xoshiro256;
use crate::sampling::{Sampling, weighted_without_replacement};

/// Below this |ḡ| the `paper` preset does not divide by ḡ (Eq. 9 is undefined at ḡ = 0).
pub const PAPER_EMA_EPS: f64 = 1e-6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The authors' released training code; it produced the published numbers.
    #[default]
    Official,
    /// Eqs. 8–14 as printed.
    Paper,
}

/// Table 3's filter ablation, applied to the preset's gap (A_i or R̃_i).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Keep all N pairs.
    None,
    /// Drop the N−K smallest gaps.
    Bottom,
    /// Drop the N−K largest gaps.
    Top,
    /// Drop both extremes: the preset's own rule (weighted sampling, or K nearest to ḡ).
    #[default]
    Both,
}

crate::named!(Preset, "preset", {
    Official => "official",
    Paper => "paper",
});

crate::named!(Filter, "filter", {
    None => "none",
    Bottom => "bottom",
    Top => "top",
    Both => "both",
});

/// K when the user gives none: floor(0.8·N) as in the authors' code (12 of 16), at least 1.
pub fn default_keep(n: usize) -> usize {
    (4 * n / 5).max(1)
}

/// The model-aware quantities of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelAware<F> {
    /// The preset's gap per pair: A_i = h_i (`official`) or R̃_i (`paper`).
    pub gaps: Vec<F>,
    /// M_i: the pair enters the loss (modes `mdpo` and `dama`).
    pub keep_mask: Vec<bool>,
    /// The kept indices as chosen: in draw order, with repeats in the uniform fallback;
    /// ascending otherwise. α_M of the `official` preset averages over this list.
    pub drawn: Vec<usize>,
    pub sampling: Sampling,
    /// Eq. 12 (`paper`), or mean σ(A_i) over the drawn pairs / σ(ḡ) (`official`).
    pub alpha_m: F,
    /// ḡ after the step (Eq. 14, or the mean of all A_i for `official`).
    pub ema_gap_after: F,
}

/// The hyper-parameters the model-aware part needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelAwareParams<F> {
    pub preset: Preset,
    pub filter: Filter,
    /// β (only the `paper` preset scales its gap by it).
    pub beta: F,
    /// EMA momentum γ.
    pub gamma: F,
    /// K, pairs kept (1..=N).
    pub keep: usize,
}

/// Computes mask, α_M and the updated ḡ from the batch's margins h_i (finite, one per pair).
///
/// `forced_mask` replaces the preset's choice of kept pairs and draws no random number. The
/// random stream is only used by `official` with the `both` filter.
pub fn model_aware<F: Real>(
    params: &ModelAwareParams<F>,
    ema_gap: F,
    margins: &[F],
    forced_mask: Option<&[bool]>,
    rng: &mut Xoshiro256,
) -> Result<ModelAware<F>, CoreError> {
    let ModelAwareParams {
        preset,
        filter,
        beta,
        gamma,
        keep,
    } = *params;
    let n = margins.len();
    let gaps: Vec<F> = match preset {
        Preset::Official => margins.to_vec(),
        Preset::Paper => {
            let normalise = ema_gap.abs() >= F::of(PAPER_EMA_EPS);
            margins
                .iter()
                .map(|&h| {
                    if normalise {
                        beta * h / ema_gap
                    } else {
                        beta * h
                    }
                })
                .collect()
        }
    };

    let (drawn, sampling) = if let Some(mask) = forced_mask {
        let drawn: Vec<usize> = (0..n).filter(|&i| mask[i]).collect();
        if drawn.is_empty() {
            return Err(CoreError::EmptyForcedMask);
        }
        (drawn, Sampling::Forced)
    } else {
        match (filter, preset) {
            (Filter::None, _) => ((0..n).collect(), Sampling::Deterministic),
            (Filter::Bottom, _) => (
                first_k(&gaps, keep, |a, b| b.partial_cmp(a)),
                Sampling::Deterministic,
            ),
            (Filter::Top, _) => (
                first_k(&gaps, keep, |a, b| a.partial_cmp(b)),
                Sampling::Deterministic,
            ),
            (Filter::Both, Preset::Official) => {
                let half = F::of(0.5);
                let weights: Vec<F> = gaps
                    .iter()
                    .map(|&a| (-(half * (a - ema_gap) * (a - ema_gap))).exp_())
                    .collect();
                weighted_without_replacement(&weights, keep, rng)
            }
            (Filter::Both, Preset::Paper) => {
                let dist: Vec<F> = gaps
                    .iter()
                    .map(|&r| (r - ema_gap) * (r - ema_gap))
                    .collect();
                (
                    first_k(&dist, keep, |a, b| a.partial_cmp(b)),
                    Sampling::Deterministic,
                )
            }
        }
    };
    let mut keep_mask = alloc::vec![false; n];
    for &i in &drawn {
        keep_mask[i] = true;
    }

    let one_minus_gamma = F::one() - gamma;
    let (alpha_m, batch_gap, ema_gap_after) = match preset {
        Preset::Official => {
            // mean_{drawn} σ(A_i) / σ(ḡ), in log space so that underflowed sigmoids still divide.
            let log_mean = log_mean_exp(drawn.iter().map(|&i| log_sigmoid(gaps[i])));
            let alpha_m = (log_mean - log_sigmoid(ema_gap)).exp_();
            let batch_mean = mean(&gaps);
            (
                alpha_m,
                log_mean.exp_(),
                gamma * ema_gap + one_minus_gamma * batch_mean,
            )
        }
        Preset::Paper => {
            let kept: Vec<F> = drawn.iter().map(|&i| gaps[i]).collect();
            let r_b = mean(&kept); // Eq. 11, averaged over the K kept pairs
            (
                sigmoid_ratio(r_b, ema_gap),
                r_b,
                gamma * ema_gap + one_minus_gamma * r_b,
            )
        }
    };
    if !alpha_m.is_finite() {
        return Err(CoreError::AlphaMNotFinite {
            batch_gap: batch_gap.f64(),
            ema_gap: ema_gap.f64(),
        });
    }
    Ok(ModelAware {
        gaps,
        keep_mask,
        drawn,
        sampling,
        alpha_m,
        ema_gap_after,
    })
}

/// The `k` indices that come first under `order`, ties to the lower index; returned ascending.
fn first_k<F: Real>(
    values: &[F],
    k: usize,
    order: impl Fn(&F, &F) -> Option<Ordering>,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    // A stable sort keeps equal values in index order: ties go to the lower index.
    idx.sort_by(|&a, &b| order(&values[a], &values[b]).unwrap_or(Ordering::Equal));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::num::sigmoid;

    fn params<F>(
        preset: Preset,
        filter: Filter,
        beta: F,
        gamma: F,
        keep: usize,
    ) -> ModelAwareParams<F> {
        ModelAwareParams {
            preset,
            filter,
            beta,
            gamma,
            keep,
        }
    }

    fn run(preset: Preset, filter: Filter, keep: usize, ema: f64, h: &[f64]) -> ModelAware<f64> {
        let mut rng = Xoshiro256::seed_from(0);
        model_aware(
            &params(preset, filter, 0.1, 0.9, keep),
            ema,
            h,
            None,
            &mut rng,
        )
        .unwrap()
    }

    #[test]
    fn default_keep_is_floor_of_four_fifths() {
        assert_eq!(default_keep(16), 12);
        assert_eq!(default_keep(10), 8);
        assert_eq!(default_keep(4096), 3276);
        assert_eq!(default_keep(1), 1);
        assert_eq!(default_keep(2), 1);
    }

    #[test]
    fn paper_preset_by_hand() {
        // ḡ = 2: R = 0.1·h = [4, 2, 0.2, 20, 1.8]; R̃ = R/2 = [2, 1, 0.1, 10, 0.9];
        // d = (R̃ − 2)² = [0, 1, 3.61, 64, 1.21]; K = 3 keeps {0, 1, 4}.
        let m = run(
            Preset::Paper,
            Filter::Both,
            3,
            2.0,
            &[40.0, 20.0, 2.0, 200.0, 18.0],
        );
        assert_eq!(m.keep_mask, [true, true, false, false, true]);
        let r_b = (2.0 + 1.0 + 0.9) / 3.0;
        assert!((m.alpha_m - sigmoid(r_b) / sigmoid(2.0)).abs() < 1e-14);
        assert!((m.ema_gap_after - (0.9 * 2.0 + 0.1 * r_b)).abs() < 1e-14);
        assert_eq!(m.sampling, Sampling::Deterministic);
    }

    #[test]
    fn paper_preset_does_not_divide_by_a_zero_ema() {
        let m = run(Preset::Paper, Filter::None, 2, 0.0, &[10.0, -30.0]);
        assert_eq!(m.gaps, [1.0, -3.0]);
        assert!((m.alpha_m - sigmoid(-1.0) / 0.5).abs() < 1e-14);
        assert!((m.ema_gap_after + 0.1).abs() < 1e-15);
    }

    #[test]
    fn official_alpha_m_and_ema_by_hand() {
        // Filter none keeps all: α_M = mean σ(A) / σ(ḡ); ḡ' = 0.9ḡ + 0.1·mean A.
        let h = [1.0, -2.0, 0.5];
        let m = run(Preset::Official, Filter::None, 3, 0.4, &h);
        let expected = (sigmoid(1.0) + sigmoid(-2.0) + sigmoid(0.5)) / 3.0 / sigmoid(0.4);
        assert!((m.alpha_m - expected).abs() < 1e-14);
        assert!((m.ema_gap_after - (0.9 * 0.4 + 0.1 * (-0.5 / 3.0))).abs() < 1e-15);
    }

    #[test]
    fn official_ema_uses_all_pairs_not_only_the_kept_ones() {
        let h = [1.0, 2.0, 3.0, 4.0, 100.0];
        let m = run(Preset::Official, Filter::Both, 4, 0.0, &h);
        assert!((m.ema_gap_after - 0.1 * 22.0).abs() < 1e-12);
        assert_eq!(m.keep_mask.iter().filter(|&&k| k).count(), 4);
        assert!(
            !m.keep_mask[4],
            "the outlier has weight e^−5000 = 0 and is drawn last"
        );
    }

    #[test]
    fn bottom_and_top_filters_with_ties_to_the_lower_index() {
        let h = [3.0, 1.0, 3.0, 1.0, 2.0];
        // bottom drops the N−K smallest: keeps the 3 largest; among the two 1.0 none survives,
        // among 3.0, 3.0, 2.0 all do.
        assert_eq!(
            run(Preset::Official, Filter::Bottom, 3, 0.0, &h).keep_mask,
            [true, false, true, false, true]
        );
        // keep 2 of the largest: the two 3.0.
        assert_eq!(
            run(Preset::Official, Filter::Bottom, 2, 0.0, &h).drawn,
            [0, 2]
        );
        // top keeps the smallest; with K = 1 the tie between indices 1 and 3 goes to 1.
        assert_eq!(run(Preset::Official, Filter::Top, 1, 0.0, &h).drawn, [1]);
        assert_eq!(
            run(Preset::Official, Filter::Top, 3, 0.0, &h).drawn,
            [1, 3, 4]
        );
    }

    #[test]
    fn forced_mask_draws_nothing_and_decides_alpha_m() {
        let h = [0.2f64, -0.7, 1.5, 0.0];
        let mask = [true, false, true, false];
        let mut rng = Xoshiro256::seed_from(3);
        let before = rng.clone();
        let m = model_aware(
            &params(Preset::Official, Filter::Both, 0.1, 0.9, 3),
            0.1,
            &h,
            Some(&mask),
            &mut rng,
        )
        .unwrap();
        assert_eq!(rng, before);
        assert_eq!(m.sampling, Sampling::Forced);
        assert_eq!(m.drawn, [0, 2]);
        let expected = (sigmoid(0.2) + sigmoid(1.5)) / 2.0 / sigmoid(0.1);
        assert!((m.alpha_m - expected).abs() < 1e-14);
        let none = [false; 4];
        let err = model_aware(
            &params(Preset::Official, Filter::Both, 0.1, 0.9, 3),
            0.1,
            &h,
            Some(&none),
            &mut rng,
        );
        assert_eq!(err, Err(CoreError::EmptyForcedMask));
    }

    #[test]
    fn fallback_averages_alpha_m_over_draws_with_repeats() {
        let h = [100.0f64, -100.0, 300.0];
        let mut rng = Xoshiro256::seed_from(11);
        let m = model_aware(
            &params(Preset::Official, Filter::Both, 0.1, 0.9, 2),
            0.0,
            &h,
            None,
            &mut rng,
        )
        .unwrap();
        assert_eq!(m.sampling, Sampling::UniformWithReplacement);
        assert_eq!(m.drawn.len(), 2);
        let expected: f64 = m.drawn.iter().map(|&i| sigmoid(h[i])).sum::<f64>() / 2.0 / 0.5;
        assert!((m.alpha_m - expected).abs() < 1e-14);
    }

    #[test]
    fn extreme_margins_stay_finite_in_f32() {
        let h = [1e4f32, -1e4, 1e4, -1e4, 3.0];
        let mut rng = Xoshiro256::seed_from(2);
        let m = model_aware(
            &params(Preset::Official, Filter::Both, 0.1, 0.9, 4),
            0.0,
            &h,
            None,
            &mut rng,
        )
        .unwrap();
        assert!(m.alpha_m.is_finite() && m.ema_gap_after.is_finite());
        assert_eq!(
            m.drawn[0], 4,
            "the only pair with a non-zero weight is drawn first"
        );
        let p = model_aware(
            &params(Preset::Paper, Filter::Both, 0.1, 0.9, 4),
            1e-3,
            &h,
            None,
            &mut rng,
        )
        .unwrap();
        assert!(p.alpha_m.is_finite() && p.ema_gap_after.is_finite());
        // An EMA of −1e3 against a batch at 0 is a diverged run: α_M = e^{1000} is reported.
        let err = model_aware(
            &params(Preset::Official, Filter::None, 0.1, 0.9, 1),
            -1e3f32,
            &[0.0],
            None,
            &mut rng,
        );
        assert!(matches!(err, Err(CoreError::AlphaMNotFinite { .. })));
    }
}

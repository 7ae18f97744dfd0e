//! Data-aware part (paper §3.1, Eqs. 3–7): how hard a preference pair is, from the CLIP scores
//! of its sub-sentences, and the factor α_D that scales β for it.
//!
//! Hard pairs (δ small: the rejected answer looks about as grounded as the chosen one) get a
//! smaller β, so the policy may move further from the reference on them; easy pairs get a larger
//! β and are held closer, which is how DAMA avoids over-fitting the easy ones.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::num::{Real, sigmoid_ratio};

/// How the CLIP scores of the two answers become δ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Eqs. 4–5: one softmax over `[C_w ; C_l]`, δ = ΣP_w − ΣP_l ∈ [−1, 1]. The paper's method.
    #[default]
    Probs,
    /// Table 2's ablation "CLIP Scores": δ = ΣC_w / ΣC_l.
    RawRatio,
}

crate::named!(Estimator, "estimator", {
    Probs => "probs",
    RawRatio => "raw_ratio",
});

/// Which answer had no sub-sentence. Such pairs get a fixed δ (docs/SPEC.md, section 3, "Edge
/// cases") and are
/// counted, never dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaEdge {
    #[default]
    None,
    /// p = q = 0 → δ = 0.
    NoSubsentences,
    /// p = 0 → δ = −1.
    NoChosen,
    /// q = 0 → δ = +1.
    NoRejected,
}

/// δ of one pair and whether an edge case decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hardness<F> {
    pub delta: F,
    pub edge: DeltaEdge,
}

/// δ of one pair from the CLIP scores Γ(I, s) of the chosen (`scores_w`, p of them) and rejected
/// (`scores_l`, q) sub-sentences.
pub fn delta<F: Real>(
    scores_w: &[F],
    scores_l: &[F],
    estimator: Estimator,
) -> Result<Hardness<F>, CoreError> {
    for (field, scores) in [("chosen", scores_w), ("rejected", scores_l)] {
        if let Some((index, v)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CoreError::NonFinite {
                field,
                index,
                value: v.f64(),
            });
        }
    }
    let edge = match (scores_w.is_empty(), scores_l.is_empty()) {
        (true, true) => Some((DeltaEdge::NoSubsentences, F::zero())),
        (true, false) => Some((DeltaEdge::NoChosen, -F::one())),
        (false, true) => Some((DeltaEdge::NoRejected, F::one())),
        (false, false) => None,
    };
    if let Some((edge, delta)) = edge {
        return Ok(Hardness { delta, edge });
    }
    let delta = match estimator {
        Estimator::Probs => {
            // ΣP_w − ΣP_l = (S_w − S_l) / (S_w + S_l) with S = Σ e^{C − max}: the softmax's
            // normaliser cancels, and the max-shift keeps every exponential ≤ 1.
            let max = scores_w
                .iter()
                .chain(scores_l)
                .fold(F::neg_infinity(), |m, &c| m.max(c));
            let sum = |s: &[F]| s.iter().fold(F::zero(), |acc, &c| acc + (c - max).exp_());
            let (s_w, s_l) = (sum(scores_w), sum(scores_l));
            (s_w - s_l) / (s_w + s_l)
        }
        Estimator::RawRatio => {
            let sum = |s: &[F]| s.iter().fold(F::zero(), |acc, &c| acc + c);
            let s_l = sum(scores_l);
            if s_l == F::zero() {
                return Err(CoreError::ZeroRejectedScoreSum);
            }
            sum(scores_w) / s_l
        }
    };
    Ok(Hardness {
        delta,
        edge: DeltaEdge::None,
    })
}

/// The softmax probability of every sub-sentence (Eq. 4: one softmax over `[C_w ; C_l]`),
/// `(P_w, P_l)` in the order of the scores, summing to 1; δ (Eq. 5) is ΣP_w − ΣP_l. For
/// showing where a pair's hardness comes from; [`delta`] does not need the individual values.
/// Both lists empty gives two empty lists.
pub fn subsentence_probs<F: Real>(
    scores_w: &[F],
    scores_l: &[F],
) -> Result<(Vec<F>, Vec<F>), CoreError> {
    for (field, scores) in [("chosen", scores_w), ("rejected", scores_l)] {
        if let Some((index, v)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CoreError::NonFinite {
                field,
                index,
                value: v.f64(),
            });
        }
    }
    let max = scores_w
        .iter()
        .chain(scores_l)
        .fold(F::neg_infinity(), |m, &c| m.max(c));
    let e = |s: &[F]| -> Vec<F> { s.iter().map(|&c| (c - max).exp_()).collect() };
    let (mut p_w, mut p_l) = (e(scores_w), e(scores_l));
    let total = p_w.iter().chain(&p_l).fold(F::zero(), |a, &x| a + x);
    for p in p_w.iter_mut().chain(p_l.iter_mut()) {
        *p = *p / total;
    }
    Ok((p_w, p_l))
}

/// δ̄, the mean δ over the training set. It is stored with the dataset: the authors hard-code
/// their own value (0.0482190464911681), which is wrong for any other data.
pub fn delta_mean<F: Real>(deltas: &[F]) -> Result<F, CoreError> {
    if deltas.is_empty() {
        return Err(CoreError::EmptyDataset);
    }
    if let Some((index, v)) = deltas.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(CoreError::NonFinite {
            field: "delta",
            index,
            value: v.f64(),
        });
    }
    Ok(crate::num::mean(deltas))
}

/// Eq. 6: α_D = σ(δ) / σ(δ̄). Equals 1 for a pair of average hardness.
#[inline]
pub fn alpha_d<F: Real>(delta: F, delta_mean: F) -> F {
    sigmoid_ratio(delta, delta_mean)
}

/// How many pairs of a dataset each edge case decided; reported by every scorer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCounts {
    pub no_subsentences: usize,
    pub no_chosen: usize,
    pub no_rejected: usize,
}

impl EdgeCounts {
    pub fn add(&mut self, edge: DeltaEdge) {
        match edge {
            DeltaEdge::None => {}
            DeltaEdge::NoSubsentences => self.no_subsentences += 1,
            DeltaEdge::NoChosen => self.no_chosen += 1,
            DeltaEdge::NoRejected => self.no_rejected += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.no_subsentences + self.no_chosen + self.no_rejected
    }
}

/// The paper's Fig. 6 bands: the bottom 25% of δ are "hard-to-distinguish", the top 25% "easy",
/// the middle 50% "normal".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Hard,
    Normal,
    Easy,
}

/// The quartiles of δ over a dataset, which place each pair in a [`Band`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HardnessBands<F> {
    /// First quartile: pairs with δ below it are hard.
    pub q1: F,
    pub median: F,
    /// Third quartile: pairs with δ above it are easy.
    pub q3: F,
}

impl<F: Real> HardnessBands<F> {
    /// Quartiles with linear interpolation between order statistics (numpy's default).
    pub fn from_deltas(deltas: &[F]) -> Result<Self, CoreError> {
        delta_mean(deltas)?; // same validation: non-empty and finite
        let mut sorted: Vec<F> = deltas.to_vec();
        sorted.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let quantile = |q: f64| {
            let pos = q * (sorted.len() - 1) as f64;
            let (lo, frac) = (pos as usize, F::of(pos - (pos as usize) as f64));
            let hi = (lo + 1).min(sorted.len() - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        };
        Ok(Self {
            q1: quantile(0.25),
            median: quantile(0.5),
            q3: quantile(0.75),
        })
    }

    pub fn band(&self, delta: F) -> Band {
        if delta < self.q1 {
            Band::Hard
        } else if delta > self.q3 {
            Band::Easy
        } else {
            Band::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probs_delta_by_hand() {
        // C_w = [ln 3], C_l = [ln 1]: P = [3/4, 1/4], δ = 1/2.
        let h = delta(&[3f64.ln()], &[0.0], Estimator::Probs).unwrap();
        assert!((h.delta - 0.5).abs() < 1e-15);
        assert_eq!(h.edge, DeltaEdge::None);
        // Two chosen at 20, one rejected at 20: P = 1/3 each, δ = 2/3 − 1/3.
        let h = delta(&[20.0f64, 20.0], &[20.0], Estimator::Probs).unwrap();
        assert!((h.delta - 1.0 / 3.0).abs() < 1e-15);
        // Large CLIP logits (×100 scale) must not overflow.
        let h = delta(&[3000.0f32], &[2990.0], Estimator::Probs).unwrap();
        assert!((h.delta - (1.0 - 2.0 * crate::num::sigmoid(-10.0f32))).abs() < 1e-6);
    }

    #[test]
    fn raw_ratio_by_hand() {
        let h = delta(&[20.0f64, 10.0], &[15.0], Estimator::RawRatio).unwrap();
        assert_eq!(h.delta, 2.0);
        assert_eq!(
            delta(&[1.0f64], &[2.0, -2.0], Estimator::RawRatio),
            Err(CoreError::ZeroRejectedScoreSum)
        );
    }

    #[test]
    fn edge_cases_for_both_estimators() {
        for est in [Estimator::Probs, Estimator::RawRatio] {
            let e: [f64; 0] = [];
            assert_eq!(
                delta(&e, &e, est).unwrap(),
                Hardness {
                    delta: 0.0,
                    edge: DeltaEdge::NoSubsentences
                }
            );
            assert_eq!(
                delta(&e, &[1.0], est).unwrap(),
                Hardness {
                    delta: -1.0,
                    edge: DeltaEdge::NoChosen
                }
            );
            assert_eq!(
                delta(&[1.0], &e, est).unwrap(),
                Hardness {
                    delta: 1.0,
                    edge: DeltaEdge::NoRejected
                }
            );
        }
        let mut counts = EdgeCounts::default();
        for e in [
            DeltaEdge::None,
            DeltaEdge::NoChosen,
            DeltaEdge::NoChosen,
            DeltaEdge::NoRejected,
        ] {
            counts.add(e);
        }
        assert_eq!(
            (counts.no_chosen, counts.no_rejected, counts.total()),
            (2, 1, 3)
        );
    }

    #[test]
    fn non_finite_scores_name_the_side() {
        let err = delta(&[1.0f32], &[2.0, f32::NAN], Estimator::Probs).unwrap_err();
        assert!(matches!(
            err,
            CoreError::NonFinite {
                field: "rejected",
                index: 1,
                ..
            }
        ));
    }

    #[test]
    fn alpha_d_by_hand() {
        assert!((alpha_d(0.3f64, 0.3) - 1.0).abs() < 1e-15);
        let expected = (1.0 / (1.0 + (-0.5f64).exp())) / (1.0 / (1.0 + (-0.1f64).exp()));
        assert!((alpha_d(0.5f64, 0.1) - expected).abs() < 1e-15);
        // The authors' δ̄ with δ = ±1 gives the paper's Appendix A.2 range of β_D ≈ (0.052, 0.143).
        let dbar = 0.0482190464911681f64;
        assert!((0.1 * alpha_d(-1.0, dbar) - 0.0524).abs() < 1e-3);
        assert!((0.1 * alpha_d(1.0, dbar) - 0.1428).abs() < 1e-3);
    }

    #[test]
    fn delta_mean_and_bands() {
        assert_eq!(delta_mean::<f64>(&[]), Err(CoreError::EmptyDataset));
        assert_eq!(delta_mean(&[0.5f64, -0.25, 0.75]).unwrap(), 1.0 / 3.0);
        let bands = HardnessBands::from_deltas(&[4.0f64, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((bands.q1, bands.median, bands.q3), (1.75, 2.5, 3.25));
        assert_eq!(bands.band(1.0), Band::Hard);
        assert_eq!(bands.band(2.0), Band::Normal);
        assert_eq!(bands.band(4.0), Band::Easy);
    }

    #[test]
    fn subsentence_probs_are_the_softmax_and_give_delta() {
        let (w, l) = ([25.0f64, 24.0, 25.0], [20.0f64, 26.5]);
        let (pw, pl) = subsentence_probs(&w, &l).unwrap();
        let z: f64 = w.iter().chain(&l).map(|c| c.exp()).sum();
        for (p, c) in pw.iter().chain(&pl).zip(w.iter().chain(&l)) {
            assert!((p - c.exp() / z).abs() < 1e-15);
        }
        let d = delta(&w, &l, Estimator::Probs).unwrap().delta;
        assert!((pw.iter().sum::<f64>() - pl.iter().sum::<f64>() - d).abs() < 1e-15);
        // no overflow at CLIP's logit scale times large cosines
        let (pw, pl) = subsentence_probs(&[1e4f32], &[1e4 - 1.0]).unwrap();
        assert!((pw[0] + pl[0] - 1.0).abs() < 1e-6 && pw[0] > pl[0]);
        assert_eq!(
            subsentence_probs::<f64>(&[], &[]).unwrap(),
            (vec![], vec![])
        );
        assert!(subsentence_probs(&[f64::NAN], &[0.0]).is_err());
    }
}

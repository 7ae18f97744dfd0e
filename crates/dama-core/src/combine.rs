//! Combining (paper §3.3, Eqs. 15–16) and the four training modes of Table 1: which β each pair
//! of the loss gets.

use serde::{Deserialize, Serialize};

use crate::num::Real;

/// The authors' lower clamp on an adaptive β: `beta_used.clamp(min=1e-3)`.
pub const BETA_MIN: f64 = 1e-3;

/// Table 1's training modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Plain DPO: β fixed, every pair kept.
    Dpo,
    /// Data-aware: β_D,i = β·α_D,i, every pair kept.
    D2po,
    /// Model-aware: β_M = β·α_M, masked batch.
    Mdpo,
    /// Both: β_C,i = β·α_i, masked batch.
    #[default]
    Dama,
}

impl Mode {
    /// Whether the mask M applies to the loss (it is computed in every mode).
    pub fn uses_mask(self) -> bool {
        matches!(self, Mode::Mdpo | Mode::Dama)
    }

    /// Whether the per-pair data hardness α_D is needed.
    pub fn uses_alpha_d(self) -> bool {
        matches!(self, Mode::D2po | Mode::Dama)
    }
}

crate::named!(Mode, "mode", {
    Dpo => "dpo",
    D2po => "d2po",
    Mdpo => "mdpo",
    Dama => "dama",
});

/// How α_D,i and α_M become α_i in mode `dama`. JSON: `"product"` or `{"weighted_sum": ρ}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine<F> {
    /// Eq. 15: α_i = α_D,i · α_M.
    #[default]
    Product,
    /// Figs. 4–5's ablation: α_i = (1 − ρ)·α_M + ρ·α_D,i.
    WeightedSum(F),
}

impl<F: Real> Combine<F> {
    pub fn alpha(self, alpha_d: F, alpha_m: F) -> F {
        match self {
            Combine::Product => alpha_d * alpha_m,
            Combine::WeightedSum(rho) => (F::one() - rho) * alpha_m + rho * alpha_d,
        }
    }
}

/// The β pair i gets in the loss, and whether the clamp raised it.
///
/// `dpo` is plain DPO and is never clamped; the adaptive modes use max(β·α_i, 1e-3).
pub fn pair_beta<F: Real>(
    mode: Mode,
    combine: Combine<F>,
    beta: F,
    alpha_d: F,
    alpha_m: F,
) -> (F, bool) {
    let alpha = match mode {
        Mode::Dpo => return (beta, false),
        Mode::D2po => alpha_d,
        Mode::Mdpo => alpha_m,
        Mode::Dama => combine.alpha(alpha_d, alpha_m),
    };
    let raw = beta * alpha;
    let min = F::of(BETA_MIN);
    if raw < min { (min, true) } else { (raw, false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_picks_its_factor() {
        let (ad, am) = (1.2f64, 0.5);
        assert_eq!(
            pair_beta(Mode::Dpo, Combine::Product, 0.1, ad, am),
            (0.1, false)
        );
        assert!((pair_beta(Mode::D2po, Combine::Product, 0.1, ad, am).0 - 0.12).abs() < 1e-15);
        assert!((pair_beta(Mode::Mdpo, Combine::Product, 0.1, ad, am).0 - 0.05).abs() < 1e-15);
        assert!((pair_beta(Mode::Dama, Combine::Product, 0.1, ad, am).0 - 0.06).abs() < 1e-15);
        // ρ = 0.25: α = 0.75·0.5 + 0.25·1.2 = 0.675.
        assert!(
            (pair_beta(Mode::Dama, Combine::WeightedSum(0.25), 0.1, ad, am).0 - 0.0675).abs()
                < 1e-15
        );
    }

    #[test]
    fn weighted_sum_endpoints_are_mdpo_and_d2po() {
        let (ad, am) = (0.7f64, 1.3);
        assert_eq!(Combine::WeightedSum(0.0).alpha(ad, am), am);
        assert_eq!(Combine::WeightedSum(1.0).alpha(ad, am), ad);
    }

    #[test]
    fn clamp_bites_only_below_the_floor_and_never_in_dpo() {
        assert_eq!(
            pair_beta(Mode::Dama, Combine::Product, 0.1f64, 0.005, 1.0),
            (1e-3, true)
        );
        assert_eq!(
            pair_beta(Mode::Dama, Combine::Product, 0.1f64, 0.01, 1.0),
            (0.1 * 0.01, false)
        );
        assert_eq!(
            pair_beta(Mode::Dpo, Combine::Product, 1e-4f64, 1.0, 1.0),
            (1e-4, false)
        );
    }
}

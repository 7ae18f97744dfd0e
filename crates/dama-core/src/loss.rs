//! The masked DPO loss with per-pair β (Eq. 2 with β_C,i and M_i) and its gradient with
//! respect to each margin h_i.
//!
//! β and M carry no gradient, so ∂L/∂h_i is a closed form. The trainer backpropagates
//! Σ_i (∂L/∂h_i)·h_i(θ) with these numbers held fixed: the same gradient as the loss itself,
//! which is what lets a global batch be split into micro-batches (docs/SPEC.md,
//! "Gradient accumulation").

use alloc::vec::Vec;

use crate::num::{Real, log_sigmoid, sigmoid};

/// L = Σ_i M_i·(−log σ(β_i·h_i)) / max(Σ_i M_i, 1) and ∂L/∂h_i = −M_i·β_i·σ(−β_i·h_i) / max(ΣM, 1).
pub fn masked_dpo_loss<F: Real>(margins: &[F], beta: &[F], keep_mask: &[bool]) -> (F, Vec<F>) {
    debug_assert!(margins.len() == beta.len() && beta.len() == keep_mask.len());
    let kept = keep_mask.iter().filter(|&&m| m).count().max(1);
    let denom = F::of(kept as f64);
    let mut loss = F::zero();
    let grad = margins
        .iter()
        .zip(beta)
        .zip(keep_mask)
        .map(|((&h, &b), &m)| {
            if !m {
                return F::zero();
            }
            loss = loss - log_sigmoid(b * h);
            -(b * sigmoid(-(b * h))) / denom
        })
        .collect();
    (loss / denom, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // −log σ(0) = ln 2; −log σ(0.1·10) = ln(1 + e^−1).
        let (loss, grad) =
            masked_dpo_loss(&[0.0f64, 10.0, 5.0], &[0.1, 0.1, 0.2], &[true, true, false]);
        let expected = (2f64.ln() + (1.0 + (-1f64).exp()).ln()) / 2.0;
        assert!((loss - expected).abs() < 1e-15);
        assert!((grad[0] - (-0.1 * 0.5 / 2.0)).abs() < 1e-15);
        assert!((grad[1] - (-0.1 / (1.0 + 1f64.exp()) / 2.0)).abs() < 1e-15);
        assert_eq!(grad[2], 0.0);
    }

    #[test]
    fn empty_mask_gives_zero_loss_not_nan() {
        let (loss, grad) = masked_dpo_loss(&[1.0f32, 2.0], &[0.1, 0.1], &[false, false]);
        assert_eq!(loss, 0.0);
        assert_eq!(grad, [0.0, 0.0]);
    }

    #[test]
    fn finite_at_extreme_margins_in_f32() {
        let h = [1e4f32, -1e4, 1e4, -1e4];
        let b = [0.1f32, 0.1, 1e-3, 1e-3];
        let (loss, grad) = masked_dpo_loss(&h, &b, &[true; 4]);
        // Terms: 0, 1000, ≈4.5e-5, 10 + log1p(e^−10); mean ≈ 252.5.
        let expected = (1000.0 + 10.0 + (-10f64).exp().ln_1p() + (-10f64).exp().ln_1p()) / 4.0;
        assert!((loss as f64 - expected).abs() < 1e-3, "{loss}");
        assert!(grad.iter().all(|g| g.is_finite()));
        assert_eq!(grad[0], 0.0);
        assert!((grad[1] + 0.1 / 4.0).abs() < 1e-9);
    }
}

//! Scalar numerics shared by every formula.
//!
//! Everything in this crate is generic over [`Real`] (f32 or f64): the trainer computes per-pair
//! values in f32 as docs/SPEC.md asks, the golden tests and people checking our numbers use f64. The
//! sigmoid family is written so that it neither overflows nor loses the tails at |x| = 1e4.
//!
//! The transcendental functions are `libm`'s, called by name, never `f64::exp`: std's call the
//! platform's C library (glibc natively, a Rust port on wasm32), and num-traits switches to them
//! whenever any crate of a build turns its `std` feature on. Through `libm` the trainer, the
//! `score` command and the browser explorer compute the same δ, α_D and α_M to the last bit.

use num_traits::Float;

/// A float type the DAMA formulas run in: `f32` (the trainer) or `f64` (checks, golden values).
pub trait Real:
    Float + Default + core::fmt::Debug + core::fmt::Display + Send + Sync + 'static
{
    /// Converts a constant or a JSON number; rounds to nearest for f32.
    fn of(x: f64) -> Self;
    /// Widens to f64 for reporting and for the sampling keys.
    fn f64(self) -> f64;
    /// e^x, `libm`'s on every target.
    fn exp_(self) -> Self;
    /// ln x, `libm`'s on every target.
    fn ln_(self) -> Self;
    /// ln(1 + x), `libm`'s on every target.
    fn ln_1p_(self) -> Self;
}

impl Real for f32 {
    #[inline]
    fn exp_(self) -> Self {
        libm::expf(self)
    }
    #[inline]
    fn ln_(self) -> Self {
        libm::logf(self)
    }
    #[inline]
    fn ln_1p_(self) -> Self {
        libm::log1pf(self)
    }
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    #[inline]
    fn exp_(self) -> Self {
        libm::exp(self)
    }
    #[inline]
    fn ln_(self) -> Self {
        libm::log(self)
    }
    #[inline]
    fn ln_1p_(self) -> Self {
        libm::log1p(self)
    }
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
}

/// σ(x) = 1 / (1 + e^−x), evaluated on the side where the exponential cannot overflow.
#[inline]
pub fn sigmoid<F: Real>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp_())
    } else {
        let e = x.exp_();
        e / (F::one() + e)
    }
}

/// log σ(x) = min(x, 0) − log1p(e^−|x|) (docs/SPEC.md, "Numerics"): exact to the last bit in both
/// tails, where `σ(x).ln()` would return −inf for x ≪ 0.
#[inline]
pub fn log_sigmoid<F: Real>(x: F) -> F {
    x.min(F::zero()) - (-x.abs()).exp_().ln_1p_()
}

/// σ(a) / σ(b) computed as exp(log σ(a) − log σ(b)), so that a ratio of two underflowed
/// sigmoids (both ≈ 0 at large negative arguments) stays finite and correct. α_D (Eq. 6) and
/// α_M (Eq. 12) are such ratios.
#[inline]
pub fn sigmoid_ratio<F: Real>(a: F, b: F) -> F {
    (log_sigmoid(a) - log_sigmoid(b)).exp_()
}

/// log(mean_i e^{x_i}), shifted by the maximum. `xs` must not be empty.
pub fn log_mean_exp<F: Real>(xs: impl Iterator<Item = F> + Clone) -> F {
    let max = xs.clone().fold(F::neg_infinity(), F::max);
    if max == F::neg_infinity() {
        return max;
    }
    let (sum, n) = xs.fold((F::zero(), 0usize), |(s, n), x| {
        (s + (x - max).exp_(), n + 1)
    });
    max + sum.ln_() - F::of(n as f64).ln_()
}

/// Arithmetic mean; `xs` must not be empty.
pub fn mean<F: Real>(xs: &[F]) -> F {
    xs.iter().fold(F::zero(), |s, &x| s + x) / F::of(xs.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_matches_definition_and_saturates_without_nan() {
        for &x in &[-3.0f64, -0.5, 0.0, 0.25, 4.0] {
            let direct = 1.0 / (1.0 + (-x).exp());
            assert!((sigmoid(x) - direct).abs() < 1e-15);
            assert!((log_sigmoid(x) - direct.ln()).abs() < 1e-14);
        }
        assert_eq!(sigmoid(1e4f32), 1.0);
        assert_eq!(sigmoid(-1e4f32), 0.0);
        assert_eq!(log_sigmoid(1e4f32), 0.0);
        assert_eq!(log_sigmoid(-1e4f32), -1e4);
        assert_eq!(log_sigmoid(-1e4f64), -1e4);
    }

    #[test]
    fn sigmoid_ratio_survives_underflow() {
        // σ(−1000)/σ(−1001) = e^{1} to within the tails' correction terms.
        let r = sigmoid_ratio(-1000.0f32, -1001.0f32);
        assert!((r - core::f32::consts::E).abs() < 1e-5, "{r}");
        assert!((sigmoid_ratio(0.3f64, -0.2) - sigmoid(0.3) / sigmoid(-0.2)).abs() < 1e-15);
    }

    #[test]
    fn log_mean_exp_is_shift_invariant() {
        let xs = [-1000.0f64, -1001.0, -1002.0];
        let shifted: f64 = log_mean_exp([0.0f64, -1.0, -2.0].into_iter()) - 1000.0;
        assert!((log_mean_exp(xs.into_iter()) - shifted).abs() < 1e-12);
        let plain = ((0.5f64.exp() + 1.5f64.exp()) / 2.0).ln();
        assert!((log_mean_exp([0.5f64, 1.5].into_iter()) - plain).abs() < 1e-15);
    }
}

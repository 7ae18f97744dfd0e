//! Weighted sampling of K pairs without replacement, for the `official` preset.
//!
//! The authors call `torch.multinomial(w, K, replacement=False)`: K sequential draws, each with
//! probability proportional to the weight left. We draw the same distribution with the
//! Efraimidis–Spirakis keys `ln(u_i)/w_i` (take the K largest), which costs one uniform per pair
//! and a sort instead of K passes over the weights. Reproducing torch's own random stream is not
//! a goal: a run of the authors' code is reproduced by forcing its mask instead.

use alloc::vec::Vec;
use core::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::num::Real;
use crate::rng::Xoshiro256;

/// How the kept set of a step was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Weighted without replacement (`official` preset, its own filter).
    Weighted,
    /// Every weight underflowed (or one was infinite): K uniform draws WITH replacement, as the
    /// authors' fallback does; fewer than K distinct pairs may be kept.
    UniformWithReplacement,
    /// Chosen by a rule, no randomness (`paper` preset, or a `none`/`bottom`/`top` filter).
    Deterministic,
    /// Given by the caller (to replay a run of the authors' code).
    Forced,
}

/// Draws `k` of `weights.len()` indices, each draw ∝ the weight not yet drawn, in draw order.
///
/// Consumes exactly one `open01` per weight. Indices whose weight is zero (or so small that the
/// key underflows to −inf) can only be drawn once the positive weight is exhausted; they then
/// follow in uniformly random order, which is the limit of equal tiny weights (torch would raise
/// an error there). When the weights sum to zero or to a non-finite value the draw falls back to
/// `k` uniform draws with replacement, like the authors' code.
pub fn weighted_without_replacement<F: Real>(
    weights: &[F],
    k: usize,
    rng: &mut Xoshiro256,
) -> (Vec<usize>, Sampling) {
    let n = weights.len();
    debug_assert!(k <= n);
    let total = weights.iter().fold(F::zero(), |s, &w| s + w);
    // `total > 0` is false for NaN as well, hence the positive test.
    let usable = total > F::zero() && total.is_finite();
    if !usable {
        let drawn = (0..k).map(|_| rng.below(n as u64) as usize).collect();
        return (drawn, Sampling::UniformWithReplacement);
    }
    // (positive weight?, sort key, index): positive weights rank by ln(u)/w, the rest by u.
    let mut keyed: Vec<(bool, f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let u = rng.open01();
            let key = libm::log(u) / w.f64();
            if w > F::zero() && key > f64::NEG_INFINITY {
                (true, key, i)
            } else {
                (false, u, i)
            }
        })
        .collect();
    keyed.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal))
            .then_with(|| a.2.cmp(&b.2))
    });
    (
        keyed.iter().take(k).map(|&(_, _, i)| i).collect(),
        Sampling::Weighted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact inclusion probabilities of sequential proportional draws, by enumeration.
    fn inclusion(weights: &[f64], k: usize) -> Vec<f64> {
        fn go(w: &[f64], taken: &mut Vec<usize>, p: f64, k: usize, acc: &mut [f64]) {
            if taken.len() == k {
                for &i in taken.iter() {
                    acc[i] += p;
                }
                return;
            }
            let left: f64 = (0..w.len())
                .filter(|i| !taken.contains(i))
                .map(|i| w[i])
                .sum();
            for i in 0..w.len() {
                if !taken.contains(&i) {
                    taken.push(i);
                    go(w, taken, p * w[i] / left, k, acc);
                    taken.pop();
                }
            }
        }
        let mut acc = vec![0.0; weights.len()];
        go(weights, &mut Vec::new(), 1.0, k, &mut acc);
        acc
    }

    #[test]
    fn empirical_frequencies_follow_the_weights() {
        let weights = [0.05f64, 0.4, 1.0, 0.2, 0.7];
        let mut rng = Xoshiro256::seed_from(123);
        let trials = 40_000;
        for k in [1usize, 2, 4] {
            let mut freq = [0usize; 5];
            for _ in 0..trials {
                let (drawn, kind) = weighted_without_replacement(&weights, k, &mut rng);
                assert_eq!(kind, Sampling::Weighted);
                assert_eq!(drawn.len(), k);
                let mut seen = [false; 5];
                for i in drawn {
                    assert!(!seen[i], "drawn twice");
                    seen[i] = true;
                    freq[i] += 1;
                }
            }
            let exact = inclusion(&weights, k);
            for i in 0..5 {
                let p = freq[i] as f64 / trials as f64;
                // 5 standard errors of a binomial proportion.
                let tol = 5.0 * (exact[i] * (1.0 - exact[i]) / trials as f64).sqrt() + 1e-3;
                assert!(
                    (p - exact[i]).abs() < tol,
                    "k={k} i={i}: {p} vs {}",
                    exact[i]
                );
            }
        }
    }

    #[test]
    fn first_draw_is_proportional_to_weight() {
        // The first index drawn must be ∝ w (the torch.multinomial semantics), not just the set.
        let weights = [1.0f32, 3.0, 6.0];
        let mut rng = Xoshiro256::seed_from(9);
        let mut first = [0usize; 3];
        for _ in 0..30_000 {
            first[weighted_without_replacement(&weights, 3, &mut rng).0[0]] += 1;
        }
        for (i, w) in [0.1, 0.3, 0.6].iter().enumerate() {
            assert!((first[i] as f64 / 30_000.0 - w).abs() < 0.01, "{first:?}");
        }
    }

    #[test]
    fn zero_weights_come_last_in_random_order() {
        let weights = [0.0f64, 2.0, 0.0, 0.0, 1.0];
        let mut rng = Xoshiro256::seed_from(5);
        let mut third = [0usize; 5];
        for _ in 0..9_000 {
            let (drawn, kind) = weighted_without_replacement(&weights, 4, &mut rng);
            assert_eq!(kind, Sampling::Weighted);
            let mut head = [drawn[0], drawn[1]];
            head.sort();
            assert_eq!(head, [1, 4]);
            third[drawn[2]] += 1;
        }
        for i in [0, 2, 3] {
            assert!((2_700..3_300).contains(&third[i]), "{third:?}");
        }
    }

    #[test]
    fn underflowed_weights_fall_back_to_uniform_with_replacement() {
        // exp(−½·50²) underflows to 0 in f32 and f64 alike.
        let weights: Vec<f32> = [50.0f32, -60.0, 70.0, 55.0]
            .iter()
            .map(|d| (-0.5 * d * d).exp())
            .collect();
        assert!(weights.iter().all(|&w| w == 0.0));
        let mut rng = Xoshiro256::seed_from(1);
        let mut counts = [0usize; 4];
        let mut repeats = 0;
        for _ in 0..10_000 {
            let (drawn, kind) = weighted_without_replacement(&weights, 3, &mut rng);
            assert_eq!(kind, Sampling::UniformWithReplacement);
            assert_eq!(drawn.len(), 3);
            repeats +=
                (drawn[0] == drawn[1] || drawn[1] == drawn[2] || drawn[0] == drawn[2]) as usize;
            for i in drawn {
                counts[i] += 1;
            }
        }
        for c in counts {
            assert!((7_000..8_000).contains(&c), "{counts:?}");
        }
        // P(some repeat among 3 draws of 4) = 1 − 4·3·2/4³ = 0.625.
        assert!((5_900..6_600).contains(&repeats), "{repeats}");
    }

    #[test]
    fn same_seed_same_draw() {
        let w = [0.3f32, 0.1, 0.9, 0.5, 0.5, 0.2];
        let a = weighted_without_replacement(&w, 4, &mut Xoshiro256::seed_from(77));
        let b = weighted_without_replacement(&w, 4, &mut Xoshiro256::seed_from(77));
        assert_eq!(a, b);
    }
}

//! Per-step statistics docs/SPEC.md asks the trainer to log (the paper's Figs. 7–9 are made of them).

use serde::{Deserialize, Serialize};

use crate::num::{Real, mean};

/// mean / population std / min / max of a per-pair quantity.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary<F> {
    pub mean: F,
    pub std: F,
    pub min: F,
    pub max: F,
}

impl<F: Real> Summary<F> {
    /// Summary of `xs`; all zeros for an empty slice.
    pub fn of(xs: &[F]) -> Self {
        if xs.is_empty() {
            return Self {
                mean: F::zero(),
                std: F::zero(),
                min: F::zero(),
                max: F::zero(),
            };
        }
        let m = mean(xs);
        let var = xs.iter().fold(F::zero(), |s, &x| s + (x - m) * (x - m)) / F::of(xs.len() as f64);
        Self {
            mean: m,
            std: var.sqrt(),
            min: xs.iter().fold(F::infinity(), |a, &x| a.min(x)),
            max: xs.iter().fold(F::neg_infinity(), |a, &x| a.max(x)),
        }
    }

    pub fn map<G>(self, f: impl Fn(F) -> G) -> Summary<G> {
        Summary {
            mean: f(self.mean),
            std: f(self.std),
            min: f(self.min),
            max: f(self.max),
        }
    }
}

/// The implicit rewards as TRL logs them, always with the base β: `rewards/chosen`,
/// `rewards/rejected`, `rewards/margins`, `rewards/accuracies`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Rewards<F> {
    /// mean β·(pw_i − rw_i)
    pub chosen: F,
    /// mean β·(pl_i − rl_i)
    pub rejected: F,
    /// chosen − rejected
    pub margins: F,
    /// share of pairs whose chosen reward is strictly larger
    pub accuracy: F,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_by_hand() {
        let s = Summary::of(&[1.0f64, 3.0, 5.0, 7.0]);
        assert_eq!((s.mean, s.min, s.max), (4.0, 1.0, 7.0));
        assert!((s.std - 5f64.sqrt()).abs() < 1e-15);
        assert_eq!(Summary::<f32>::of(&[]), Summary::default());
    }
}

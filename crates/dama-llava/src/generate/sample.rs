//! Choosing the next token from one row of logits: greedy (argmax) and sampling with
//! transformers' warpers in transformers' order (temperature, then top-k, then top-p), drawn
//! with `dama_core`'s seeded xoshiro256** so that a seed gives the same answer on every
//! machine and in every batch.

use dama_core::Xoshiro256;

/// Sampling settings (transformers' `do_sample=True`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleConfig {
    /// Logits are divided by it; must be > 0.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (and any tied with the k-th).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (0 < p ≤ 1).
    pub top_p: Option<f32>,
    /// Seeds every prompt's stream together with the prompt's own seed.
    pub seed: u64,
}

/// The index of the largest value; the first of equal ones (`torch.argmax`).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax` of one row in f32, as `torch.log_softmax`: `(x − max) − ln Σ exp(x − max)`.
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - m).exp()).sum();
    let lse = sum.ln();
    row.iter().map(|&x| (x - m) - lse).collect()
}

/// Draws the next token from `logits` with the warpers of `cfg` and `rng`.
pub fn sample(logits: &[f32], cfg: &SampleConfig, rng: &mut Xoshiro256) -> u32 {
    let mut scores: Vec<f32> = logits.iter().map(|&x| x / cfg.temperature).collect();
    if let Some(k) = cfg.top_k {
        top_k(&mut scores, k);
    }
    if let Some(p) = cfg.top_p {
        top_p(&mut scores, p);
    }
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f64> = scores.iter().map(|&x| ((x - m) as f64).exp()).collect();
    let total: f64 = probs.iter().sum();
    let mut u = rng.open01() * total;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last = i;
            if u < p {
                return i as u32;
            }
            u -= p;
        }
    }
    // rounding left `u` past the last token with any probability
    last as u32
}

/// transformers' `TopKLogitsWarper`: every score below the k-th largest becomes −∞.
fn top_k(scores: &mut [f32], k: usize) {
    let k = k.clamp(1, scores.len());
    if k == scores.len() {
        return;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    for s in scores.iter_mut() {
        if *s < kth {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// transformers' `TopPLogitsWarper`: sorted ascending, the tokens whose cumulative probability
/// is at most `1 − p` become −∞; the most likely token always stays.
fn top_p(scores: &mut [f32], p: f32) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|&x| (x - m).exp()).collect();
    let total: f32 = exp.iter().sum();
    let mut cumulative = 0f32;
    let last = order.len() - 1;
    for (rank, &i) in order.iter().enumerate() {
        cumulative += exp[i] / total;
        if rank < last && cumulative <= 1.0 - p {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[0.0, 2.0, 1.0, 2.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let s: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((lp[2] - (3.0 - (1f32.exp() + 2f32.exp() + 3f32.exp()).ln())).abs() < 1e-6);
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth() {
        let mut s = vec![1.0, 3.0, 2.0, 2.0, 0.0];
        top_k(&mut s, 2);
        let inf = f32::NEG_INFINITY;
        assert_eq!(s, vec![inf, 3.0, 2.0, 2.0, inf]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.25, 0.125, 0.125
        let l = |p: f32| p.ln();
        let base = vec![l(0.5), l(0.25), l(0.125), l(0.125)];
        let mut s = base.clone();
        top_p(&mut s, 0.7);
        assert!(s[0].is_finite() && s[1].is_finite());
        assert!(s[2] == f32::NEG_INFINITY && s[3] == f32::NEG_INFINITY);
        let mut s = base.clone();
        top_p(&mut s, 0.01);
        assert_eq!(s.iter().filter(|x| x.is_finite()).count(), 1);
        let mut s = base;
        top_p(&mut s, 1.0);
        assert!(s.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn sampling_follows_the_probabilities_and_the_seed() {
        let logits = [0.0f32, (3f32).ln(), f32::NEG_INFINITY];
        let cfg = SampleConfig {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
        };
        let draw = |seed| {
            let mut rng = Xoshiro256::seed_from(seed);
            (0..4000)
                .map(|_| sample(&logits, &cfg, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        assert!(!a.contains(&2));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        // top-k = 1 is the argmax whatever the draw
        let greedy = SampleConfig {
            top_k: Some(1),
            ..cfg
        };
        let mut rng = Xoshiro256::seed_from(1);
        assert!((0..100).all(|_| sample(&logits, &greedy, &mut rng) == 1));
    }
}

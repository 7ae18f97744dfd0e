//! The softmax probability of each sub-sentence (Eq. 4: one softmax over `[C_w ; C_l]`), for
//! the bars of the pair view: dama-core's `subsentence_probs`, in f64 for display.

use dama_data::Scores;

/// P_w,j and P_l,k, in the order of the scores; they sum to 1. Non-finite scores (never
/// written by the scorer) show as NaN bars.
pub fn probabilities(scores: &Scores) -> (Vec<f64>, Vec<f64>) {
    dama_core::subsentence_probs(&scores.chosen, &scores.rejected).unwrap_or_else(|_| {
        (
            vec![f64::NAN; scores.chosen.len()],
            vec![f64::NAN; scores.rejected.len()],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one_and_give_delta() {
        let s = Scores {
            chosen: vec![25.0, 24.0, 3000.0 / 120.0],
            rejected: vec![20.0, 26.5],
        };
        let (pw, pl) = probabilities(&s);
        let total: f64 = pw.iter().chain(&pl).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let delta = dama_core::delta(&s.chosen, &s.rejected, dama_core::Estimator::Probs)
            .unwrap()
            .delta;
        let from_bars: f64 = pw.iter().sum::<f64>() - pl.iter().sum::<f64>();
        assert!((delta - from_bars).abs() < 1e-12);
        assert!(pl[1] > pw[0] && pw[0] > pw[1]);
    }

    #[test]
    fn a_lone_sub_sentence_has_probability_one() {
        let (pw, pl) = probabilities(&Scores {
            chosen: vec![30.0],
            rejected: vec![],
        });
        assert_eq!((pw, pl), (vec![1.0], vec![]));
    }
}

//! The edits a person makes in the browser, kept self-consistent: a swap exchanges everything
//! that belongs to an answer and recomputes δ; an edit of the sub-sentences clears the scores
//! they no longer match. α_D is cleared by both: it is recomputed with δ̄ at export
//! ([`crate::annotate`]).

use dama_core::Estimator;

use crate::error::DataError;
use crate::record::{PreferencePair, Scores, SubSentences};

impl PreferencePair {
    /// Sets the CLIP scores (aligned with `sub_sentences`) and δ from them (`dama_core::delta`).
    pub fn set_scores(&mut self, scores: Scores, estimator: Estimator) -> Result<(), DataError> {
        if let Some(subs) = &self.sub_sentences {
            for (side, n, m) in [
                ("chosen", subs.chosen.len(), scores.chosen.len()),
                ("rejected", subs.rejected.len(), scores.rejected.len()),
            ] {
                if n != m {
                    return Err(
                        self.mismatch(format!("{m} {side} scores for {n} {side} sub-sentences"))
                    );
                }
            }
        }
        let h = dama_core::delta(&scores.chosen, &scores.rejected, estimator).map_err(|error| {
            DataError::Core {
                context: format!("pair `{}`", self.id),
                error,
            }
        })?;
        self.scores = Some(scores);
        self.delta = Some(h.delta);
        self.delta_edge = Some(h.edge);
        self.alpha_d = None;
        Ok(())
    }

    /// Exchanges chosen and rejected, with their sub-sentences and scores, and toggles
    /// `annotation.swapped`. δ is recomputed from the swapped scores; a pair with δ but no scores
    /// (the authors' list) loses its δ and must be scored again.
    pub fn swap(&mut self, estimator: Estimator) -> Result<(), DataError> {
        std::mem::swap(&mut self.chosen, &mut self.rejected);
        if let Some(s) = &mut self.sub_sentences {
            std::mem::swap(&mut s.chosen, &mut s.rejected);
        }
        self.annotation.swapped = !self.annotation.swapped;
        self.alpha_d = None;
        match self.scores.take() {
            Some(Scores { chosen, rejected }) => self.set_scores(
                Scores {
                    chosen: rejected,
                    rejected: chosen,
                },
                estimator,
            ),
            None => {
                self.delta = None;
                self.delta_edge = None;
                Ok(())
            }
        }
    }

    /// Replaces the sub-sentences with a person's; the scores, δ and α_D are cleared until the
    /// pair is scored again (the browser scores it before exporting).
    pub fn edit_sub_sentences(&mut self, sub_sentences: SubSentences) {
        self.sub_sentences = Some(sub_sentences);
        self.annotation.edited = true;
        self.scores = None;
        self.delta = None;
        self.delta_edge = None;
        self.alpha_d = None;
    }

    fn mismatch(&self, what: String) -> DataError {
        DataError::Mismatch {
            file: format!("pair `{}`", self.id),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dama_core::DeltaEdge;

    fn scored() -> PreferencePair {
        let mut p =
            PreferencePair::new("p", Default::default(), "q", "A cat. It sleeps.", "A dog.");
        p.sub_sentences = Some(SubSentences {
            chosen: vec!["A cat.".into(), "It sleeps.".into()],
            rejected: vec!["A dog.".into()],
        });
        p.set_scores(
            Scores {
                chosen: vec![25.0, 24.0],
                rejected: vec![20.0],
            },
            Estimator::Probs,
        )
        .unwrap();
        p.alpha_d = Some(1.1);
        p
    }

    #[test]
    fn swap_moves_everything_and_recomputes_delta() {
        let original = scored();
        let mut p = original.clone();
        p.swap(Estimator::Probs).unwrap();
        assert_eq!(
            (p.chosen.as_str(), p.rejected.as_str()),
            ("A dog.", "A cat. It sleeps.")
        );
        assert_eq!(p.sub_sentences.as_ref().unwrap().chosen, ["A dog."]);
        assert_eq!(p.scores.as_ref().unwrap().rejected, [25.0, 24.0]);
        let expected = dama_core::delta(&[20.0], &[25.0, 24.0], Estimator::Probs)
            .unwrap()
            .delta;
        assert_eq!(p.delta, Some(expected));
        assert!(expected < 0.0);
        assert!(p.annotation.swapped && p.alpha_d.is_none());
        p.swap(Estimator::Probs).unwrap();
        assert_eq!(p.delta, original.delta);
        assert_eq!((p.chosen, p.annotation.swapped), (original.chosen, false));
    }

    #[test]
    fn edge_cases_and_unscored_pairs() {
        let mut p = scored();
        p.set_scores(
            Scores {
                chosen: vec![],
                rejected: vec![],
            },
            Estimator::Probs,
        )
        .unwrap_err();
        p.sub_sentences = None;
        p.set_scores(
            Scores {
                chosen: vec![],
                rejected: vec![1.0],
            },
            Estimator::Probs,
        )
        .unwrap();
        assert_eq!(
            (p.delta, p.delta_edge),
            (Some(-1.0), Some(DeltaEdge::NoChosen))
        );
        let mut authors = PreferencePair::new("a", Default::default(), "q", "x", "y");
        authors.delta = Some(0.3);
        authors.swap(Estimator::Probs).unwrap();
        assert_eq!(authors.delta, None, "no scores to recompute δ from");
    }

    #[test]
    fn an_edit_clears_what_it_invalidates() {
        let mut p = scored();
        p.edit_sub_sentences(SubSentences {
            chosen: vec!["A grey cat.".into()],
            rejected: vec!["A dog.".into()],
        });
        assert!(p.annotation.edited);
        assert_eq!((p.scores.as_ref(), p.delta, p.alpha_d), (None, None, None));
        p.set_scores(
            Scores {
                chosen: vec![26.0],
                rejected: vec![20.0, 1.0],
            },
            Estimator::Probs,
        )
        .unwrap_err();
    }
}

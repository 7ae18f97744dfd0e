//! A person's edits of a [`Session`]: keep/drop, swap, answers and sub-sentences, tags, note,
//! and the reviewed flag. Each marks the pair changed (so only it is saved) and goes through
//! `dama-data`'s methods, which keep δ consistent with the scores.
//!
//! An edit of a scored pair's sub-sentences (or of an answer, which re-splits it) leaves the pair
//! "edited, score pending": its old scores are kept aside ([`crate::session::BeforeEdit`]) until
//! it is scored again, so that an export can still carry them, flagged, and typing the old text
//! back restores them.

use dama_data::{PreferencePair, RuleSplitter, Splitter, Status, SubSentences};

use crate::session::{BeforeEdit, Session, SessionError, Side, subs_key};

/// What an answer edit did, for the status line.
#[derive(Debug, Clone, PartialEq)]
pub struct Resplit {
    /// The key of the pair's new sub-sentences (to score them under).
    pub key: u64,
    /// The sub-sentences the new answer was split into.
    pub count: usize,
    /// The splitter that split it (the rule splitter: the browser has no LLM).
    pub splitter: String,
}

impl Session {
    pub fn set_status(&mut self, i: usize, status: Status) {
        if self.pairs[i].annotation.status != status {
            self.pairs[i].annotation.status = status;
            self.touch(i, true, false);
        }
    }

    pub fn set_reviewed(&mut self, i: usize, reviewed: bool) {
        if self.pairs[i].annotation.reviewed != reviewed {
            self.pairs[i].annotation.reviewed = reviewed;
            self.touch(i, true, false);
        }
    }

    /// Exchanges chosen and rejected (texts, sub-sentences, scores; δ recomputed), and the old
    /// scores of an edited pair with them.
    pub fn swap(&mut self, i: usize) -> Result<(), SessionError> {
        self.pairs[i].swap(self.estimator)?;
        if let Some(b) = self.before_edit.get_mut(&i) {
            let mut old = PreferencePair {
                scores: b.scores.take(),
                delta: b.delta,
                ..PreferencePair::default()
            };
            old.swap(self.estimator)?;
            b.scores = old.scores;
            b.delta = old.delta;
            b.delta_edge = old.delta_edge;
            if let Some(subs) = &mut b.subs {
                std::mem::swap(&mut subs.chosen, &mut subs.rejected);
            }
        }
        self.touch(i, true, true);
        Ok(())
    }

    /// Replaces sub-sentence `j` of `side` (an empty text removes it, an index one past the end
    /// adds one). The pair waits for new scores (its old ones are kept aside); returns the key
    /// to score the new sub-sentences under.
    pub fn edit_sub_sentence(&mut self, i: usize, side: Side, j: usize, text: &str) -> u64 {
        let mut subs = self.pairs[i].sub_sentences.clone().unwrap_or_default();
        let list = match side {
            Side::Chosen => &mut subs.chosen,
            Side::Rejected => &mut subs.rejected,
        };
        let text = text.trim();
        match (j < list.len(), text.is_empty()) {
            (true, true) => {
                list.remove(j);
            }
            (true, false) => list[j] = text.to_owned(),
            (false, false) => list.push(text.to_owned()),
            (false, true) => {}
        }
        self.set_sub_sentences(i, subs)
    }

    /// Replaces the text of an answer (what the export and so training read) and splits it again
    /// with the rule splitter; the other answer's sub-sentences stay. An empty answer is refused.
    pub fn edit_answer(
        &mut self,
        i: usize,
        side: Side,
        text: &str,
    ) -> Result<Resplit, SessionError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SessionError::Data(format!(
                "the {} answer cannot be empty (drop the pair instead)",
                side.name()
            )));
        }
        let splitter = RuleSplitter::new();
        let pieces = splitter
            .split(&self.pairs[i].question, text)
            .map_err(|e| SessionError::Data(e.to_string()))?;
        let mut subs = self.pairs[i].sub_sentences.clone().unwrap_or_default();
        match side {
            Side::Chosen => {
                self.pairs[i].chosen = text.to_owned();
                subs.chosen = pieces;
            }
            Side::Rejected => {
                self.pairs[i].rejected = text.to_owned();
                subs.rejected = pieces;
            }
        }
        let count = match side {
            Side::Chosen => subs.chosen.len(),
            Side::Rejected => subs.rejected.len(),
        };
        let key = self.set_sub_sentences(i, subs);
        Ok(Resplit {
            key,
            count,
            splitter: splitter.name(),
        })
    }

    /// The one way sub-sentences change: the scores move aside (once, so a second edit keeps the
    /// first scores), or come back when the old sub-sentences are typed back.
    pub(crate) fn set_sub_sentences(&mut self, i: usize, subs: SubSentences) -> u64 {
        let key = subs_key(&subs);
        let pair = &self.pairs[i];
        let current = pair.sub_sentences.as_ref().map(subs_key);
        if current != Some(key) && !self.before_edit.contains_key(&i) {
            self.before_edit.insert(
                i,
                BeforeEdit {
                    subs: pair.sub_sentences.clone(),
                    scores: pair.scores.clone(),
                    delta: pair.delta,
                    delta_edge: pair.delta_edge,
                    scored_here: self.scored_here[i],
                },
            );
        }
        self.pairs[i].edit_sub_sentences(subs);
        self.scored_here[i] = false;
        let back = self
            .before_edit
            .get(&i)
            .filter(|b| b.subs_key() == Some(key) && b.scores.is_some())
            .cloned();
        if let Some(b) = back {
            let scores = b.scores.expect("filtered");
            if self.pairs[i].set_scores(scores, self.estimator).is_ok() {
                self.scored_here[i] = b.scored_here;
                self.before_edit.remove(&i);
            }
        }
        self.touch(i, true, true);
        key
    }

    /// Sets the tags from a comma-separated list (trimmed, empty ones and repeats left out).
    pub fn set_tags(&mut self, i: usize, tags: &str) {
        let mut out: Vec<String> = Vec::new();
        for t in tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !out.iter().any(|o| o == t) {
                out.push(t.to_owned());
            }
        }
        if self.pairs[i].annotation.tags != out {
            self.pairs[i].annotation.tags = out;
            self.touch(i, true, false);
        }
    }

    pub fn set_note(&mut self, i: usize, note: &str) {
        if self.pairs[i].annotation.note != note {
            self.pairs[i].annotation.note = note.to_owned();
            self.touch(i, true, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ScoreState;
    use crate::session::tests::{scores, session};

    #[test]
    fn edits_add_replace_and_remove() {
        let mut s = session();
        s.edit_sub_sentence(2, Side::Chosen, 1, "Also this.");
        s.edit_sub_sentence(2, Side::Chosen, 0, "  ");
        assert_eq!(
            s.pairs[2].sub_sentences.as_ref().unwrap().chosen,
            ["Also this."]
        );
        s.edit_sub_sentence(2, Side::Rejected, 0, "Not that.");
        assert_eq!(
            s.pairs[2].sub_sentences.as_ref().unwrap().rejected,
            ["Not that."]
        );
        assert_eq!(s.score_state(2), ScoreState::Unscored, "never scored");
    }

    #[test]
    fn an_answer_edit_resplits_it_and_keeps_the_old_scores_aside() {
        let mut s = session();
        let key = subs_key(s.pairs[0].sub_sentences.as_ref().unwrap());
        s.apply_scores("m", "a", key, scores(&[25.0, 24.0], &[20.0]))
            .unwrap();
        let old = s.pairs[0].delta;
        let r = s
            .edit_answer(
                0,
                Side::Rejected,
                "A green circle. It is tiny. Nothing else.",
            )
            .unwrap();
        assert_eq!((r.count, r.splitter.as_str()), (3, "rules-v1"));
        assert_eq!(
            s.pairs[0].rejected,
            "A green circle. It is tiny. Nothing else."
        );
        let subs = s.pairs[0].sub_sentences.clone().unwrap();
        assert_eq!(
            subs.chosen,
            ["A red circle.", "A blue square."],
            "other side unchanged"
        );
        assert_eq!(subs.rejected.len(), 3);
        assert_eq!(r.key, subs_key(&subs));
        assert_eq!(s.score_state(0), ScoreState::Pending { old });
        assert_eq!(s.pending(), [0]);
        assert!(s.pairs[0].annotation.edited);
        assert!(
            s.edit_answer(0, Side::Chosen, "  ").is_err(),
            "empty refused"
        );
    }

    #[test]
    fn typing_the_old_sub_sentence_back_restores_its_scores() {
        let mut s = session();
        let key = subs_key(s.pairs[0].sub_sentences.as_ref().unwrap());
        s.apply_scores("m", "a", key, scores(&[25.0, 24.0], &[20.0]))
            .unwrap();
        let before = s.pairs[0].clone();
        s.edit_sub_sentence(0, Side::Chosen, 0, "A red disc.");
        s.edit_sub_sentence(0, Side::Chosen, 1, "A blue cube.");
        assert!(s.pairs[0].delta.is_none());
        s.edit_sub_sentence(0, Side::Chosen, 0, "A red circle.");
        s.edit_sub_sentence(0, Side::Chosen, 1, "A blue square.");
        assert_eq!(s.pairs[0].scores, before.scores);
        assert_eq!(s.pairs[0].delta, before.delta);
        assert_eq!(s.score_state(0), ScoreState::Scored);
        assert!(s.scored_here[0]);
    }

    #[test]
    fn a_swap_of_a_pending_pair_swaps_its_old_scores() {
        let mut s = session();
        let key = subs_key(s.pairs[0].sub_sentences.as_ref().unwrap());
        s.apply_scores("m", "a", key, scores(&[25.0, 24.0], &[20.0]))
            .unwrap();
        let d = s.pairs[0].delta.unwrap();
        s.edit_sub_sentence(0, Side::Rejected, 0, "A green disc.");
        s.swap(0).unwrap();
        let want = dama_core::delta(&[20.0], &[25.0, 24.0], s.estimator)
            .unwrap()
            .delta;
        assert_eq!(s.score_state(0), ScoreState::Pending { old: Some(want) });
        assert!(want < 0.0 && d > 0.0);
    }

    #[test]
    fn tags_notes_status_and_swap() {
        let mut s = session();
        s.set_tags(1, " blurry, , wrong-count,blurry ");
        assert_eq!(s.pairs[1].annotation.tags, ["blurry", "wrong-count"]);
        s.set_note(1, "check the count");
        s.set_status(1, Status::Drop);
        s.set_reviewed(1, true);
        assert!(!s.pairs[1].is_kept() && s.pairs[1].annotation.reviewed);
        let key = subs_key(s.pairs[0].sub_sentences.as_ref().unwrap());
        s.apply_scores("m", "a", key, scores(&[25.0, 24.0], &[20.0]))
            .unwrap();
        let before = s.pairs[0].delta.unwrap();
        s.swap(0).unwrap();
        assert_eq!(s.pairs[0].chosen, "A green circle.");
        assert!(s.pairs[0].delta.unwrap() < 0.0 && before > 0.0);
        let stats = s.stats().unwrap();
        assert_eq!(
            (stats.kept, stats.scored),
            (1, 1),
            "over the scored pairs only"
        );
        assert_eq!(stats.delta_mean, s.pairs[0].delta);
        let dirty = s.take_dirty();
        assert_eq!(dirty.curation.into_iter().collect::<Vec<_>>(), [0, 1]);
        s.set_tags(1, "blurry, wrong-count");
        assert!(!s.has_unsaved(), "the same tags again change nothing");
    }
}

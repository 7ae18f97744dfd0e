//! The loaded dataset and everything a person and the scorer did to it. Every change goes
//! through `dama-data`'s curation methods (which recompute δ with `dama-core`), so the pairs are
//! always self-consistent and an export is exactly what `dama-native train` expects.
//!
//! The session also remembers which pairs changed since they were last saved
//! ([`Session::take_dirty`]), so that the browser saves only what changed, and a revision number
//! that views and an export use to notice a change. A person's edits live in [`crate::curation`].

use std::collections::{BTreeSet, HashMap};

use dama_core::{DeltaEdge, Estimator};
use dama_data::{DataError, DatasetStats, PreferencePair, Scores, Splitter, SubSentences};

/// Which answer of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Chosen,
    Rejected,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Chosen => "chosen",
            Side::Rejected => "rejected",
        }
    }
}

// FNV-1a (the project's one content hash): stable keys for naming a dataset's saved curation
// and for telling whether scores belong to the current sub-sentences.
use dama_core::hash::Fnv1a as Fnv;

/// The key of a pair's sub-sentences: scores computed for them carry it, and are applied only
/// while the pair still has exactly these sub-sentences.
pub fn subs_key(subs: &SubSentences) -> u64 {
    let mut h = Fnv::new().field("chosen");
    for s in &subs.chosen {
        h = h.field(s);
    }
    h = h.field("rejected");
    for s in &subs.rejected {
        h = h.field(s);
    }
    h.finish()
}

/// The key of a pair's two answers, to tell an edited answer from the loaded one.
pub fn answers_key(p: &PreferencePair) -> u64 {
    Fnv::new().field(&p.chosen).field(&p.rejected).finish()
}

/// What a pair looked like when it was loaded, so that only a person's changes are saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub annotation: dama_data::Annotation,
    pub subs_key: u64,
    pub answers_key: u64,
}

/// The scores a pair had before a person edited its sub-sentences or an answer: kept until the
/// pair is scored again, so that a dataset scored elsewhere can still be exported (its old δ
/// flagged) and an edit typed back restores them.
#[derive(Debug, Clone, PartialEq)]
pub struct BeforeEdit {
    /// The sub-sentences the scores below belong to.
    pub subs: Option<SubSentences>,
    pub scores: Option<Scores>,
    pub delta: Option<f64>,
    pub delta_edge: Option<DeltaEdge>,
    /// The scores were computed in this browser (and so are saved by it).
    pub scored_here: bool,
}

impl BeforeEdit {
    pub fn subs_key(&self) -> Option<u64> {
        self.subs.as_ref().map(subs_key)
    }
}

/// How a pair stands with its scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreState {
    Scored,
    /// Edited after it was scored: the new sub-sentences wait for scores; `old` is the δ from
    /// before the edit, if there was one.
    Pending {
        old: Option<f64>,
    },
    Unscored,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Session {
    /// The dataset's file name (the first, for several shards).
    pub name: String,
    /// Content key of the pairs as loaded: names the saved curation of this dataset.
    pub fingerprint: String,
    pub pairs: Vec<PreferencePair>,
    pub loaded: Vec<Loaded>,
    /// Pairs scored in this browser (rather than read with scores): saved across reloads.
    pub scored_here: Vec<bool>,
    pub(crate) before_edit: HashMap<usize, BeforeEdit>,
    pub estimator: Estimator,
    /// What produced the sub-sentences: the dataset's splitter, `rules-v1`, or both.
    pub splitter: String,
    /// The CLIP model behind the scores the pairs hold (the dataset's header, or the model that
    /// scored them here); one session never mixes two.
    pub clip_model: Option<String>,
    /// What the reader said ("read 48 records, skipped …").
    pub summary: String,
    /// What the reader found doubtful about the file (a header announcing more pairs than it
    /// holds), shown as a warning rather than an info line.
    pub warnings: Vec<String>,
    index: HashMap<String, usize>,
    pub(crate) dirty: Dirty,
    revision: u64,
}

/// Pairs changed since they were last handed to storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dirty {
    /// A person's curation (annotation, answers, sub-sentences, reviewed flag).
    pub curation: BTreeSet<usize>,
    /// Scores computed here (set, moved by a swap, or cleared).
    pub scores: BTreeSet<usize>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.curation.is_empty() && self.scores.is_empty()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SessionError {
    #[error("no pair with id `{0}`")]
    NoSuchPair(String),
    #[error(
        "the scores come from `{have}`; scoring with `{new}` would mix two models. Load `{have}`, or clear the scores first"
    )]
    ModelMix { have: String, new: String },
    #[error("{0}")]
    Data(String),
}

impl From<DataError> for SessionError {
    fn from(e: DataError) -> Self {
        SessionError::Data(e.to_string())
    }
}

impl Session {
    /// A session over pairs as a reader produced them. Pairs without sub-sentences get them from
    /// `splitter`; `dataset_splitter` is what the dataset's header says produced the others.
    pub fn new(
        name: impl Into<String>,
        mut pairs: Vec<PreferencePair>,
        header: Option<&dama_data::Header>,
        splitter: &dyn Splitter,
        summary: impl Into<String>,
    ) -> Result<Self, SessionError> {
        let mut h = Fnv::new();
        for p in &pairs {
            h = h
                .field(&p.id)
                .field(&p.question)
                .field(&p.chosen)
                .field(&p.rejected);
        }
        let fingerprint = format!("{:016x}", h.finish());
        let mut split_here = 0;
        for p in &mut pairs {
            if p.sub_sentences.is_none() {
                p.sub_sentences = Some(
                    splitter
                        .split_pair(p)
                        .map_err(|e| SessionError::Data(e.to_string()))?,
                );
                split_here += 1;
            }
        }
        let from_dataset = header.and_then(|h| h.splitter.clone());
        let splitter_name = match (split_here, from_dataset) {
            (0, Some(d)) => d,
            (0, None) => "dataset".to_owned(),
            (n, _) if n == pairs.len() => splitter.name(),
            (_, d) => format!(
                "{}+{}",
                d.unwrap_or_else(|| "dataset".to_owned()),
                splitter.name()
            ),
        };
        let loaded = pairs
            .iter()
            .map(|p| Loaded {
                annotation: p.annotation.clone(),
                subs_key: subs_key(p.sub_sentences.as_ref().expect("filled above")),
                answers_key: answers_key(p),
            })
            .collect();
        let index = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let scored_any = pairs
            .iter()
            .any(|p| p.scores.is_some() || p.delta.is_some());
        let n = pairs.len();
        Ok(Self {
            name: name.into(),
            fingerprint,
            scored_here: vec![false; n],
            before_edit: HashMap::new(),
            loaded,
            estimator: header.and_then(|h| h.estimator).unwrap_or_default(),
            splitter: splitter_name,
            clip_model: header
                .and_then(|h| h.clip_model.clone())
                .filter(|_| scored_any),
            summary: summary.into(),
            warnings: Vec::new(),
            pairs,
            index,
            dirty: Dirty::default(),
            revision: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Bumped by every change: an export started at one revision refuses to continue at another.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Records that pair `i`'s curation (and, with `scores`, its saved scores) changed.
    pub(crate) fn touch(&mut self, i: usize, curation: bool, scores: bool) {
        self.revision += 1;
        if curation {
            self.dirty.curation.insert(i);
        }
        if scores {
            self.dirty.scores.insert(i);
        }
    }

    /// The pairs changed since the last call, for storage; a failed save hands them back with
    /// [`Session::mark_dirty`].
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    pub fn mark_dirty(&mut self, dirty: Dirty) {
        self.dirty.curation.extend(dirty.curation);
        self.dirty.scores.extend(dirty.scores);
    }

    pub fn has_unsaved(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// δ̄, bands and counts over the kept pairs scored so far (`dama_data::dataset_stats`, i.e.
    /// dama-core); `None` before any is scored. While a run is under way, or while edited pairs
    /// wait for new scores, these are the numbers of the scored part.
    pub fn stats(&self) -> Option<DatasetStats> {
        dama_data::dataset_stats(self.pairs.iter().filter(|p| p.delta.is_some()))
            .ok()
            .filter(|s| s.delta_mean.is_some())
    }

    pub fn score_state(&self, i: usize) -> ScoreState {
        if self.pairs[i].delta.is_some() {
            return ScoreState::Scored;
        }
        match self.before_edit.get(&i) {
            Some(b) if b.delta.is_some() => ScoreState::Pending { old: b.delta },
            _ => ScoreState::Unscored,
        }
    }

    pub fn before_edit(&self, i: usize) -> Option<&BeforeEdit> {
        self.before_edit.get(&i)
    }

    /// Pairs that have sub-sentences but no scores yet, in dataset order.
    pub fn unscored(&self) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|p| p.scores.is_none() && p.sub_sentences.is_some())
            .map(|p| p.id.clone())
            .collect()
    }

    /// Kept pairs edited after they were scored, still waiting for new scores.
    pub fn pending(&self) -> Vec<usize> {
        let mut out: Vec<usize> = (0..self.len())
            .filter(|&i| {
                self.pairs[i].is_kept() && matches!(self.score_state(i), ScoreState::Pending { .. })
            })
            .collect();
        out.sort_unstable();
        out
    }

    pub fn scored_count(&self) -> usize {
        self.pairs.iter().filter(|p| p.delta.is_some()).count()
    }

    /// Applies scores that `model` computed for sub-sentences with key `key`; scores for
    /// sub-sentences edited since are ignored (`Ok(false)`): the edit queued a fresh request.
    pub fn apply_scores(
        &mut self,
        model: &str,
        id: &str,
        key: u64,
        scores: Scores,
    ) -> Result<bool, SessionError> {
        self.check_model(model)?;
        let i = self
            .position(id)
            .ok_or_else(|| SessionError::NoSuchPair(id.to_owned()))?;
        let pair = &mut self.pairs[i];
        if pair.sub_sentences.as_ref().map(subs_key) != Some(key) {
            return Ok(false);
        }
        pair.set_scores(scores, self.estimator)?;
        self.scored_here[i] = true;
        self.before_edit.remove(&i);
        self.clip_model = Some(model.to_owned());
        self.touch(i, false, true);
        Ok(true)
    }

    /// Refuses scores from a model other than the one behind the scores already held (the
    /// old scores of edited pairs count: they are exported when the person asks).
    pub fn check_model(&self, model: &str) -> Result<(), SessionError> {
        let holds = self.scored_count() > 0 || self.before_edit.values().any(|b| b.delta.is_some());
        match &self.clip_model {
            Some(have) if have != model && holds => Err(SessionError::ModelMix {
                have: have.clone(),
                new: model.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Forgets every score (to score the dataset again with another model).
    pub fn clear_scores(&mut self) {
        for i in 0..self.len() {
            let p = &mut self.pairs[i];
            let had = p.delta.is_some() || p.scores.is_some();
            p.scores = None;
            p.delta = None;
            p.delta_edge = None;
            p.alpha_d = None;
            if had || self.scored_here[i] || self.before_edit.contains_key(&i) {
                self.touch(i, false, true);
            }
        }
        self.before_edit.clear();
        self.scored_here.fill(false);
        self.clip_model = None;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dama_data::{ImageRef, RuleSplitter, Status};

    /// Three small pairs; the first has the dataset's own sub-sentences.
    pub(crate) fn session() -> Session {
        let mut a = PreferencePair::new(
            "a",
            ImageRef::default(),
            "What is there?",
            "A red circle. A blue square.",
            "A green circle.",
        );
        a.sub_sentences = Some(SubSentences {
            chosen: vec!["A red circle.".into(), "A blue square.".into()],
            rejected: vec!["A green circle.".into()],
        });
        let b = PreferencePair::new("b", ImageRef::default(), "q", "One. Two. Three.", "Four.");
        let c = PreferencePair::new("c", ImageRef::default(), "q", "Yes.", "No.");
        Session::new(
            "t.jsonl",
            vec![a, b, c],
            None,
            &RuleSplitter::new(),
            "read 3",
        )
        .unwrap()
    }

    pub(crate) fn scores(c: &[f64], r: &[f64]) -> Scores {
        Scores {
            chosen: c.to_vec(),
            rejected: r.to_vec(),
        }
    }

    #[test]
    fn missing_sub_sentences_come_from_the_rule_splitter() {
        let s = session();
        assert_eq!(
            s.pairs[1].sub_sentences.as_ref().unwrap().chosen,
            ["One.", "Two.", "Three."]
        );
        assert_eq!(s.splitter, "dataset+rules-v1");
        assert_eq!(s.unscored(), ["a", "b", "c"]);
        assert_eq!(s.fingerprint.len(), 16);
        assert_eq!(s.fingerprint, session().fingerprint, "stable");
    }

    #[test]
    fn scores_apply_only_to_the_sub_sentences_they_were_computed_for() {
        let mut s = session();
        let key = subs_key(s.pairs[0].sub_sentences.as_ref().unwrap());
        assert!(
            s.apply_scores("m", "a", key, scores(&[25.0, 24.0], &[20.0]))
                .unwrap()
        );
        let expected = dama_core::delta(&[25.0, 24.0], &[20.0], Estimator::Probs)
            .unwrap()
            .delta;
        assert_eq!(s.pairs[0].delta, Some(expected));
        assert_eq!(s.clip_model.as_deref(), Some("m"));
        // An edit makes older results stale.
        let new_key = s.edit_sub_sentence(0, Side::Rejected, 0, "A green triangle.");
        assert_ne!(new_key, key);
        assert_eq!(s.pairs[0].delta, None);
        assert_eq!(
            s.score_state(0),
            ScoreState::Pending {
                old: Some(expected)
            }
        );
        assert!(
            !s.apply_scores("m", "a", key, scores(&[25.0, 24.0], &[20.0]))
                .unwrap()
        );
        assert!(
            s.apply_scores("m", "a", new_key, scores(&[25.0, 24.0], &[21.0]))
                .unwrap()
        );
        assert_eq!(s.score_state(0), ScoreState::Scored);
        assert!(s.pairs[0].annotation.edited);
        // A second model is refused while the first one's scores are held.
        let kb = subs_key(s.pairs[1].sub_sentences.as_ref().unwrap());
        assert_eq!(
            s.apply_scores("other", "b", kb, scores(&[1.0, 1.0, 1.0], &[1.0])),
            Err(SessionError::ModelMix {
                have: "m".into(),
                new: "other".into()
            })
        );
        s.clear_scores();
        assert!(
            s.apply_scores("other", "b", kb, scores(&[1.0, 1.0, 1.0], &[1.0]))
                .unwrap()
        );
        assert_eq!(
            s.apply_scores("other", "zzz", 0, scores(&[], &[])),
            Err(SessionError::NoSuchPair("zzz".into()))
        );
    }

    #[test]
    fn changes_are_handed_to_storage_once_and_back_after_a_failure() {
        let mut s = session();
        let r0 = s.revision();
        s.set_status(1, Status::Drop);
        let key = subs_key(s.pairs[2].sub_sentences.as_ref().unwrap());
        s.apply_scores("m", "c", key, scores(&[1.0], &[2.0]))
            .unwrap();
        assert!(s.revision() > r0);
        let d = s.take_dirty();
        assert_eq!(d.curation.iter().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(d.scores.iter().copied().collect::<Vec<_>>(), [2]);
        assert!(!s.has_unsaved(), "taken");
        s.mark_dirty(d.clone());
        assert_eq!(s.take_dirty(), d, "a failed save gives them back");
    }
}

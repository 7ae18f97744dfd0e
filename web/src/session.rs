//! The loaded dataset and everything a person and the scorer did to it. Every change goes
//! through `dama-data`'s curation methods (which recompute δ with `dama-core`), so the pairs are
//! always self-consistent and an export is exactly what `dama-native train` expects.

use std::collections::HashMap;

use dama_core::Estimator;
use dama_data::{
    Annotation, DataError, DatasetStats, PreferencePair, Scores, Splitter, Status, SubSentences,
};

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

/// FNV-1a, 64 bits: a stable content key (same input, same key on every platform and build),
/// for naming a dataset's saved curation and for telling whether scores belong to the current
/// sub-sentences. Not a defence against anyone; a collision only misattributes a cache entry.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Adds a string and a separator byte (0xff never occurs in UTF-8), so that ("ab", "c") and
    /// ("a", "bc") differ.
    pub fn str(mut self, s: &str) -> Self {
        for b in s.bytes().chain([0xff]) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The key of a pair's sub-sentences: scores computed for them carry it, and are applied only
/// while the pair still has exactly these sub-sentences.
pub fn subs_key(subs: &SubSentences) -> u64 {
    let mut h = Fnv::default().str("chosen");
    for s in &subs.chosen {
        h = h.str(s);
    }
    h = h.str("rejected");
    for s in &subs.rejected {
        h = h.str(s);
    }
    h.finish()
}

/// What a pair looked like when it was loaded, so that only a person's changes are saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub annotation: Annotation,
    pub subs_key: u64,
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
    pub estimator: Estimator,
    /// What produced the sub-sentences: the dataset's splitter, `rules-v1`, or both.
    pub splitter: String,
    /// The CLIP model behind the scores the pairs hold (the dataset's header, or the model that
    /// scored them here); one session never mixes two.
    pub clip_model: Option<String>,
    /// What the reader said ("read 48 records, skipped …").
    pub summary: String,
    index: HashMap<String, usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SessionError {
    #[error("no pair with id `{0}`")]
    NoSuchPair(String),
    #[error(
        "the scores come from `{have}`; scoring with `{new}` would mix two models. Clear the scores first"
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
        let mut h = Fnv::default();
        for p in &pairs {
            h = h
                .str(&p.id)
                .str(&p.question)
                .str(&p.chosen)
                .str(&p.rejected);
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
            })
            .collect();
        let index = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let scored_any = pairs.iter().any(|p| p.scores.is_some());
        Ok(Self {
            name: name.into(),
            fingerprint,
            scored_here: vec![false; pairs.len()],
            loaded,
            estimator: header.and_then(|h| h.estimator).unwrap_or_default(),
            splitter: splitter_name,
            clip_model: header
                .and_then(|h| h.clip_model.clone())
                .filter(|_| scored_any),
            summary: summary.into(),
            pairs,
            index,
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

    /// δ̄, bands and counts over the kept pairs scored so far (`dama_data::dataset_stats`, i.e.
    /// dama-core); `None` before any is scored. While a run is under way these are the numbers
    /// of the scored part; the export requires every kept pair to be scored.
    pub fn stats(&self) -> Option<DatasetStats> {
        dama_data::dataset_stats(self.pairs.iter().filter(|p| p.delta.is_some()))
            .ok()
            .filter(|s| s.delta_mean.is_some())
    }

    /// Pairs that have sub-sentences but no scores yet, in dataset order.
    pub fn unscored(&self) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|p| p.scores.is_none() && p.sub_sentences.is_some())
            .map(|p| p.id.clone())
            .collect()
    }

    pub fn scored_count(&self) -> usize {
        self.pairs.iter().filter(|p| p.scores.is_some()).count()
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
        self.clip_model = Some(model.to_owned());
        Ok(true)
    }

    /// Refuses scores from a model other than the one behind the scores already held.
    pub fn check_model(&self, model: &str) -> Result<(), SessionError> {
        match &self.clip_model {
            Some(have) if have != model && self.scored_count() > 0 => Err(SessionError::ModelMix {
                have: have.clone(),
                new: model.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Forgets every score (to score the dataset again with another model).
    pub fn clear_scores(&mut self) {
        for p in &mut self.pairs {
            p.scores = None;
            p.delta = None;
            p.delta_edge = None;
            p.alpha_d = None;
        }
        self.scored_here.fill(false);
        self.clip_model = None;
    }

    pub fn set_status(&mut self, i: usize, status: Status) {
        self.pairs[i].annotation.status = status;
    }

    /// Exchanges chosen and rejected (texts, sub-sentences, scores; δ recomputed).
    pub fn swap(&mut self, i: usize) -> Result<(), SessionError> {
        Ok(self.pairs[i].swap(self.estimator)?)
    }

    /// Replaces sub-sentence `j` of `side` (an empty text removes it, an index one past the end
    /// adds one). The pair loses its scores until the worker has scored the new sub-sentences;
    /// returns the key to score them under.
    pub fn edit_sub_sentence(&mut self, i: usize, side: Side, j: usize, text: &str) -> u64 {
        let pair = &mut self.pairs[i];
        let mut subs = pair.sub_sentences.clone().unwrap_or_default();
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
        let key = subs_key(&subs);
        pair.edit_sub_sentences(subs);
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
        self.pairs[i].annotation.tags = out;
    }

    pub fn set_note(&mut self, i: usize, note: &str) {
        self.pairs[i].annotation.note = note.to_owned();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dama_data::{ImageRef, RuleSplitter};

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

    fn scores(c: &[f64], r: &[f64]) -> Scores {
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
        assert!(
            !s.apply_scores("m", "a", key, scores(&[25.0, 24.0], &[20.0]))
                .unwrap()
        );
        assert!(
            s.apply_scores("m", "a", new_key, scores(&[25.0, 24.0], &[21.0]))
                .unwrap()
        );
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
    }

    #[test]
    fn tags_notes_status_and_swap() {
        let mut s = session();
        s.set_tags(1, " blurry, , wrong-count,blurry ");
        assert_eq!(s.pairs[1].annotation.tags, ["blurry", "wrong-count"]);
        s.set_note(1, "check the count");
        s.set_status(1, Status::Drop);
        assert!(!s.pairs[1].is_kept());
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
    }
}

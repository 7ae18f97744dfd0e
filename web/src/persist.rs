//! What survives a reload, as records the browser keeps in IndexedDB ([`crate::saving`] decides
//! when, `browser::store` does it): one [`SavedSession`] per dataset (keyed by its content
//! fingerprint) saying how to get the dataset back, one [`SavedCuration`] per pair a person
//! changed and one [`SavedScores`] per pair scored here. Pairs are saved one by one as they
//! change, never the whole state at once.
//!
//! Restoring replays the changes through the same methods as the UI, so δ is recomputed, never
//! trusted from storage, and scores are applied only to the sub-sentences they were computed for.

use dama_data::{Annotation, Scores, SubSentences};
use serde::{Deserialize, Serialize};

use crate::session::{Session, answers_key, subs_key};

/// Bump when a stored shape changes; older records are then ignored rather than misread.
pub const VERSION: u32 = 2;

/// How a saved dataset comes back after a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetSource {
    /// The bundled demo set.
    Demo,
    /// Picked files, stored alongside when the browser has room (`kept`).
    Files {
        names: Vec<String>,
        bytes: u64,
        kept: bool,
    },
}

/// One dataset's saved session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    pub version: u32,
    pub fingerprint: String,
    pub name: String,
    pub pairs: usize,
    /// The model behind the scores saved with it.
    #[serde(default)]
    pub clip_model: Option<String>,
    pub source: DatasetSource,
}

impl SavedSession {
    pub fn of(session: &Session, source: DatasetSource) -> Self {
        Self {
            version: VERSION,
            fingerprint: session.fingerprint.clone(),
            name: session.name.clone(),
            pairs: session.len(),
            clip_model: session.clip_model.clone(),
            source,
        }
    }
}

/// A person's changes to one pair.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SavedCuration {
    pub id: String,
    /// The annotation, when it differs from the loaded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<Annotation>,
    /// Both answers' texts (after any swap), when a person edited one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<[String; 2]>,
    /// A person's sub-sentences (in the current orientation, i.e. after any swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subs: Option<SubSentences>,
    /// The reviewed flag as saves before 2026-12-04 kept it, outside the annotation (read,
    /// never written: the annotation carries it now).
    #[serde(default, skip_serializing)]
    pub reviewed: bool,
}

/// Scores computed in this browser for one pair, for the sub-sentences with key `key` (the
/// current ones, or those before an edit that is still waiting for new scores).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedScores {
    pub id: String,
    /// `subs_key` as hex (JSON numbers lose u64 precision in JavaScript tools).
    pub key: String,
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
}

fn hex(key: u64) -> String {
    format!("{key:016x}")
}

/// Pair `i`'s changes, or `None` when it is as loaded (its record is then deleted).
pub fn capture_curation(session: &Session, i: usize) -> Option<SavedCuration> {
    let p = &session.pairs[i];
    let loaded = &session.loaded[i];
    let subs = p.sub_sentences.as_ref();
    let saved = SavedCuration {
        id: p.id.clone(),
        annotation: (p.annotation != loaded.annotation).then(|| p.annotation.clone()),
        answers: (answers_key(p) != loaded.answers_key)
            .then(|| [p.chosen.clone(), p.rejected.clone()]),
        subs: subs
            .filter(|s| p.annotation.edited && subs_key(s) != loaded.subs_key)
            .cloned(),
        reviewed: false,
    };
    let unchanged = SavedCuration {
        id: saved.id.clone(),
        ..SavedCuration::default()
    };
    (saved != unchanged).then_some(saved)
}

/// Pair `i`'s scores computed here, or `None` (its record is then deleted).
pub fn capture_scores(session: &Session, i: usize) -> Option<SavedScores> {
    let p = &session.pairs[i];
    let (subs, scores) = match (session.scored_here[i], &p.sub_sentences, &p.scores) {
        (true, Some(subs), Some(s)) => (subs, s),
        _ => {
            let b = session.before_edit(i).filter(|b| b.scored_here)?;
            (b.subs.as_ref()?, b.scores.as_ref()?)
        }
    };
    Some(SavedScores {
        id: p.id.clone(),
        key: hex(subs_key(subs)),
        chosen: scores.chosen.clone(),
        rejected: scores.rejected.clone(),
    })
}

/// What a restore did, for the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    pub curated: usize,
    pub scores: usize,
    /// Saved pairs whose id the dataset no longer has.
    pub unknown: usize,
    /// Scores left out: the dataset arrived with another model's scores.
    pub foreign_scores: usize,
}

/// Replays saved records onto a freshly loaded session; afterwards nothing is marked unsaved.
pub fn restore(
    session: &mut Session,
    saved: &SavedSession,
    curation: impl IntoIterator<Item = SavedCuration>,
    scores: impl IntoIterator<Item = SavedScores>,
) -> Restored {
    let mut out = Restored::default();
    if saved.version != VERSION {
        return out;
    }
    for c in curation {
        match session.position(&c.id) {
            Some(i) => {
                replay(session, i, &c);
                out.curated += 1;
            }
            None => out.unknown += 1,
        }
    }
    let model = saved.clip_model.clone().unwrap_or_default();
    let foreign = session.check_model(&model).is_err();
    for s in scores {
        let Some(i) = session.position(&s.id) else {
            out.unknown += 1;
            continue;
        };
        if foreign {
            // The dataset arrived with another model's scores: keep those, leave ours.
            out.foreign_scores += 1;
            continue;
        }
        let scores = Scores {
            chosen: s.chosen,
            rejected: s.rejected,
        };
        let current = session.pairs[i].sub_sentences.as_ref().map(subs_key);
        if current.map(hex).as_deref() == Some(s.key.as_str()) {
            let id = session.pairs[i].id.clone();
            if session
                .apply_scores(&model, &id, current.expect("checked"), scores)
                .is_ok_and(|applied| applied)
            {
                out.scores += 1;
            }
        } else if session.restore_before_edit(i, &s.key, scores) {
            out.scores += 1;
        }
    }
    session.take_dirty();
    out
}

/// Swap, answers, sub-sentences, then the annotation: the order the UI's own methods need.
fn replay(session: &mut Session, i: usize, c: &SavedCuration) {
    if let Some(annotation) = &c.annotation
        && annotation.swapped != session.pairs[i].annotation.swapped
    {
        // A pair with δ but no scores loses δ here, exactly as in the UI.
        let _ = session.swap(i);
    }
    if let Some([chosen, rejected]) = &c.answers {
        session.pairs[i].chosen = chosen.clone();
        session.pairs[i].rejected = rejected.clone();
    }
    if let Some(subs) = &c.subs {
        session.set_sub_sentences(i, subs.clone());
    }
    if let Some(annotation) = &c.annotation {
        session.pairs[i].annotation = annotation.clone();
    }
    if c.reviewed {
        session.pairs[i].annotation.reviewed = true;
    }
}

/// The localStorage key under which the explorer kept a dataset's curation before IndexedDB.
pub fn legacy_key(fingerprint: &str) -> String {
    format!("dama-web:v1:{fingerprint}")
}

/// What the localStorage version kept (one JSON value per dataset: the model, and per pair the
/// changed annotation, sub-sentences and scores computed here), as today's records, so that an
/// update never loses a curation made before it. `None` for anything else.
pub fn from_legacy(json: &str) -> Option<(Option<String>, Vec<SavedCuration>, Vec<SavedScores>)> {
    #[derive(Deserialize)]
    struct Saved {
        version: u32,
        #[serde(default)]
        clip_model: Option<String>,
        pairs: std::collections::BTreeMap<String, Pair>,
    }
    #[derive(Deserialize)]
    struct Pair {
        #[serde(default)]
        annotation: Option<Annotation>,
        #[serde(default)]
        subs: Option<SubSentences>,
        #[serde(default)]
        scores: Option<Old>,
    }
    #[derive(Deserialize)]
    struct Old {
        key: String,
        chosen: Vec<f64>,
        rejected: Vec<f64>,
    }
    let saved: Saved = serde_json::from_str(json).ok()?;
    if saved.version != 1 {
        return None;
    }
    let mut curation = Vec::new();
    let mut scores = Vec::new();
    for (id, p) in saved.pairs {
        if p.annotation.is_some() || p.subs.is_some() {
            curation.push(SavedCuration {
                id: id.clone(),
                annotation: p.annotation,
                subs: p.subs,
                ..SavedCuration::default()
            });
        }
        if let Some(s) = p.scores {
            scores.push(SavedScores {
                id,
                key: s.key,
                chosen: s.chosen,
                rejected: s.rejected,
            });
        }
    }
    Some((saved.clip_model, curation, scores))
}

impl Session {
    /// Pairs that have something to save (after a restore from the localStorage version,
    /// to write them into today's storage).
    pub fn mark_all_saved_dirty(&mut self) {
        let mut dirty = crate::session::Dirty::default();
        for i in 0..self.len() {
            if capture_curation(self, i).is_some() {
                dirty.curation.insert(i);
            }
            if capture_scores(self, i).is_some() {
                dirty.scores.insert(i);
            }
        }
        self.mark_dirty(dirty);
    }

    /// Puts saved scores back as the old scores of an edited pair, when they belong to the
    /// sub-sentences it had before the edit.
    fn restore_before_edit(&mut self, i: usize, key: &str, scores: Scores) -> bool {
        let estimator = self.estimator;
        let Some(b) = self.before_edit.get_mut(&i) else {
            return false;
        };
        if b.subs_key().map(hex).as_deref() != Some(key) {
            return false;
        }
        let Ok(h) = dama_core::delta(&scores.chosen, &scores.rejected, estimator) else {
            return false;
        };
        b.scores = Some(scores);
        b.delta = Some(h.delta);
        b.delta_edge = Some(h.edge);
        b.scored_here = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{DEMO_PAIRS, demo_session};
    use crate::session::{ScoreState, Side};
    use dama_data::Status;

    /// What the browser would store: every pair's records, through JSON.
    fn store(s: &Session) -> (SavedSession, Vec<SavedCuration>, Vec<SavedScores>) {
        let session = SavedSession::of(s, DatasetSource::Demo);
        let cur = (0..s.len())
            .filter_map(|i| capture_curation(s, i))
            .map(|c| serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap())
            .collect();
        let sc = (0..s.len())
            .filter_map(|i| capture_scores(s, i))
            .map(|c| serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap())
            .collect();
        (session, cur, sc)
    }

    #[test]
    fn a_reload_gets_back_curation_and_scores() {
        let mut s = demo_session();
        crate::export::tests::score_all(&mut s);
        s.set_status(1, Status::Drop);
        s.swap(2).unwrap();
        s.set_tags(3, "blurry");
        s.set_note(3, "look again");
        s.set_reviewed(5, true);
        let key = s.edit_sub_sentence(4, Side::Rejected, 0, "A purple star on the left.");
        let subs = s.pairs[4].sub_sentences.clone().unwrap();
        s.apply_scores(
            "synthetic scores",
            &s.pairs[4].id.clone(),
            key,
            Scores {
                chosen: vec![25.0; subs.chosen.len()],
                rejected: vec![20.0; subs.rejected.len()],
            },
        )
        .unwrap();
        s.edit_answer(6, Side::Chosen, "A new answer. With two sentences.")
            .unwrap();
        let (meta, cur, sc) = store(&s);
        assert_eq!(cur.len(), 6);
        assert_eq!(
            sc.len(),
            DEMO_PAIRS,
            "every pair was scored here (the edited one's old scores)"
        );

        let mut again = demo_session();
        assert_eq!(again.fingerprint, s.fingerprint);
        let r = restore(&mut again, &meta, cur, sc);
        assert_eq!(
            r,
            Restored {
                curated: 6,
                scores: DEMO_PAIRS,
                unknown: 0,
                foreign_scores: 0
            }
        );
        for (a, b) in again.pairs.iter().zip(&s.pairs) {
            assert_eq!(a.annotation, b.annotation);
            assert_eq!((&a.chosen, &a.rejected), (&b.chosen, &b.rejected));
            assert_eq!(a.sub_sentences, b.sub_sentences);
            assert_eq!((&a.scores, a.delta), (&b.scores, b.delta));
        }
        assert!(
            again.pairs[5].annotation.reviewed,
            "the reviewed flag comes back"
        );
        assert_eq!(again.score_state(6), s.score_state(6));
        assert!(matches!(
            again.score_state(6),
            ScoreState::Pending { old: Some(_) }
        ));
        assert_eq!(again.clip_model.as_deref(), Some("synthetic scores"));
        assert!(!again.has_unsaved(), "what was restored is what is stored");
        let (_, cur2, sc2) = store(&again);
        let (_, cur1, sc1) = store(&s);
        assert_eq!((cur2, sc2), (cur1, sc1), "a restore is a fixed point");
    }

    #[test]
    fn an_edit_not_yet_scored_restores_without_scores() {
        let mut s = demo_session();
        s.edit_sub_sentence(0, Side::Chosen, 0, "Edited.");
        let (meta, cur, sc) = store(&s);
        assert_eq!((cur.len(), sc.len()), (1, 0));
        let mut again = demo_session();
        restore(&mut again, &meta, cur, sc);
        assert_eq!(
            again.pairs[0].sub_sentences.as_ref().unwrap().chosen[0],
            "Edited."
        );
        assert_eq!(again.unscored().len(), DEMO_PAIRS);
    }

    #[test]
    fn what_the_localstorage_version_saved_comes_over() {
        let s = demo_session();
        let p0 = &s.pairs[0];
        let key = format!("{:016x}", subs_key(p0.sub_sentences.as_ref().unwrap()));
        let n_c = p0.sub_sentences.as_ref().unwrap().chosen.len();
        let n_r = p0.sub_sentences.as_ref().unwrap().rejected.len();
        // The shape the localStorage version wrote (persist.rs before IndexedDB).
        let json = serde_json::json!({
            "version": 1,
            "clip_model": "m",
            "pairs": {
                p0.id.clone(): { "scores": { "key": key, "chosen": vec![25.0; n_c], "rejected": vec![20.0; n_r] } },
                s.pairs[2].id.clone(): { "annotation": { "status": "drop", "swapped": false, "tags": [], "note": "old note", "edited": false } },
            }
        })
        .to_string();
        let (model, cur, sc) = from_legacy(&json).unwrap();
        assert_eq!((model.as_deref(), cur.len(), sc.len()), (Some("m"), 1, 1));
        let mut again = demo_session();
        let meta = SavedSession {
            clip_model: model,
            ..SavedSession::of(&again, DatasetSource::Demo)
        };
        let r = restore(&mut again, &meta, cur, sc);
        assert_eq!((r.curated, r.scores), (1, 1));
        assert!(!again.pairs[2].is_kept());
        assert_eq!(again.pairs[2].annotation.note, "old note");
        assert!(again.pairs[0].delta.is_some());
        again.mark_all_saved_dirty();
        let d = again.take_dirty();
        assert_eq!(
            (d.curation.len(), d.scores.len()),
            (1, 1),
            "written to today's storage next"
        );
        assert_eq!(from_legacy(r#"{"version": 2, "pairs": {}}"#), None);
        assert_eq!(legacy_key("ab"), "dama-web:v1:ab");
    }

    #[test]
    fn stale_and_foreign_entries_are_ignored() {
        let mut s = demo_session();
        let meta = SavedSession {
            clip_model: Some("m".into()),
            ..SavedSession::of(&s, DatasetSource::Demo)
        };
        let cur = vec![SavedCuration {
            id: "nope".into(),
            reviewed: true,
            ..SavedCuration::default()
        }];
        let sc = vec![SavedScores {
            id: s.pairs[0].id.clone(),
            key: "0000000000000000".into(),
            chosen: vec![1.0],
            rejected: vec![1.0],
        }];
        let r = restore(&mut s, &meta, cur.clone(), sc.clone());
        assert_eq!(
            r,
            Restored {
                unknown: 1,
                ..Restored::default()
            }
        );
        assert_eq!(s.scored_count(), 0);
        let old = SavedSession { version: 1, ..meta };
        assert_eq!(restore(&mut s, &old, cur, sc), Restored::default());
    }
}

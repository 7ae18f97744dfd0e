//! What survives a reload, stored per dataset (keyed by its content fingerprint) as one JSON
//! value in the browser's localStorage: a person's changes to each pair (status, swap, tags,
//! note, edited sub-sentences) and the scores computed here, each with the key of the
//! sub-sentences it belongs to. Restoring replays the changes through the same
//! `dama-data` methods as the UI, so δ is recomputed, never trusted from storage.

use std::collections::BTreeMap;

use dama_data::{Annotation, Scores, SubSentences};
use serde::{Deserialize, Serialize};

use crate::session::{Session, subs_key};

/// Bump when the stored shape changes; older entries are then ignored rather than misread.
pub const VERSION: u32 = 1;

/// The localStorage key of a dataset's saved state.
pub fn storage_key(session: &Session) -> String {
    format!("dama-web:v{VERSION}:{}", session.fingerprint)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    /// The model behind `scores` below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_model: Option<String>,
    pub pairs: BTreeMap<String, SavedPair>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SavedPair {
    /// The annotation, when it differs from the loaded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<Annotation>,
    /// A person's sub-sentences (in the current orientation, i.e. after any swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subs: Option<SubSentences>,
    /// Scores computed in this browser, for the sub-sentences with key `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<SavedScores>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedScores {
    /// `subs_key` as hex (JSON numbers lose u64 precision in JavaScript tools).
    pub key: String,
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
}

/// The session's changes and scores, to store.
pub fn capture(session: &Session) -> Saved {
    let mut pairs = BTreeMap::new();
    for (i, p) in session.pairs.iter().enumerate() {
        let loaded = &session.loaded[i];
        let subs = p.sub_sentences.as_ref();
        let saved = SavedPair {
            annotation: (p.annotation != loaded.annotation).then(|| p.annotation.clone()),
            subs: subs
                .filter(|s| p.annotation.edited && subs_key(s) != loaded.subs_key)
                .cloned(),
            scores: match (session.scored_here[i], subs, &p.scores) {
                (true, Some(subs), Some(s)) => Some(SavedScores {
                    key: format!("{:016x}", subs_key(subs)),
                    chosen: s.chosen.clone(),
                    rejected: s.rejected.clone(),
                }),
                _ => None,
            },
        };
        if saved != SavedPair::default() {
            pairs.insert(p.id.clone(), saved);
        }
    }
    Saved {
        version: VERSION,
        clip_model: session.clip_model.clone(),
        pairs,
    }
}

/// What a restore did, for the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    pub curated: usize,
    pub scores: usize,
    /// Saved pairs whose id the dataset no longer has.
    pub unknown: usize,
}

/// Replays `saved` onto a freshly loaded session.
pub fn restore(session: &mut Session, saved: &Saved) -> Restored {
    let mut out = Restored::default();
    if saved.version != VERSION {
        return out;
    }
    let model = saved.clip_model.clone().unwrap_or_default();
    if session.check_model(&model).is_err() {
        // The dataset arrived with another model's scores: keep those, drop ours.
        return restore_annotations_only(session, saved);
    }
    for (id, sp) in &saved.pairs {
        let Some(i) = session.position(id) else {
            out.unknown += 1;
            continue;
        };
        out.curated += usize::from(replay(session, i, sp));
        if let Some(s) = &sp.scores {
            let subs = session.pairs[i].sub_sentences.as_ref();
            if subs.map(|s| format!("{:016x}", subs_key(s))).as_deref() == Some(s.key.as_str()) {
                let scores = Scores {
                    chosen: s.chosen.clone(),
                    rejected: s.rejected.clone(),
                };
                let key = subs_key(subs.expect("checked"));
                if session.apply_scores(&model, id, key, scores).is_ok() {
                    out.scores += 1;
                }
            }
        }
    }
    out
}

fn restore_annotations_only(session: &mut Session, saved: &Saved) -> Restored {
    let mut out = Restored::default();
    for (id, sp) in &saved.pairs {
        match session.position(id) {
            Some(i) => out.curated += usize::from(replay(session, i, sp)),
            None => out.unknown += 1,
        }
    }
    out
}

/// Swap, edit, then the annotation: the order the UI's own methods need. True if anything
/// of a person's was replayed.
fn replay(session: &mut Session, i: usize, sp: &SavedPair) -> bool {
    let Some(annotation) = &sp.annotation else {
        return false;
    };
    if annotation.swapped != session.pairs[i].annotation.swapped {
        // A pair with δ but no scores loses δ here, exactly as in the UI.
        let _ = session.swap(i);
    }
    if let Some(subs) = &sp.subs {
        session.pairs[i].edit_sub_sentences(subs.clone());
    }
    session.pairs[i].annotation = annotation.clone();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::demo_session;
    use crate::session::Side;
    use dama_data::Status;

    #[test]
    fn a_reload_gets_back_curation_and_scores() {
        let mut s = demo_session();
        crate::export::tests::score_all(&mut s);
        s.set_status(1, Status::Drop);
        s.swap(2).unwrap();
        s.set_tags(3, "blurry");
        s.set_note(3, "look again");
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
        let saved = capture(&s);
        let json = serde_json::to_string(&saved).unwrap();
        assert_eq!(saved.pairs.len(), 48, "every pair was scored here");

        let mut again = demo_session();
        assert_eq!(storage_key(&again), storage_key(&s));
        let r = restore(&mut again, &serde_json::from_str(&json).unwrap());
        assert_eq!(
            r,
            Restored {
                curated: 4,
                scores: 48,
                unknown: 0
            }
        );
        for (a, b) in again.pairs.iter().zip(&s.pairs) {
            assert_eq!(a.annotation, b.annotation);
            assert_eq!(a.sub_sentences, b.sub_sentences);
            assert_eq!((&a.scores, a.delta), (&b.scores, b.delta));
        }
        assert_eq!(again.clip_model.as_deref(), Some("synthetic scores"));
        assert_eq!(capture(&again), saved, "a restore is a fixed point");
    }

    #[test]
    fn an_edit_not_yet_scored_restores_without_scores() {
        let mut s = demo_session();
        s.edit_sub_sentence(0, Side::Chosen, 0, "Edited.");
        let saved = capture(&s);
        assert_eq!(saved.pairs.len(), 1);
        let mut again = demo_session();
        restore(&mut again, &saved);
        assert_eq!(
            again.pairs[0].sub_sentences.as_ref().unwrap().chosen[0],
            "Edited."
        );
        assert_eq!(again.unscored().len(), 48);
    }

    #[test]
    fn stale_and_foreign_entries_are_ignored() {
        let mut s = demo_session();
        let saved = Saved {
            version: VERSION,
            clip_model: Some("m".into()),
            pairs: BTreeMap::from([
                ("nope".into(), SavedPair::default()),
                (
                    s.pairs[0].id.clone(),
                    SavedPair {
                        scores: Some(SavedScores {
                            key: "0000000000000000".into(),
                            chosen: vec![1.0],
                            rejected: vec![1.0],
                        }),
                        ..SavedPair::default()
                    },
                ),
            ]),
        };
        let r = restore(&mut s, &saved);
        assert_eq!(
            r,
            Restored {
                curated: 0,
                scores: 0,
                unknown: 1
            }
        );
        assert_eq!(s.scored_count(), 0);
        let old = Saved {
            version: 0,
            ..saved
        };
        assert_eq!(restore(&mut s, &old), Restored::default());
    }
}

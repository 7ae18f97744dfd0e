//! The saving policy: what a save writes, what a failed save means, and what the page says
//! about it. The browser side (`ui::saver`) runs it against IndexedDB.
//!
//! Only changed pairs are written ([`Session::take_dirty`]). A person's curation comes first:
//! it cannot be recomputed, while scores can and the dataset can be picked again. So when the
//! browser refuses a write (its storage quota is full), the page first frees room by forgetting
//! the stored dataset file, then the scores computed here, and tries the curation again; scores
//! that fail stop being saved (no retry loop) and the page says so in a banner with an export.
//! Nothing is ever dropped from the session itself: what was not saved stays marked unsaved.

use crate::persist::{capture_curation, capture_scores};
use crate::session::{Dirty, Session};

/// Records to write for one kind: `(pair id, JSON)` to put, `(pair id, None)` to delete.
pub type Writes = Vec<(String, Option<String>)>;

/// What one save writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub curation: Writes,
    pub scores: Writes,
    /// The pairs behind the writes, handed back to the session if a write fails.
    pub taken: Dirty,
}

impl Batch {
    /// Takes the session's changed pairs; with `scores` false (saving scores was paused after a
    /// failure) their scores stay marked unsaved and are not written.
    pub fn take(session: &mut Session, scores: bool) -> Batch {
        let mut taken = session.take_dirty();
        if !scores {
            session.mark_dirty(Dirty {
                scores: std::mem::take(&mut taken.scores),
                ..Dirty::default()
            });
        }
        let curation = taken
            .curation
            .iter()
            .map(|&i| {
                let id = session.pairs[i].id.clone();
                (id, capture_curation(session, i).map(|c| json(&c)))
            })
            .collect();
        let scores = taken
            .scores
            .iter()
            .map(|&i| {
                let id = session.pairs[i].id.clone();
                (id, capture_scores(session, i).map(|c| json(&c)))
            })
            .collect();
        Batch {
            curation,
            scores,
            taken,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.curation.is_empty() && self.scores.is_empty()
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records always serialise")
}

/// Why the browser refused a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The storage quota for this page is used up.
    Full,
    /// IndexedDB is missing or blocked (a private window, a browser setting).
    Unavailable(String),
    Other(String),
}

impl Refusal {
    pub fn plain(&self) -> String {
        match self {
            Refusal::Full => "the browser's storage for this page is full".to_owned(),
            Refusal::Unavailable(why) => {
                format!("this browser offers no storage to the page ({why})")
            }
            Refusal::Other(why) => format!("the browser refused to store it ({why})"),
        }
    }
}

/// Whether the dataset itself is kept in the browser (so a reload needs no file picking).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum DatasetKept {
    /// The bundled demo set: nothing to keep.
    #[default]
    Builtin,
    Kept {
        bytes: u64,
    },
    NotKept {
        bytes: u64,
        why: Refusal,
    },
    /// Forgotten to make room for the curation.
    Evicted {
        bytes: u64,
    },
}

/// How saving stands, for the status area and the banner.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    pub dataset: DatasetKept,
    /// Saving scores stopped after this refusal (until "Try again").
    pub scores: Option<Refusal>,
    /// The curation could not be saved even after freeing room.
    pub curation: Option<Refusal>,
    /// The scores stored earlier were forgotten to make room for the curation.
    pub scores_evicted: bool,
    /// The clock time of the last save that wrote everything asked ("14:03:05").
    pub saved_at: Option<String>,
    /// Writes the browser refused so far (each one is tried once: no retry loop).
    pub refused: u32,
}

/// How many pairs have changes not yet in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unsaved {
    pub curation: usize,
    pub scores: usize,
}

impl Unsaved {
    pub fn of(session: &Session) -> Self {
        Unsaved {
            curation: session.dirty.curation.len(),
            scores: session.dirty.scores.len(),
        }
    }
}

/// The red banner: what is not saved, in plain words, with an export offered beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Banner {
    pub text: String,
    /// The curation itself is at risk (not only scores).
    pub severe: bool,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl Health {
    /// The banner, if anything a person did or computed is not saved.
    pub fn banner(&self, unsaved: Unsaved) -> Option<Banner> {
        if let Some(why) = &self.curation {
            let n = unsaved.curation;
            if n == 0 {
                return Some(Banner {
                    text: format!(
                        "Nothing you change here is saved: {}. Export your work before you close or reload this page.",
                        why.plain()
                    ),
                    severe: true,
                });
            }
            return Some(Banner {
                text: format!(
                    "Your changes to {} pair(s) are NOT saved: {}. They are lost if this page is closed or reloaded. Export now to keep your work.",
                    crate::format::count(n),
                    why.plain()
                ),
                severe: true,
            });
        }
        let why = self.scores.as_ref()?;
        let n = unsaved.scores;
        let evicted = if self.scores_evicted {
            " The scores saved earlier were removed to make room for your curation."
        } else {
            ""
        };
        Some(Banner {
            text: format!(
                "Scores computed here are no longer saved: {}. Your curation is still saved. {} score(s) will have to be computed again after a reload, unless you export now.{evicted}",
                why.plain(),
                crate::format::count(n)
            ),
            severe: false,
        })
    }

    /// One line for the status area.
    pub fn line(&self, unsaved: Unsaved) -> String {
        let dataset = match &self.dataset {
            DatasetKept::Builtin => String::new(),
            DatasetKept::Kept { bytes } => {
                format!(" The dataset ({}) is kept in this browser.", mb(*bytes))
            }
            DatasetKept::NotKept { bytes, why } => format!(
                " The dataset file ({}) is not kept in this browser ({}): after a reload, pick it again and your curation comes back with it.",
                mb(*bytes),
                why.plain()
            ),
            DatasetKept::Evicted { bytes } => format!(
                " The dataset file ({}) was removed from this browser's storage to make room for your curation: after a reload, pick it again.",
                mb(*bytes)
            ),
        };
        let state = if self.curation.is_some() {
            "Not saved.".to_owned()
        } else if unsaved.curation == 0 && (unsaved.scores == 0 || self.scores.is_some()) {
            match (&self.saved_at, self.scores.is_some()) {
                (Some(t), false) => format!("All changes saved in this browser at {t}."),
                (Some(t), true) => {
                    format!("Curation saved in this browser at {t}; scores are not.")
                }
                (None, _) => "Nothing to save yet.".to_owned(),
            }
        } else {
            format!(
                "Saving {} change(s)…",
                unsaved.curation
                    + if self.scores.is_some() {
                        0
                    } else {
                        unsaved.scores
                    }
            )
        };
        format!("{state}{dataset}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{DEMO_PAIRS, demo_session};
    use crate::persist::SavedCuration;
    use dama_data::Status;

    #[test]
    fn a_save_writes_only_what_changed() {
        let mut s = demo_session();
        crate::export::tests::score_all(&mut s);
        let first = Batch::take(&mut s, true);
        assert_eq!((first.curation.len(), first.scores.len()), (0, DEMO_PAIRS));
        let tags = s.pairs[3].annotation.tags.join(", ");
        s.set_status(3, Status::Drop);
        s.set_tags(3, "x");
        let b = Batch::take(&mut s, true);
        assert_eq!(b.scores, []);
        assert_eq!(
            b.curation.len(),
            1,
            "one record per pair, however many changes"
        );
        let (id, json) = &b.curation[0];
        assert_eq!(id, &s.pairs[3].id);
        let c: SavedCuration = serde_json::from_str(json.as_deref().unwrap()).unwrap();
        assert_eq!(c.annotation.unwrap().tags, ["x"]);
        assert_ne!(tags, "x");
        // Back to as loaded: the record is deleted.
        s.set_status(3, Status::Keep);
        s.set_tags(3, &tags);
        let b = Batch::take(&mut s, true);
        assert_eq!(b.curation, [(s.pairs[3].id.clone(), None)]);
        assert!(Batch::take(&mut s, true).is_empty());
    }

    #[test]
    fn paused_scores_stay_unsaved_and_clearing_deletes_them() {
        let mut s = demo_session();
        crate::export::tests::score_all(&mut s);
        s.set_status(0, Status::Drop);
        let b = Batch::take(&mut s, false);
        assert_eq!((b.curation.len(), b.scores.len()), (1, 0));
        assert_eq!(
            s.take_dirty().scores.len(),
            DEMO_PAIRS,
            "kept for a later try"
        );
        s.clear_scores();
        let b = Batch::take(&mut s, true);
        assert_eq!(b.scores.len(), DEMO_PAIRS);
        assert!(b.scores.iter().all(|(_, v)| v.is_none()), "deletes");
    }

    #[test]
    fn the_banner_says_what_is_not_saved() {
        let mut unsaved = Unsaved {
            curation: 0,
            scores: 3,
        };
        let mut h = Health::default();
        assert_eq!(h.banner(unsaved), None);
        h.scores = Some(Refusal::Full);
        let b = h.banner(unsaved).unwrap();
        assert!(!b.severe);
        assert!(
            b.text.contains("storage for this page is full"),
            "{}",
            b.text
        );
        assert!(b.text.contains("3 score(s)"), "{}", b.text);
        assert!(b.text.contains("curation is still saved"), "{}", b.text);
        unsaved.curation = 1;
        h.curation = Some(Refusal::Full);
        let b = h.banner(unsaved).unwrap();
        assert!(
            b.severe && b.text.contains("changes to 1 pair(s) are NOT saved"),
            "{}",
            b.text
        );
        assert!(!b.text.contains("Error"), "plain words: {}", b.text);
        unsaved.curation = 0;
        let b = h.banner(unsaved).unwrap();
        assert!(
            b.severe && b.text.starts_with("Nothing you change here is saved"),
            "{}",
            b.text
        );
    }

    #[test]
    fn the_status_line_says_when_everything_is_saved() {
        let mut h = Health {
            saved_at: Some("14:03:05".into()),
            ..Health::default()
        };
        let none = Unsaved::default();
        assert_eq!(
            h.line(none),
            "All changes saved in this browser at 14:03:05."
        );
        h.dataset = DatasetKept::NotKept {
            bytes: 12_300_000,
            why: Refusal::Full,
        };
        let line = h.line(none);
        assert!(
            line.contains("12.3 MB") && line.contains("pick it again"),
            "{line}"
        );
        let some = Unsaved {
            curation: 1,
            scores: 0,
        };
        assert!(h.line(some).starts_with("Saving 1 change(s)"));
    }
}

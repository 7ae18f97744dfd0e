//! Saving in IndexedDB, as `crate::saving` decides: a short while after a change, the changed
//! pairs' records are written (curation first, then scores), one transaction each; when the
//! browser refuses the curation for lack of room, the stored dataset file and then the stored
//! scores are given up to make room. Opening a dataset restores what was saved for it; a reload
//! reopens the last dataset by itself when its file (or the demo) is at hand.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::state::AppState;
use crate::browser::store::{Kind, Store};
use crate::load;
use crate::persist::{self, DatasetSource, SavedSession, capture_scores};
use crate::saving::{Batch, DatasetKept, Refusal, Writes};
use crate::session::{Dirty, Session};

/// How long after a change the save starts (changes in between join it).
const SAVE_AFTER_MS: u64 = 300;

#[derive(Clone, Copy)]
pub struct SaverState {
    store: StoredValue<Option<Store>, LocalStorage>,
    /// How the current dataset comes back after a reload.
    pub(super) source: StoredValue<Option<DatasetSource>>,
    /// The session record last written.
    written: StoredValue<Option<SavedSession>>,
    in_flight: StoredValue<bool>,
    again: StoredValue<bool>,
    scheduled: StoredValue<bool>,
    /// Off in component tests: nothing is read from or written to storage.
    pub(super) enabled: StoredValue<bool>,
}

impl Default for SaverState {
    fn default() -> Self {
        Self::new()
    }
}

impl SaverState {
    pub fn new() -> Self {
        Self {
            store: StoredValue::new_local(None),
            source: StoredValue::new(None),
            written: StoredValue::new(None),
            in_flight: StoredValue::new(false),
            again: StoredValue::new(false),
            scheduled: StoredValue::new(false),
            enabled: StoredValue::new(false),
        }
    }
}

/// A note outside IndexedDB (localStorage, its own small quota) that a dataset's curation could
/// not all be saved, so that the next visit says its restored state is partial. `None` clears it.
pub(super) fn lost_marker(fingerprint: &str, unsaved: Option<usize>) {
    let Some(local) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) else {
        return;
    };
    let key = format!("dama-web:unsaved:{fingerprint}");
    let _ = match unsaved {
        Some(n) if n > 0 => local.set_item(&key, &n.to_string()),
        _ => local.remove_item(&key),
    };
}

/// What the note above says for a dataset being opened.
fn lost_before(fingerprint: &str) -> Option<usize> {
    web_sys::window()?
        .local_storage()
        .ok()??
        .get_item(&format!("dama-web:unsaved:{fingerprint}"))
        .ok()??
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// Restores what the localStorage version of the explorer saved for this dataset, if anything,
/// and marks it for today's storage; the words for the status line.
fn bring_over_legacy(session: &mut Session, source: &DatasetSource) -> String {
    let json = web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .and_then(|l| {
            l.get_item(&persist::legacy_key(&session.fingerprint))
                .ok()
                .flatten()
        });
    let Some((clip_model, cur, sc)) = json.as_deref().and_then(persist::from_legacy) else {
        return String::new();
    };
    let meta = SavedSession {
        clip_model,
        ..SavedSession::of(session, source.clone())
    };
    let r = persist::restore(session, &meta, cur, sc);
    session.mark_all_saved_dirty();
    format!(
        "; brought over {} curated pair(s) and {} score(s) an earlier version saved in this browser",
        r.curated, r.scores
    )
}

/// "14:03:05", for "saved at".
fn clock() -> String {
    js_sys::Date::new_0()
        .to_locale_time_string("en-GB")
        .as_string()
        .unwrap_or_default()
}

impl AppState {
    async fn store(self) -> Result<Store, Refusal> {
        if let Some(s) = self.saver.store.with_value(Clone::clone) {
            return Ok(s);
        }
        let s = Store::open().await?;
        self.saver.store.set_value(Some(s.clone()));
        Ok(s)
    }

    pub(super) fn schedule_save(self) {
        if !self.saver.enabled.get_value() || self.saver.scheduled.get_value() {
            return;
        }
        self.saver.scheduled.set_value(true);
        set_timeout(
            move || {
                self.saver.scheduled.set_value(false);
                spawn_local(self.flush());
            },
            std::time::Duration::from_millis(SAVE_AFTER_MS),
        );
    }

    /// "Try saving again" after a refusal.
    pub fn retry_saving(self) {
        self.set_health.update(|h| {
            h.scores = None;
            h.curation = None;
        });
        spawn_local(self.flush());
    }

    /// Writes what changed; one flush at a time (a change during it runs another after).
    async fn flush(self) {
        if self.saver.in_flight.get_value() {
            self.saver.again.set_value(true);
            return;
        }
        self.saver.in_flight.set_value(true);
        loop {
            self.saver.again.set_value(false);
            let went_on = self.flush_once().await;
            if !went_on || !self.saver.again.get_value() {
                break;
            }
        }
        self.saver.in_flight.set_value(false);
        self.refresh_unsaved();
        if self.with_session(Session::has_unsaved) == Some(true)
            && self
                .health
                .with_untracked(|h| h.curation.is_none() && h.scores.is_none())
        {
            self.schedule_save();
        }
    }

    /// Waits for a save under way, then saves what is left.
    async fn settle(self) {
        if !self.saver.enabled.get_value() {
            return;
        }
        while self.saver.in_flight.get_value() {
            crate::browser::sleep_ms(20).await;
        }
        self.flush().await;
    }

    /// The session record as it should be stored now.
    fn session_record(self) -> Option<SavedSession> {
        let source = self.saver.source.get_value()?;
        self.with_session(|s| SavedSession::of(s, source))
    }

    /// Hands pairs whose write failed back to the session (if it is still the same dataset).
    fn give_back(self, fingerprint: &str, dirty: Dirty) {
        self.data.update_value(|s| {
            if let Some(s) = s
                && s.fingerprint == fingerprint
            {
                s.mark_dirty(dirty);
            }
        });
    }

    /// One save. False when saving stopped (refused, no storage).
    async fn flush_once(self) -> bool {
        if self.health.with_untracked(|h| h.curation.is_some()) {
            return false;
        }
        let store = match self.store().await {
            Ok(s) => s,
            Err(why) => {
                self.set_health.update(|h| h.curation = Some(why));
                return false;
            }
        };
        let scores_on = self.health.with_untracked(|h| h.scores.is_none());
        let taken = self
            .data
            .try_update_value(|s| {
                s.as_mut()
                    .map(|s| (s.fingerprint.clone(), Batch::take(s, scores_on)))
            })
            .flatten();
        let Some((fp, batch)) = taken else {
            return true;
        };
        if let Err(why) = self.write_essential(&store, &fp, &batch.curation).await {
            self.give_back(&fp, batch.taken);
            self.set_health.update(|h| {
                h.curation = Some(why);
                h.refused += 1;
            });
            self.refresh_unsaved();
            let n = self.with_session(|s| crate::saving::Unsaved::of(s).curation);
            lost_marker(&fp, n);
            return false;
        }
        if !batch.curation.is_empty() {
            lost_marker(&fp, None);
        }
        let mut all = true;
        if !batch.scores.is_empty()
            && let Err(why) = store.write(&fp, Kind::Scores, &batch.scores).await
        {
            self.give_back(
                &fp,
                Dirty {
                    scores: batch.taken.scores,
                    ..Dirty::default()
                },
            );
            self.set_health.update(|h| {
                h.scores = Some(why);
                h.refused += 1;
            });
            all = false;
        }
        if all || self.health.with_untracked(|h| h.scores.is_some()) {
            self.set_health.update(|h| h.saved_at = Some(clock()));
        }
        self.refresh_unsaved();
        true
    }

    /// The session record (when it changed) and the curation, making room when refused.
    async fn write_essential(
        self,
        store: &Store,
        fp: &str,
        curation: &Writes,
    ) -> Result<(), Refusal> {
        loop {
            let record = self.session_record().filter(|r| r.fingerprint == fp);
            let result = async {
                if let Some(r) = &record
                    && self.saver.written.with_value(|w| w.as_ref() != Some(r))
                {
                    store.save_session(r).await?;
                    self.saver.written.set_value(Some(r.clone()));
                }
                if !curation.is_empty() {
                    store.write(fp, Kind::Curation, curation).await?;
                }
                Ok(())
            }
            .await;
            match result {
                Err(Refusal::Full) if self.make_room(store, fp).await => {
                    self.set_health.update(|h| h.refused += 1);
                    continue;
                }
                other => return other,
            }
        }
    }

    /// Frees room for the curation: the dataset file first, then the saved scores. False when
    /// nothing is left to give up.
    async fn make_room(self, store: &Store, fp: &str) -> bool {
        if let DatasetKept::Kept { bytes } = self.health.with_untracked(|h| h.dataset.clone()) {
            if store.drop_files(fp).await.is_err() {
                return false;
            }
            self.set_health
                .update(|h| h.dataset = DatasetKept::Evicted { bytes });
            self.saver.source.update_value(|s| {
                if let Some(DatasetSource::Files { kept, .. }) = s {
                    *kept = false;
                }
            });
            return true;
        }
        if !self.health.with_untracked(|h| h.scores_evicted) {
            if store.drop_scores(fp).await.is_err() {
                return false;
            }
            // The scores are gone from storage: all of them are unsaved again.
            self.data.update_value(|s| {
                if let Some(s) = s {
                    let all: Vec<usize> = (0..s.len())
                        .filter(|&i| capture_scores(s, i).is_some())
                        .collect();
                    s.mark_dirty(Dirty {
                        scores: all.into_iter().collect(),
                        ..Dirty::default()
                    });
                }
            });
            self.set_health.update(|h| {
                h.scores_evicted = true;
                h.scores = Some(Refusal::Full);
            });
            return true;
        }
        false
    }

    /// Opens a loaded dataset: restores what this browser saved for it, installs it, then keeps
    /// its files (`files`, when picked now) if the browser has room.
    pub(super) async fn open_session(
        self,
        mut session: Session,
        source: DatasetSource,
        files: Option<Vec<web_sys::File>>,
        opening: &str,
    ) {
        // The dataset open now is replaced: its last changes are written first.
        self.settle().await;
        let mut text = format!("{opening}{}", session.summary);
        let mut health = crate::saving::Health {
            refused: self.health.with_untracked(|h| h.refused),
            ..crate::saving::Health::default()
        };
        let store = if self.saver.enabled.get_value() {
            self.store().await
        } else {
            Err(Refusal::Unavailable("storage is off".into()))
        };
        match &store {
            Ok(store) => {
                if let Some(saved) = store.session(&session.fingerprint).await {
                    match store.records(&session.fingerprint).await {
                        Ok((cur, sc)) => {
                            let r = persist::restore(&mut session, &saved, cur, sc);
                            text += &format!(
                                "; restored {} curated pair(s) and {} score(s) saved in this browser",
                                r.curated, r.scores
                            );
                            if r.foreign_scores > 0 {
                                text += &format!(
                                    " ({} saved score(s) left out: they come from another model than the dataset's)",
                                    r.foreign_scores
                                );
                            }
                        }
                        Err(why) => {
                            text += &format!(
                                "; what was saved for it could not be read: {}",
                                why.plain()
                            )
                        }
                    }
                    self.saver.written.set_value(Some(saved));
                } else {
                    self.saver.written.set_value(None);
                    text += &bring_over_legacy(&mut session, &source);
                }
            }
            Err(why) if self.saver.enabled.get_value() => health.curation = Some(why.clone()),
            Err(_) => {}
        }
        let mut warnings = session.warnings.clone();
        let fp = session.fingerprint.clone();
        if let Some(n) = lost_before(&fp) {
            warnings.push(format!(
                "this browser could not save changes to {n} pair(s) of this dataset last time (its storage was full): they are missing here"
            ));
        }
        health.dataset = match &source {
            DatasetSource::Demo => DatasetKept::Builtin,
            DatasetSource::Files {
                bytes, kept: true, ..
            } => DatasetKept::Kept { bytes: *bytes },
            // Said once the browser has taken the files or refused them.
            DatasetSource::Files { .. } => DatasetKept::Builtin,
        };
        self.set_health.set(health);
        self.install(session, source);
        if warnings.is_empty() {
            self.info(text);
        } else {
            self.warn(format!("{}. {text}", warnings.join("; ")));
        }
        if let (Ok(store), Some(files)) = (&store, files) {
            let bytes: u64 = files.iter().map(|f| f.size() as u64).sum();
            let kept = store.save_files(&fp, &files).await;
            let still = self.with_session(|s| s.fingerprint == fp) == Some(true);
            if still {
                match kept {
                    Ok(()) => {
                        crate::browser::store::ask_persistence().await;
                        self.saver.source.update_value(|s| {
                            if let Some(DatasetSource::Files { kept, .. }) = s {
                                *kept = true;
                            }
                        });
                        self.set_health
                            .update(|h| h.dataset = DatasetKept::Kept { bytes });
                    }
                    Err(why) => self
                        .set_health
                        .update(|h| h.dataset = DatasetKept::NotKept { bytes, why }),
                }
            }
        }
        // The session record is written by this save.
        self.schedule_save_now();
    }

    /// A save right away (a dataset was opened: its record is written).
    fn schedule_save_now(self) {
        if self.saver.enabled.get_value() {
            spawn_local(self.flush());
        }
    }

    /// After a reload: reopens the last dataset when the browser has it (the demo, or files it
    /// kept), or says which file to pick again.
    pub(super) async fn reopen_last(self) {
        let store = match self.store().await {
            Ok(s) => s,
            Err(why) => {
                self.set_health.update(|h| h.curation = Some(why));
                return;
            }
        };
        let Some(saved) = store.last().await else {
            return;
        };
        if saved.version != persist::VERSION {
            return;
        }
        let opening = "reopened from this browser's storage: ";
        match &saved.source {
            DatasetSource::Demo => match load::load_demo() {
                Ok(s) => self.open_session(s, DatasetSource::Demo, None, opening).await,
                Err(e) => self.error(format!("could not reopen the demo set: {e}")),
            },
            DatasetSource::Files { names, kept: true, .. } => {
                self.info(format!("reopening {} ({} pairs) from this browser's storage…", saved.name, saved.pairs));
                let files = match store.files(&saved.fingerprint).await {
                    Ok(f) if f.len() == names.len() => f,
                    _ => return self.warn(format!(
                        "Last time you worked on {} ({} pairs), but its file is no longer in this browser's storage: pick it again to continue; your curation comes back with it.",
                        saved.name, saved.pairs
                    )),
                };
                let picked = names.iter().cloned().zip(files).collect();
                match load::load_picked(picked) {
                    Ok(s) => self.open_session(s, saved.source.clone(), None, opening).await,
                    Err(e) => self.error(format!("could not reopen {}: {e}", saved.name)),
                }
            }
            DatasetSource::Files { .. } => self.warn(format!(
                "Last time you worked on {} ({} pairs). Its file is not kept in this browser (there was not enough room): pick it again to continue; your curation comes back with it.",
                saved.name, saved.pairs
            )),
        }
    }
}

//! Exporting: what `crate::export::plan` finds in the way is put to the person as a choice
//! (re-score, old δ flagged, without scores), then the file is made a chunk at a time and
//! streamed out (`browser::download`). "Saved" is said only when the browser confirmed it.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::state::AppState;
use crate::browser::{self, download};
use crate::export::{self, Export, Mode};

/// About this much of the file is made between two writes (and two chances for the page to
/// respond).
const CHUNK_BYTES: usize = 4 << 20;
/// How long an offered download's object URL stays valid.
const REVOKE_AFTER_MS: u64 = 120_000;

/// The export's question, when kept pairs are not ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    /// Kept pairs never scored while others are.
    pub unscored: Vec<String>,
    /// Kept pairs edited after scoring.
    pub pending: Vec<String>,
    /// The model that can score them, or why none can.
    pub scorer: Result<String, String>,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl AppState {
    /// "Export curated JSONL": exports at once when every kept pair is ready, else asks.
    pub fn export(self) {
        let Some(plan) = self.with_session(export::plan) else {
            return self.error("load a dataset first");
        };
        if plan.kept == 0 {
            return self.error("no pair is kept: nothing to export");
        }
        if plan.is_ready() {
            return spawn_local(self.run_export(Mode::Scored));
        }
        let ids = |v: &[usize]| -> Vec<String> {
            self.with_session(|s| v.iter().map(|&i| s.pairs[i].id.clone()).collect())
                .unwrap_or_default()
        };
        let scorer = match (self.ready_model(), self.cannot_score()) {
            (Some(m), None) => Ok(m),
            (_, Some(why)) => Err(why),
            (None, None) => Err("load a CLIP model first".into()),
        };
        self.dialog.set(Some(Dialog {
            unscored: ids(&plan.unscored),
            pending: ids(&plan.pending),
            scorer,
        }));
    }

    pub fn export_with(self, mode: Mode) {
        self.dialog.set(None);
        spawn_local(self.run_export(mode));
    }

    /// Scores the pairs the export waits for, then exports.
    pub fn score_then_export(self) {
        let Some(d) = self.dialog.get_untracked() else {
            return;
        };
        self.dialog.set(None);
        let ids: Vec<String> = d.pending.into_iter().chain(d.unscored).collect();
        self.info(format!(
            "scoring {} pair(s); the export starts when they are done",
            ids.len()
        ));
        self.export_after.set_value(Some(Mode::Scored));
        self.score_now(ids);
    }

    /// After a scoring run: the export that waited for it.
    pub(super) fn continue_export(self) {
        if self.export_after.get_value().is_none() || !self.scheduler.with_value(|s| s.is_idle()) {
            return;
        }
        self.export_after.set_value(None);
        self.export();
    }

    async fn run_export(self, mode: Mode) {
        let mut export = match self.with_session(|s| Export::start(s, mode)) {
            None => return self.error("load a dataset first"),
            Some(Err(e)) => return self.error(format!("export: {e}")),
            Some(Ok(e)) => e,
        };
        let name = export.name.clone();
        let mut sink =
            match download::open(&name, "annotated JSONL", "application/jsonl", ".jsonl").await {
                Ok(Some(s)) => s,
                Ok(None) => return self.info("export cancelled"),
                Err(e) => return self.error(format!("export: {e}")),
            };
        self.info(format!("exporting {name}…"));
        loop {
            match self.with_session(|s| export.next_chunk(s, CHUNK_BYTES)) {
                Some(Ok(Some(chunk))) => {
                    if let Err(e) = sink.write(&chunk).await {
                        sink.abort().await;
                        return self.error(format!("export stopped: {e}"));
                    }
                    let (done, total) = export.progress();
                    self.info(format!(
                        "exporting {name}: {done} of {total} pairs, {}…",
                        mb(export.bytes)
                    ));
                    browser::next_tick().await;
                }
                Some(Ok(None)) => break,
                Some(Err(e)) => {
                    sink.abort().await;
                    return self.error(format!("export stopped: {e}"));
                }
                None => {
                    sink.abort().await;
                    return self.error("export stopped: the dataset was closed");
                }
            }
        }
        let (_, total) = export.progress();
        let what = match mode {
            Mode::Scored => "",
            Mode::OldScoresFlagged => " (edited pairs with their old δ, tagged `stale-delta`)",
            Mode::WithoutScores => " (without scores)",
        };
        match sink.finish(&name, "application/jsonl").await {
            Ok(download::Finished::Saved) => self.info(format!(
                "saved {name}: {total} pairs, {}{what}",
                mb(export.bytes)
            )),
            Ok(download::Finished::Offered { url }) => {
                set_timeout(
                    move || download::revoke(&url),
                    std::time::Duration::from_millis(REVOKE_AFTER_MS),
                );
                self.info(format!(
                    "{name} ({total} pairs, {}){what} offered as a download: the browser saves it in its downloads folder (this page cannot see whether it did)",
                    mb(export.bytes)
                ));
            }
            Err(e) => self.error(format!("export: {e}")),
        }
    }
}

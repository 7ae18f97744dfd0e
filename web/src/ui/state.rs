//! The app's state and how views read it. Decisions are the plain modules' (`session`,
//! `curation`, `table`, `navigate`, `saving`, `export`); this file holds the data and tells the
//! views what changed, as finely as it can:
//!
//! - the session itself is a plain value ([`StoredValue`]), never one signal holding it all;
//! - each pair has its own trigger, created when a view first reads that pair
//!   ([`AppState::pair`]): a curation re-renders that pair's row and pair view only;
//! - one `aggregate` trigger stands for what depends on many pairs (δ̄ and the bands, the
//!   table's order, the histograms); during a scoring run it fires at most once a second;
//! - views get read-only handles: [`Memo`]s (`stats`, `order`, `dataset`) and the read halves
//!   of the signals only actions change (`model`, `progress`, `message`, `health`, `unsaved`).
//!
//! The actions live beside it: `saver.rs` (IndexedDB), `scoring.rs` (the worker), `exporter.rs`.

use std::collections::HashMap;

use dama_data::{DatasetStats, PreferencePair};
use gloo_worker::WorkerBridge;
use leptos::prelude::*;

use crate::browser::now_ms;
use crate::navigate::Cursor;
use crate::persist::DatasetSource;
use crate::saving::{Health, Unsaved};
use crate::scoring::{Progress, Scheduler};
use crate::session::Session;
use crate::table::{self, Filter, Sort};
use crate::worker::ScoringWorker;

use super::exporter::Dialog;

/// The name the annotated header records for the bundled model.
pub const DEMO_MODEL_NAME: &str = "dama-demo/clip (trained on the demo world)";
/// Pairs per message to the worker: about a second of ViT-B/32 work, so a cancel is quick.
pub(super) const BATCH: usize = 4;
/// During a scoring run, views that depend on every pair refresh at most this often.
const AGGREGATE_EVERY_MS: f64 = 1000.0;

#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    None,
    Loading { name: String, step: String },
    Ready { name: String, load_ms: f64 },
    Failed { name: String, error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Table,
    Pair,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Info(String),
    Warning(String),
    Error(String),
}

/// What the dataset panel shows.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetInfo {
    pub name: String,
    pub pairs: usize,
    pub scored: usize,
    pub splitter: String,
    pub clip_model: Option<String>,
}

/// Change notifications per pair, made on first read.
type Triggers = HashMap<usize, ArcTrigger>;

#[derive(Clone, Copy)]
pub struct AppState {
    pub(super) data: StoredValue<Option<Session>>,
    /// A dataset was loaded (or replaced): everything re-reads.
    pub(super) generation: Trigger,
    /// Something many views depend on changed (scores, keep/drop, …).
    pub(super) aggregate: Trigger,
    aggregate_at: StoredValue<f64>,
    aggregate_due: StoredValue<bool>,
    triggers: StoredValue<Triggers>,
    /// δ̄, bands, counts over the kept scored pairs.
    pub stats: Memo<Option<DatasetStats>>,
    /// The table's pairs, filtered and sorted: what the table draws and ◀ ▶ walk.
    pub order: Memo<Vec<u32>>,
    pub dataset: Memo<Option<DatasetInfo>>,
    // What only actions change: views get the read halves, the write halves stay here.
    pub model: ReadSignal<ModelState>,
    pub(super) set_model: WriteSignal<ModelState>,
    pub progress: ReadSignal<Progress>,
    pub(super) set_progress: WriteSignal<Progress>,
    pub message: ReadSignal<Option<Message>>,
    pub(super) set_message: WriteSignal<Option<Message>>,
    pub view: RwSignal<View>,
    /// The pair the pair view shows, and where it stood in `order`.
    pub cursor: RwSignal<Cursor>,
    pub sort: RwSignal<Sort>,
    /// The filter in effect; its text follows `filter_text` after a pause in typing.
    pub filter: RwSignal<Filter>,
    pub filter_text: RwSignal<String>,
    pub health: ReadSignal<Health>,
    pub(super) set_health: WriteSignal<Health>,
    pub unsaved: ReadSignal<Unsaved>,
    pub(super) set_unsaved: WriteSignal<Unsaved>,
    pub dialog: RwSignal<Option<Dialog>>,
    /// Where the table was scrolled, and the pair the pair view showed then (a tab switch
    /// brings the table back there, unless the person walked to another pair meanwhile).
    pub table_view: StoredValue<Option<(f64, Cursor)>>,
    /// The scoring run.
    pub(super) scheduler: StoredValue<Scheduler>,
    /// The model whose results the worker sends (set when it reports ready).
    pub(super) scoring_model: StoredValue<Option<String>>,
    /// The scoring workers (one per core, each with its own copy of the model).
    pub(super) bridges: StoredValue<Vec<WorkerBridge<ScoringWorker>>, LocalStorage>,
    pub(super) pool: StoredValue<super::scoring::Pool>,
    /// An export to start once the pairs it waits for are scored.
    pub(super) export_after: StoredValue<Option<crate::export::Mode>>,
    pub(super) saver: super::saver::SaverState,
}

impl AppState {
    /// The state alone (component tests, where no `worker.js` is served): scoring requests go
    /// nowhere, and nothing is restored.
    pub fn without_worker() -> Self {
        let data: StoredValue<Option<Session>> = StoredValue::new(None);
        let generation = Trigger::new();
        let aggregate = Trigger::new();
        let stats = Memo::new(move |_| {
            generation.track();
            aggregate.track();
            data.with_value(|s| s.as_ref().and_then(Session::stats))
        });
        let sort = RwSignal::new(Sort::default());
        let filter = RwSignal::new(Filter::default());
        let order = Memo::new(move |_| {
            generation.track();
            aggregate.track();
            let (f, s) = (filter.get(), sort.get());
            stats.with(|st| {
                data.with_value(|d| {
                    d.as_ref()
                        .map(|d| table::order(d, st.as_ref(), &f, s))
                        .unwrap_or_default()
                })
            })
        });
        let dataset = Memo::new(move |_| {
            generation.track();
            aggregate.track();
            data.with_value(|s| {
                s.as_ref().map(|s| DatasetInfo {
                    name: s.name.clone(),
                    pairs: s.len(),
                    scored: s.scored_count(),
                    splitter: s.splitter.clone(),
                    clip_model: s.clip_model.clone(),
                })
            })
        });
        let (model, set_model) = signal(ModelState::None);
        let (progress, set_progress) = signal(Progress::default());
        let (message, set_message) = signal(None);
        let (health, set_health) = signal(Health::default());
        let (unsaved, set_unsaved) = signal(Unsaved::default());
        Self {
            data,
            generation,
            aggregate,
            aggregate_at: StoredValue::new(0.0),
            aggregate_due: StoredValue::new(false),
            triggers: StoredValue::new(HashMap::new()),
            stats,
            order,
            dataset,
            model,
            set_model,
            progress,
            set_progress,
            message,
            set_message,
            view: RwSignal::new(View::Overview),
            cursor: RwSignal::new(Cursor::default()),
            sort,
            filter,
            filter_text: RwSignal::new(String::new()),
            health,
            set_health,
            unsaved,
            set_unsaved,
            dialog: RwSignal::new(None),
            table_view: StoredValue::new(None),
            scheduler: StoredValue::new(Scheduler::new(BATCH)),
            scoring_model: StoredValue::new(None),
            bridges: StoredValue::new_local(Vec::new()),
            pool: StoredValue::new(super::scoring::Pool::default()),
            export_after: StoredValue::new(None),
            saver: super::saver::SaverState::new(),
        }
    }

    pub fn info(self, text: impl Into<String>) {
        self.set_message.set(Some(Message::Info(text.into())));
    }

    pub fn warn(self, text: impl Into<String>) {
        self.set_message.set(Some(Message::Warning(text.into())));
    }

    pub fn error(self, text: impl Into<String>) {
        self.set_message.set(Some(Message::Error(text.into())));
    }

    // --- reading -------------------------------------------------------------------------

    /// Reads pair `i`, subscribing the current view to that pair's changes (and to a new
    /// dataset) only. `None` without a dataset or past its end.
    pub fn pair<T>(self, i: usize, f: impl FnOnce(&Session, &PreferencePair) -> T) -> Option<T> {
        self.generation.track();
        let trigger = self
            .triggers
            .try_update_value(|m| m.entry(i).or_insert_with(ArcTrigger::new).clone());
        if let Some(t) = trigger {
            t.track();
        }
        self.data.with_value(|s| {
            s.as_ref()
                .filter(|s| i < s.len())
                .map(|s| f(s, &s.pairs[i]))
        })
    }

    /// Reads the session without subscribing to anything (actions, not views).
    pub fn with_session<T>(self, f: impl FnOnce(&Session) -> T) -> Option<T> {
        self.data.with_value(|s| s.as_ref().map(f))
    }

    pub fn has_session(self) -> bool {
        self.data.with_value(Option::is_some)
    }

    // --- telling views ---------------------------------------------------------------------

    pub(super) fn notify_pair(self, i: usize) {
        if let Some(t) = self.triggers.with_value(|m| m.get(&i).cloned()) {
            t.notify();
        }
    }

    /// Views over many pairs refresh now.
    pub(super) fn notify_aggregate(self) {
        self.aggregate_at.set_value(now_ms());
        self.aggregate_due.set_value(false);
        self.aggregate.notify();
    }

    /// Views over many pairs refresh within a second (during a scoring run).
    pub(super) fn notify_aggregate_soon(self) {
        let wait = AGGREGATE_EVERY_MS - (now_ms() - self.aggregate_at.get_value());
        if wait <= 0.0 {
            return self.notify_aggregate();
        }
        if !self.aggregate_due.get_value() {
            self.aggregate_due.set_value(true);
            set_timeout(
                move || {
                    if self.aggregate_due.get_value() {
                        self.notify_aggregate();
                    }
                },
                std::time::Duration::from_millis(wait as u64),
            );
        }
    }

    /// A new dataset: every view re-reads, every pair trigger starts afresh.
    pub(super) fn notify_all(self) {
        self.triggers.update_value(HashMap::clear);
        self.generation.notify();
        self.notify_aggregate();
    }

    pub(super) fn refresh_unsaved(self) {
        let u = self
            .data
            .with_value(|s| s.as_ref().map(Unsaved::of))
            .unwrap_or_default();
        if self.unsaved.get_untracked() != u {
            self.set_unsaved.set(u);
            // While the curation cannot be saved, a note outside IndexedDB counts what is lost.
            if self.health.with_untracked(|h| h.curation.is_some())
                && let Some(fp) = self.with_session(|s| s.fingerprint.clone())
            {
                super::saver::lost_marker(&fp, Some(u.curation));
            }
        }
    }

    // --- curation --------------------------------------------------------------------------

    /// A person's change to pair `i`: applied, shown, saved soon.
    pub fn curate<T>(self, i: usize, change: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let mut out = None;
        self.data.update_value(|s| {
            if let Some(s) = s
                && i < s.len()
            {
                out = Some(change(s));
            }
        });
        self.notify_pair(i);
        self.notify_aggregate();
        self.changed();
        out
    }

    /// Something was changed: count it unsaved and save soon.
    pub(super) fn changed(self) {
        self.refresh_unsaved();
        self.schedule_save();
    }

    /// Installs a loaded (and restored) dataset.
    pub(super) fn install(self, session: Session, source: DatasetSource) {
        self.scheduler.update_value(Scheduler::reset);
        self.saver.source.set_value(Some(source));
        self.data.set_value(Some(session));
        self.cursor.set(Cursor::default());
        self.table_view.set_value(None);
        self.notify_all();
        self.refresh_progress();
        self.refresh_unsaved();
    }
}

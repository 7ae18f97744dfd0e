//! Models and scoring on the page's side: loading a CLIP in the workers, the run (start, cancel,
//! resume, through `crate::scoring::Scheduler`), results coming back, and the re-scoring that
//! an edit asks for. Scores mark only their pairs changed; the views over every pair refresh at
//! most once a second while a run goes on.
//!
//! Several workers score in parallel, one per core (at most [`MAX_WORKERS`]; `?workers=N` in
//! the address chooses), each with its own copy of the model: wasm has no threads here, so
//! parallel means several workers. A batch goes to whichever worker is free; each worker runs
//! the same code on the same inputs, so the scores do not depend on which one scored a pair.

use gloo_worker::Spawnable;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::state::{AppState, DEMO_MODEL_NAME, ModelState};
use crate::browser::{self, files, now_ms};
use crate::hub::{DEMO_MODEL_DIR, MODEL_FILES, ModelUrls};
use crate::protocol::{FromWorker, ScoreItem, ToWorker};
use crate::scoring::{self, RunState};
use crate::session::{ScoreState, Side};
use crate::worker::ScoringWorker;

/// Workers at most, whatever the core count: each holds a model (ViT-B/32: 600 MB).
pub const MAX_WORKERS: usize = 4;

/// What each worker is doing.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// The batch each worker is scoring.
    busy: Vec<Option<u64>>,
    /// Workers whose model is loaded, and how long the slowest took.
    ready: Vec<bool>,
    load_ms: f64,
}

impl Pool {
    fn new(workers: usize) -> Self {
        Self {
            busy: vec![None; workers],
            ready: vec![false; workers],
            load_ms: 0.0,
        }
    }

    fn free(&self) -> Option<usize> {
        (0..self.busy.len()).find(|&k| self.ready[k] && self.busy[k].is_none())
    }

    pub fn workers(&self) -> usize {
        self.busy.len()
    }
}

/// `?workers=N`, else the core count, within 1..=MAX_WORKERS.
fn worker_count() -> usize {
    let window = web_sys::window();
    let asked = window
        .as_ref()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| {
            q.trim_start_matches('?').split('&').find_map(|kv| {
                kv.strip_prefix("workers=")
                    .and_then(|v| v.parse::<usize>().ok())
            })
        });
    let cores = window
        .map(|w| w.navigator().hardware_concurrency() as usize)
        .unwrap_or(1);
    asked.unwrap_or(cores).clamp(1, MAX_WORKERS)
}

impl AppState {
    /// The state, with the scoring workers started (`worker.js`, built by trunk), saving on,
    /// and the last session reopened from storage.
    pub fn with_worker() -> Self {
        let state = Self::without_worker();
        let n = worker_count();
        let bridges = (0..n)
            .map(|k| {
                ScoringWorker::spawner()
                    .callback(move |out| state.on_worker(k, out))
                    .as_module(false)
                    .spawn("./worker.js")
            })
            .collect();
        state.bridges.set_value(bridges);
        state.pool.set_value(Pool::new(n));
        state
            .scheduler
            .update_value(|s| *s = s.clone().with_slots(n));
        state.install_bench_hook();
        state.saver.enabled.set_value(true);
        spawn_local(state.reopen_last());
        state
    }

    /// With `?bench` in the address only: `window.damaBench(repeats)` asks the worker for
    /// [`crate::bench`]'s timings of the loaded model, which arrive as JSON in
    /// `window.damaBenchResult`. For `scripts/bench-web.sh`; the explorer never sends it.
    fn install_bench_hook(self) {
        use wasm_bindgen::prelude::Closure;
        let Some(window) = web_sys::window() else {
            return;
        };
        if !window
            .location()
            .search()
            .unwrap_or_default()
            .contains("bench")
        {
            return;
        }
        let hook = Closure::<dyn Fn(u32)>::new(move |repeats: u32| {
            self.send_to(0, ToWorker::Bench { repeats })
        });
        let _ = js_sys::Reflect::set(&window, &"damaBench".into(), hook.as_ref());
        hook.forget();
    }

    fn send_to(self, worker: usize, msg: ToWorker) {
        self.bridges.with_value(|b| {
            if let Some(b) = b.get(worker) {
                b.send(msg)
            }
        });
    }

    /// How many workers score (for the progress line).
    pub fn workers(self) -> usize {
        self.pool.with_value(Pool::workers)
    }

    // --- datasets ------------------------------------------------------------------------

    pub fn load_demo(self) {
        match crate::load::load_demo() {
            Ok(s) => {
                spawn_local(self.open_session(s, crate::persist::DatasetSource::Demo, None, ""))
            }
            Err(e) => self.error(format!("could not load the demo set: {e}")),
        }
    }

    pub fn load_files(self, list: web_sys::FileList) {
        self.info(format!("reading {} file(s)…", list.length()));
        let picked = files::list(&list);
        spawn_local(async move {
            let read = match files::read_all(&list).await {
                Ok(f) => f,
                Err(e) => return self.error(e),
            };
            let names: Vec<String> = read.iter().map(|(n, _)| n.clone()).collect();
            let bytes = read.iter().map(|(_, b)| b.len() as u64).sum();
            match crate::load::load_picked(read) {
                Ok(s) => {
                    let source = crate::persist::DatasetSource::Files {
                        names,
                        bytes,
                        kept: false,
                    };
                    self.open_session(s, source, Some(picked), "").await
                }
                Err(e) => self.error(format!("could not load the dataset: {e}")),
            }
        });
    }

    // --- models --------------------------------------------------------------------------

    pub fn load_model(self, urls: ModelUrls) {
        self.info(format!("loading the CLIP model {}…", urls.name));
        self.set_model.set(ModelState::Loading {
            name: urls.name.clone(),
            step: "starting".into(),
        });
        let n = self.workers();
        self.pool.update_value(|p| *p = Pool::new(n));
        self.scheduler
            .update_value(crate::scoring::Scheduler::reset);
        for k in 0..n {
            self.send_to(k, ToWorker::Load(urls.clone()));
        }
    }

    pub fn load_demo_model(self) {
        match browser::absolute_url(&format!("{DEMO_MODEL_DIR}/")) {
            Ok(dir) => self.load_model(ModelUrls::in_folder(DEMO_MODEL_NAME, &dir, false)),
            Err(e) => self.error(e),
        }
    }

    pub fn load_hub_model(self, repo: &str) {
        match ModelUrls::hub(repo, "main") {
            Ok(urls) => self.load_model(urls),
            Err(e) => self.error(e),
        }
    }

    /// Picked `config.json`, `*.safetensors`, `tokenizer.json`, `preprocessor_config.json`.
    pub fn load_model_files(self, list: web_sys::FileList) {
        let picked = files::list(&list);
        let find = |want: &str| {
            picked.iter().find(|f| {
                let n = f.name();
                if want == MODEL_FILES[1] {
                    n.ends_with(".safetensors")
                } else {
                    n == want
                }
            })
        };
        let mut urls = Vec::new();
        for want in MODEL_FILES {
            match find(want).map(browser::object_url) {
                Some(Ok(u)) => urls.push(u),
                Some(Err(e)) => return self.error(e),
                None => return self.error(format!("pick {} too", MODEL_FILES.join(", "))),
            }
        }
        let folder = picked
            .first()
            .map(files::picked_name)
            .and_then(|p| p.rsplit_once('/').map(|(d, _)| d.to_owned()))
            .unwrap_or_else(|| "picked files".to_owned());
        let [config, weights, tokenizer, preprocessor]: [String; 4] =
            urls.try_into().expect("four");
        self.load_model(ModelUrls {
            name: folder,
            config,
            weights,
            tokenizer,
            preprocessor,
            cache: false,
        });
    }

    pub(super) fn ready_model(self) -> Option<String> {
        match self.model.get_untracked() {
            ModelState::Ready { name, .. } => Some(name),
            _ => None,
        }
    }

    // --- scoring -------------------------------------------------------------------------

    /// Why the loaded model cannot score this session, if it cannot.
    pub(super) fn cannot_score(self) -> Option<String> {
        let Some(model) = self.ready_model() else {
            return Some("load a CLIP model first (panel 2)".into());
        };
        match self.with_session(|s| s.check_model(&model)) {
            None => Some("load a dataset first".into()),
            Some(Err(e)) => Some(e.to_string()),
            Some(Ok(())) => None,
        }
    }

    fn unscored(self) -> Vec<String> {
        self.with_session(crate::session::Session::unscored)
            .unwrap_or_default()
    }

    pub fn start(self) {
        if let Some(why) = self.cannot_score() {
            return self.error(why);
        }
        let ids = self.unscored();
        self.info(format!("scoring {} pair(s)…", ids.len()));
        self.scheduler.update_value(|s| s.start(ids, now_ms()));
        self.pump();
    }

    pub fn cancel(self) {
        self.scheduler.update_value(|s| s.cancel(now_ms()));
        self.refresh_progress();
        self.info("scoring cancelled after the pairs in flight; Resume continues");
    }

    pub fn resume(self) {
        if let Some(why) = self.cannot_score() {
            return self.error(why);
        }
        let ids = self.unscored();
        self.scheduler.update_value(|s| s.resume(ids, now_ms()));
        self.info("scoring resumed");
        self.pump();
    }

    /// Scores the given pairs next (export's "re-score the edited pairs").
    pub(super) fn score_now(self, ids: Vec<String>) {
        self.scheduler.update_value(|s| {
            for id in ids {
                s.urgent(id);
            }
        });
        self.pump();
    }

    pub fn clear_scores(self) {
        self.scheduler.update_value(|s| s.cancel(now_ms()));
        let n = self.with_session(|s| s.scored_count()).unwrap_or(0);
        self.data.update_value(|s| {
            if let Some(s) = s {
                s.clear_scores()
            }
        });
        self.notify_all();
        self.changed();
        self.refresh_progress();
        self.info(format!("cleared {n} score(s)"));
    }

    pub(super) fn refresh_progress(self) {
        let p = self.scheduler.with_value(|s| s.progress(now_ms()));
        self.set_progress.set(p);
    }

    /// Sends the next batches to the free workers, once a model is ready.
    pub(super) fn pump(self) {
        if self.ready_model().is_none() {
            return self.refresh_progress();
        }
        while let Some(worker) = self.pool.with_value(Pool::free) {
            let mut next = None;
            self.scheduler.update_value(|s| next = s.next_batch());
            let Some((batch, ids)) = next else { break };
            let items: Vec<ScoreItem> = self
                .with_session(|s| {
                    ids.iter()
                        .filter_map(|id| s.position(id))
                        .filter_map(|i| scoring::item(&s.pairs[i]))
                        .collect()
                })
                .unwrap_or_default();
            if items.is_empty() {
                self.scheduler.update_value(|s| {
                    s.on_result(batch, now_ms());
                });
                continue;
            }
            self.pool.update_value(|p| p.busy[worker] = Some(batch));
            self.send_to(worker, ToWorker::Score { batch, items });
        }
        self.refresh_progress();
    }

    fn on_worker(self, worker: usize, out: FromWorker) {
        match out {
            FromWorker::Fetching { .. } if worker > 0 => {}
            FromWorker::Fetching { file, from_cache } => self.set_model.update(|m| {
                if let ModelState::Loading { step, .. } = m {
                    *step = format!(
                        "{file} {}",
                        if from_cache {
                            "from the browser cache"
                        } else {
                            "fetched"
                        }
                    );
                }
            }),
            FromWorker::Ready { name, load_ms } => {
                let mut all = false;
                self.pool.update_value(|p| {
                    p.ready[worker] = true;
                    p.load_ms = p.load_ms.max(load_ms);
                    all = p.ready.iter().all(|&r| r);
                });
                if !all {
                    return self.set_model.update(|m| {
                        if let ModelState::Loading { step, .. } = m {
                            let n = self
                                .pool
                                .with_value(|p| p.ready.iter().filter(|&&r| r).count());
                            *step = format!("ready in {n} of {} workers", self.workers());
                        }
                    });
                }
                let load_ms = self.pool.with_value(|p| p.load_ms);
                self.scoring_model.set_value(Some(name.clone()));
                self.info(format!("{name} is ready in {} worker(s)", self.workers()));
                self.set_model.set(ModelState::Ready { name, load_ms });
                self.pump();
            }
            FromWorker::LoadFailed { name, error } => {
                if !matches!(self.model.get_untracked(), ModelState::Failed { .. }) {
                    self.error(format!("could not load {name}: {error}"));
                    self.set_model.set(ModelState::Failed { name, error });
                }
            }
            FromWorker::NoModel { batch } => {
                self.pool.update_value(|p| p.busy[worker] = None);
                self.scheduler.update_value(|s| {
                    s.on_result(batch, now_ms());
                });
                self.error("a scoring worker has no model loaded");
            }
            FromWorker::Bench(report) => {
                let json = match *report {
                    Ok(r) => serde_json::to_string(&r).unwrap_or_default(),
                    Err(e) => serde_json::json!({ "error": e }).to_string(),
                };
                if let Some(w) = web_sys::window() {
                    let _ = js_sys::Reflect::set(&w, &"damaBenchResult".into(), &json.into());
                }
            }
            FromWorker::Scored { batch, results, .. } => {
                self.pool.update_value(|p| p.busy[worker] = None);
                self.on_scored(batch, results)
            }
        }
    }

    fn on_scored(self, batch: u64, results: Vec<crate::protocol::ScoreResult>) {
        let model = self.scoring_model.get_value().unwrap_or_default();
        let mut errors = Vec::new();
        let mut applied = Vec::new();
        self.data.update_value(|s| {
            let Some(s) = s else { return };
            for r in results {
                let outcome = r
                    .scores
                    .map_err(|e| format!("pair `{}`: {e}", r.id))
                    .and_then(|sc| {
                        s.apply_scores(&model, &r.id, r.subs_key, sc)
                            .map_err(|e| e.to_string())
                    });
                match outcome {
                    Ok(true) => applied.extend(s.position(&r.id)),
                    Ok(false) => {}
                    Err(e) => errors.push(e),
                }
            }
        });
        for i in applied {
            self.notify_pair(i);
        }
        let running = |s: &crate::scoring::Scheduler| s.progress(0.0).state == RunState::Running;
        let was_running = self.scheduler.with_value(running);
        self.scheduler.update_value(|s| {
            s.on_result(batch, now_ms());
        });
        if was_running && errors.is_empty() {
            let p = self.scheduler.with_value(|s| s.progress(now_ms()));
            if p.state == RunState::Finished {
                self.info(format!(
                    "scored {} pair(s){}",
                    crate::format::count(p.done),
                    p.pairs_per_s
                        .map(|r| format!(" · {r:.1} pairs/s"))
                        .unwrap_or_default()
                ));
            }
        }
        if let Some(first) = errors.first() {
            self.error(format!("{} pair(s) not scored: {first}", errors.len()));
        }
        let finished = self.scheduler.with_value(|s| !s.busy())
            && self.scheduler.with_value(|s| s.progress(0.0).state) != RunState::Running;
        if finished {
            self.notify_aggregate();
        } else {
            self.notify_aggregate_soon();
        }
        self.changed();
        self.pump();
        if finished {
            self.continue_export();
        }
    }

    // --- edits that need scores ---------------------------------------------------------

    /// Replaces a sub-sentence; the pair is scored again at once when the loaded model may.
    pub fn edit_sub_sentence(self, i: usize, side: Side, j: usize, text: String) {
        if self
            .curate(i, |s| s.edit_sub_sentence(i, side, j, &text))
            .is_some()
        {
            self.after_edit(i, "sub-sentence edited".to_owned());
        }
    }

    /// Replaces an answer's text (what the export carries) and splits it again.
    pub fn edit_answer(self, i: usize, side: Side, text: String) {
        match self.curate(i, |s| s.edit_answer(i, side, &text)) {
            Some(Ok(r)) => self.after_edit(
                i,
                format!(
                    "the {} answer was changed and split again into {} sub-sentence(s) ({}); the export carries the new text",
                    side.name(),
                    r.count,
                    r.splitter
                ),
            ),
            Some(Err(e)) => {
                self.notify_pair(i);
                self.error(e.to_string())
            }
            None => {}
        }
    }

    fn after_edit(self, i: usize, what: String) {
        let Some((id, state)) = self.with_session(|s| (s.pairs[i].id.clone(), s.score_state(i)))
        else {
            return;
        };
        if state == ScoreState::Scored {
            return self.info(format!("{what}; its earlier scores apply again"));
        }
        match (self.ready_model(), self.cannot_score()) {
            (Some(model), None) => {
                self.scheduler.update_value(|s| s.urgent(id));
                self.info(format!("{what}; scoring it again with {model}"));
                self.pump();
            }
            (Some(_), Some(why)) => self.info(format!(
                "{what}; edited, score pending ({why}). The export can carry its old δ, flagged"
            )),
            (None, _) => self.info(format!(
                "{what}; edited, score pending: load a CLIP model to score it"
            )),
        }
    }
}

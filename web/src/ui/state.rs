//! The app's state (Leptos signals) and every action the UI takes. Decisions are delegated to
//! the plain modules (`session`, `scoring`, `persist`, `export`); this file wires them to the
//! worker, storage and the DOM.

use gloo_worker::{Spawnable, WorkerBridge};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser::{self, files, now_ms, storage};
use crate::export;
use crate::hub::{DEMO_MODEL_DIR, MODEL_FILES, ModelUrls};
use crate::load::{self, LoadError};
use crate::persist::{self, Saved};
use crate::protocol::{FromWorker, ScoreItem, ToWorker};
use crate::scoring::{self, Progress, RunState, Scheduler};
use crate::session::{Session, Side};
use crate::table::{Filter, Sort};
use crate::worker::ScoringWorker;

/// The name the annotated header records for the bundled model.
pub const DEMO_MODEL_NAME: &str = "dama-demo/tiny-clip (random weights)";
/// Pairs per message to the worker: about a second of ViT-B/32 work, so a cancel is quick.
const BATCH: usize = 4;
/// During a run the curation and scores are saved at most this often.
const SAVE_EVERY_MS: f64 = 2000.0;

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
    Error(String),
}

#[derive(Clone, Copy)]
pub struct AppState {
    pub session: RwSignal<Option<Session>>,
    pub model: RwSignal<ModelState>,
    pub progress: RwSignal<Progress>,
    pub message: RwSignal<Option<Message>>,
    pub view: RwSignal<View>,
    pub selected: RwSignal<usize>,
    pub sort: RwSignal<Sort>,
    pub filter: RwSignal<Filter>,
    scheduler: StoredValue<Scheduler>,
    /// The model whose results the worker sends (set when it reports ready).
    scoring_model: StoredValue<Option<String>>,
    last_save: StoredValue<f64>,
    bridge: StoredValue<Option<WorkerBridge<ScoringWorker>>, LocalStorage>,
}

impl AppState {
    /// The state, with the scoring worker started (`worker.js`, built by trunk).
    pub fn with_worker() -> Self {
        let state = Self::without_worker();
        let bridge = ScoringWorker::spawner()
            .callback(move |out| state.on_worker(out))
            .as_module(false)
            .spawn("./worker.js");
        state.bridge.set_value(Some(bridge));
        state.install_bench_hook();
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
        let hook =
            Closure::<dyn Fn(u32)>::new(move |repeats: u32| self.send(ToWorker::Bench { repeats }));
        let _ = js_sys::Reflect::set(&window, &"damaBench".into(), hook.as_ref());
        hook.forget();
    }

    /// The state alone (component tests, where no `worker.js` is served): scoring requests go
    /// nowhere.
    pub fn without_worker() -> Self {
        Self {
            session: RwSignal::new(None),
            model: RwSignal::new(ModelState::None),
            progress: RwSignal::new(Progress::default()),
            message: RwSignal::new(None),
            view: RwSignal::new(View::Overview),
            selected: RwSignal::new(0),
            sort: RwSignal::new(Sort::default()),
            filter: RwSignal::new(Filter::default()),
            scheduler: StoredValue::new(Scheduler::new(BATCH)),
            scoring_model: StoredValue::new(None),
            last_save: StoredValue::new(0.0),
            bridge: StoredValue::new_local(None),
        }
    }

    pub fn info(self, text: impl Into<String>) {
        self.message.set(Some(Message::Info(text.into())));
    }

    pub fn error(self, text: impl Into<String>) {
        self.message.set(Some(Message::Error(text.into())));
    }

    fn send(self, msg: ToWorker) {
        self.bridge.with_value(|b| {
            if let Some(b) = b {
                b.send(msg)
            }
        });
    }

    // --- datasets ------------------------------------------------------------------------

    fn set_session(self, loaded: Result<Session, LoadError>) {
        let mut session = match loaded {
            Ok(s) => s,
            Err(e) => return self.error(format!("could not load the dataset: {e}")),
        };
        let saved: Option<Saved> = storage::get(&persist::storage_key(&session))
            .and_then(|json| serde_json::from_str(&json).ok());
        let mut text = session.summary.clone();
        if let Some(saved) = saved {
            let r = persist::restore(&mut session, &saved);
            text += &format!(
                "; restored {} curated pair(s) and {} score(s) saved in this browser",
                r.curated, r.scores
            );
        }
        self.scheduler.update_value(Scheduler::reset);
        self.session.set(Some(session));
        self.selected.set(0);
        self.refresh_progress();
        self.info(text);
    }

    pub fn load_demo(self) {
        self.set_session(load::load_demo());
    }

    pub fn load_files(self, list: web_sys::FileList) {
        self.info(format!("reading {} file(s)…", list.length()));
        spawn_local(async move {
            match files::read_all(&list).await {
                Ok(f) => self.set_session(load::load_picked(f)),
                Err(e) => self.error(e),
            }
        });
    }

    // --- models --------------------------------------------------------------------------

    pub fn load_model(self, urls: ModelUrls) {
        self.model.set(ModelState::Loading {
            name: urls.name.clone(),
            step: "starting".into(),
        });
        self.send(ToWorker::Load(urls));
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

    // --- scoring -------------------------------------------------------------------------

    fn ready_model(self) -> Option<String> {
        match self.model.get_untracked() {
            ModelState::Ready { name, .. } => Some(name),
            _ => None,
        }
    }

    fn check_can_score(self) -> bool {
        let Some(model) = self.ready_model() else {
            self.error("load a CLIP model first");
            return false;
        };
        let mix = self
            .session
            .with_untracked(|s| s.as_ref().map(|s| s.check_model(&model)));
        match mix {
            None => {
                self.error("load a dataset first");
                false
            }
            Some(Err(e)) => {
                self.error(e.to_string());
                false
            }
            Some(Ok(())) => true,
        }
    }

    fn unscored(self) -> Vec<String> {
        self.session
            .with_untracked(|s| s.as_ref().map(Session::unscored).unwrap_or_default())
    }

    pub fn start(self) {
        if self.check_can_score() {
            let ids = self.unscored();
            self.scheduler.update_value(|s| s.start(ids, now_ms()));
            self.pump();
        }
    }

    pub fn cancel(self) {
        self.scheduler.update_value(|s| s.cancel(now_ms()));
        self.refresh_progress();
        self.save(true);
    }

    pub fn resume(self) {
        if self.check_can_score() {
            let ids = self.unscored();
            self.scheduler.update_value(|s| s.resume(ids, now_ms()));
            self.pump();
        }
    }

    pub fn clear_scores(self) {
        self.scheduler.update_value(|s| s.cancel(now_ms()));
        self.session.update(|s| {
            if let Some(s) = s {
                s.clear_scores()
            }
        });
        self.save(true);
        self.refresh_progress();
    }

    fn refresh_progress(self) {
        let p = self.scheduler.with_value(|s| s.progress(now_ms()));
        self.progress.set(p);
    }

    /// Sends the next batch if the worker is free and a model is ready.
    fn pump(self) {
        if self.ready_model().is_none() {
            return self.refresh_progress();
        }
        loop {
            let mut next = None;
            self.scheduler.update_value(|s| next = s.next_batch());
            let Some((batch, ids)) = next else { break };
            let items: Vec<ScoreItem> = self.session.with_untracked(|s| {
                s.as_ref()
                    .map(|s| {
                        ids.iter()
                            .filter_map(|id| s.position(id))
                            .filter_map(|i| scoring::item(&s.pairs[i]))
                            .collect()
                    })
                    .unwrap_or_default()
            });
            if items.is_empty() {
                self.scheduler.update_value(|s| {
                    s.on_result(batch, now_ms());
                });
                continue;
            }
            self.send(ToWorker::Score { batch, items });
            break;
        }
        self.refresh_progress();
    }

    fn on_worker(self, out: FromWorker) {
        match out {
            FromWorker::Fetching { file, from_cache } => self.model.update(|m| {
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
                self.scoring_model.set_value(Some(name.clone()));
                self.model.set(ModelState::Ready { name, load_ms });
                self.pump();
            }
            FromWorker::LoadFailed { name, error } => {
                self.model.set(ModelState::Failed { name, error });
            }
            FromWorker::NoModel { batch } => {
                self.scheduler.update_value(|s| {
                    s.on_result(batch, now_ms());
                });
                self.error("the worker has no model loaded");
            }
            FromWorker::Bench(report) => {
                let json = match report {
                    Ok(r) => serde_json::to_string(&r).unwrap_or_default(),
                    Err(e) => serde_json::json!({ "error": e }).to_string(),
                };
                if let Some(w) = web_sys::window() {
                    let _ = js_sys::Reflect::set(&w, &"damaBenchResult".into(), &json.into());
                }
            }
            FromWorker::Scored { batch, results, .. } => {
                let model = self.scoring_model.get_value().unwrap_or_default();
                let mut errors = Vec::new();
                self.session.update(|s| {
                    let Some(s) = s else { return };
                    for r in results {
                        let outcome = r
                            .scores
                            .map_err(|e| format!("pair `{}`: {e}", r.id))
                            .and_then(|sc| {
                                s.apply_scores(&model, &r.id, r.subs_key, sc)
                                    .map_err(|e| e.to_string())
                            });
                        if let Err(e) = outcome {
                            errors.push(e);
                        }
                    }
                });
                self.scheduler.update_value(|s| {
                    s.on_result(batch, now_ms());
                });
                if let Some(first) = errors.first() {
                    self.error(format!("{} pair(s) not scored: {first}", errors.len()));
                }
                let finished = self.scheduler.with_value(|s| !s.busy())
                    && self.scheduler.with_value(|s| s.progress(0.0).state) != RunState::Running;
                self.save(finished);
                self.pump();
            }
        }
    }

    // --- curation ------------------------------------------------------------------------

    /// A change to the session that a person made; saved at once.
    pub fn curate(self, change: impl FnOnce(&mut Session)) {
        self.session.update(|s| {
            if let Some(s) = s {
                change(s)
            }
        });
        self.save(true);
    }

    /// Replaces a sub-sentence and scores the pair again at once (when a model is loaded).
    pub fn edit_sub_sentence(self, i: usize, side: Side, j: usize, text: String) {
        let mut id = None;
        self.curate(|s| {
            s.edit_sub_sentence(i, side, j, &text);
            id = Some(s.pairs[i].id.clone());
        });
        if let Some(id) = id {
            self.scheduler.update_value(|s| s.urgent(id));
            if self.ready_model().is_none() {
                self.info("edited; load a model to score the new sub-sentences");
            }
            self.pump();
        }
    }

    /// Saves the curation and scores of the session (`force`, or at most every few seconds).
    pub fn save(self, force: bool) {
        let now = now_ms();
        if !force && now - self.last_save.get_value() < SAVE_EVERY_MS {
            return;
        }
        self.last_save.set_value(now);
        let entry = self.session.with_untracked(|s| {
            s.as_ref().map(|s| {
                (
                    persist::storage_key(s),
                    serde_json::to_string(&persist::capture(s)).expect("serialisable"),
                )
            })
        });
        if let Some((key, json)) = entry
            && let Err(e) = storage::set(&key, &json)
        {
            self.error(e);
        }
    }

    pub fn export(self) {
        let out = self
            .session
            .with_untracked(|s| s.as_ref().map(export::export_jsonl));
        match out {
            None => self.error("load a dataset first"),
            Some(Err(e)) => self.error(format!("export: {e}")),
            Some(Ok((name, bytes))) => {
                match browser::download(&name, &bytes, "application/jsonl") {
                    Ok(()) => self.info(format!("exported {name} ({} bytes)", bytes.len())),
                    Err(e) => self.error(e),
                }
            }
        }
    }
}

//! The scoring worker (gloo-worker). It fetches a model's files itself (weights never cross
//! the message bridge), holds the loaded CLIP, and scores each batch the page sends. The page
//! decides what to send next ([`crate::scoring::Scheduler`]), so the worker keeps no queue.

use gloo_worker::{HandlerId, Worker, WorkerScope};

use crate::browser::{fetch::fetch_bytes, now_ms};
use crate::hub::{MODEL_FILES, ModelUrls};
use crate::protocol::{FromWorker, ToWorker};
use crate::scorer::WorkerScorer;

/// `performance.now()` in the worker (sub-millisecond, unlike `Date.now()`).
fn precise_ms() -> f64 {
    use wasm_bindgen::JsCast;
    js_sys::global()
        .dyn_into::<web_sys::WorkerGlobalScope>()
        .ok()
        .and_then(|g| g.performance())
        .map_or_else(now_ms, |p| p.now())
}

pub struct ScoringWorker {
    scorer: Option<WorkerScorer>,
}

/// A model finished loading (or failed) in the async fetch.
pub struct Loaded {
    to: HandlerId,
    name: String,
    ms: f64,
    result: Result<WorkerScorer, String>,
}

async fn load(
    scope: &WorkerScope<ScoringWorker>,
    to: HandlerId,
    urls: &ModelUrls,
) -> Result<WorkerScorer, String> {
    let mut files = Vec::with_capacity(4);
    for (file, url) in MODEL_FILES.iter().zip(urls.all()) {
        let (bytes, from_cache) = fetch_bytes(url, urls.cache).await?;
        scope.respond(
            to,
            FromWorker::Fetching {
                file: (*file).to_owned(),
                from_cache,
            },
        );
        files.push(bytes);
    }
    let [config, weights, tokenizer, preprocessor]: [Vec<u8>; 4] =
        files.try_into().expect("four files");
    WorkerScorer::from_bytes(&urls.name, &config, weights, &tokenizer, &preprocessor)
}

impl Worker for ScoringWorker {
    type Message = Loaded;
    type Input = ToWorker;
    type Output = FromWorker;

    fn create(_scope: &WorkerScope<Self>) -> Self {
        Self { scorer: None }
    }

    fn update(&mut self, scope: &WorkerScope<Self>, msg: Loaded) {
        match msg.result {
            Ok(scorer) => {
                self.scorer = Some(scorer);
                scope.respond(
                    msg.to,
                    FromWorker::Ready {
                        name: msg.name,
                        load_ms: msg.ms,
                    },
                );
            }
            Err(error) => scope.respond(
                msg.to,
                FromWorker::LoadFailed {
                    name: msg.name,
                    error,
                },
            ),
        }
    }

    fn received(&mut self, scope: &WorkerScope<Self>, msg: ToWorker, id: HandlerId) {
        match msg {
            ToWorker::Load(urls) => {
                self.scorer = None;
                let scope = scope.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let t0 = now_ms();
                    let result = load(&scope, id, &urls).await;
                    scope.send_message(Loaded {
                        to: id,
                        name: urls.name.clone(),
                        ms: now_ms() - t0,
                        result,
                    });
                });
            }
            ToWorker::Score { batch, items } => match &self.scorer {
                None => scope.respond(id, FromWorker::NoModel { batch }),
                Some(scorer) => {
                    let t0 = now_ms();
                    let results = scorer.score(&items);
                    scope.respond(
                        id,
                        FromWorker::Scored {
                            batch,
                            results,
                            ms: now_ms() - t0,
                        },
                    );
                }
            },
            ToWorker::Bench { repeats } => {
                let report = match &self.scorer {
                    None => Err("no model loaded".to_owned()),
                    Some(scorer) => crate::bench::run(scorer, repeats as usize, &precise_ms),
                };
                scope.respond(id, FromWorker::Bench(Box::new(report)));
            }
        }
    }
}

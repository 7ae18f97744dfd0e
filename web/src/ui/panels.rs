//! The three control panels: dataset, CLIP model, scoring (with export).

use leptos::prelude::*;

use super::state::{AppState, ModelState};
use crate::browser::files::input_of;
use crate::format::count;
use crate::hub::DEFAULT_HUB_MODEL;
use crate::load::DEMO_PAIRS;
use crate::scoring::RunState;

#[component]
pub fn DatasetPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let on_files = move |ev: leptos::ev::Event| {
        if let Some(list) = input_of(&ev).and_then(|i| i.files()) {
            state.load_files(list);
        }
    };
    // `webkitdirectory` is not among Leptos's typed attributes: set it once the input exists.
    let folder = NodeRef::<leptos::html::Input>::new();
    Effect::new(move || {
        if let Some(input) = folder.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    let summary = move || {
        state.dataset.with(|d| {
            d.as_ref().map(|d| {
                format!(
                    "{} · {} pairs · {} scored · sub-sentences: {}",
                    d.name,
                    count(d.pairs),
                    count(d.scored),
                    d.splitter
                )
            })
        })
    };
    view! {
        <div class="panel">
            <h2>"1 · Dataset"</h2>
            <button id="load-demo" on:click=move |_| state.load_demo()>{format!("Demo set ({DEMO_PAIRS} pairs)")}</button>
            <label class="file">"Files… "
                <input id="pick-files" type="file" multiple
                    accept=".jsonl,.json,.parquet,image/*" on:change=on_files/>
            </label>
            <label class="file">"Folder… "
                <input id="pick-folder" type="file" multiple node_ref=folder on:change=on_files/>
            </label>
            <p class="hint">"Annotated or plain JSONL (+ its images), RLAIF-V parquet, the authors' JSON."</p>
            <p id="dataset-summary" class="summary">{summary}</p>
        </div>
    }
}

#[component]
pub fn ModelPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let repo = RwSignal::new(DEFAULT_HUB_MODEL.to_owned());
    let on_files = move |ev: leptos::ev::Event| {
        if let Some(list) = input_of(&ev).and_then(|i| i.files()) {
            state.load_model_files(list);
        }
    };
    let status = move || match state.model.get() {
        ModelState::None => ("none", "no model loaded".to_owned()),
        ModelState::Loading { name, step } => ("loading", format!("loading {name}: {step}")),
        ModelState::Ready { name, load_ms } => {
            ("ready", format!("{name} ready ({:.1} s)", load_ms / 1000.0))
        }
        ModelState::Failed { name, error } => ("failed", format!("{name}: {error}")),
    };
    view! {
        <div class="panel">
            <h2>"2 · CLIP"</h2>
            <button id="load-demo-model" on:click=move |_| state.load_demo_model()>"Demo model (tiny, offline)"</button>
            <div class="row">
                <input id="hub-repo" type="text" prop:value=move || repo.get()
                    on:input=move |ev| repo.set(event_target_value(&ev))/>
                <button id="load-hub" on:click=move |_| state.load_hub_model(&repo.get_untracked())>"From the hub"</button>
            </div>
            <label class="file">"Model files… "
                <input id="pick-model" type="file" multiple accept=".json,.safetensors" on:change=on_files/>
            </label>
            <p id="model-status" class="summary" data-state=move || status().0>{move || status().1}</p>
        </div>
    }
}

#[component]
pub fn ScorePanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let p = state.progress;
    let text = move || {
        let p = p.get();
        let workers = match state.workers() {
            1 => String::new(),
            n => format!(" in {n} workers"),
        };
        let speed = p
            .pairs_per_s
            .map(|s| format!(" · {s:.1} pairs/s{workers}"))
            .unwrap_or_default();
        let scored = state
            .dataset
            .with(|d| d.as_ref().map(|d| (d.scored, d.pairs)));
        match (p.state, scored) {
            (_, None) => "load a dataset, then a model, then press Score".to_owned(),
            (RunState::Idle, Some((done, all))) => {
                format!(
                    "{} of {} pairs scored; not scoring",
                    count(done),
                    count(all)
                )
            }
            (state, _) => {
                let what = match state {
                    RunState::Running => "scoring",
                    RunState::Cancelled => "cancelled",
                    _ => "done",
                };
                format!("{} / {} {what}{speed}", count(p.done), count(p.total))
            }
        }
    };
    // "Clear scores" asks first: it throws away work that may have taken hours.
    let confirm_clear = RwSignal::new(false);
    let scored = move || state.dataset.with(|d| d.as_ref().map_or(0, |d| d.scored));
    let state_name = move || format!("{:?}", p.get().state).to_lowercase();
    view! {
        <div class="panel">
            <h2>"3 · Score & export"</h2>
            <div class="row">
                <button id="score" on:click=move |_| state.start()>"Score"</button>
                <button id="cancel" on:click=move |_| state.cancel()
                    disabled=move || p.get().state != RunState::Running>"Cancel"</button>
                <button id="resume" on:click=move |_| state.resume()
                    disabled=move || p.get().state != RunState::Cancelled>"Resume"</button>
            </div>
            <div class="bar"><div class="fill" style:width=move || format!("{:.1}%", p.get().fraction() * 100.0)></div></div>
            <p id="progress-text" class="summary" data-state=state_name
                data-done=move || p.get().done.to_string() data-total=move || p.get().total.to_string()>{text}</p>
            <div class="row">
                <button id="export" on:click=move |_| state.export()>"Export curated JSONL"</button>
                {move || if confirm_clear.get() {
                    view! {
                        <span class="confirm">{format!("Clear all {} scores?", count(scored()))}
                            <button id="clear-scores-yes" on:click=move |_| { confirm_clear.set(false); state.clear_scores(); }>"Yes, clear them"</button>
                            <button id="clear-scores-no" class="quiet" on:click=move |_| confirm_clear.set(false)>"Keep them"</button>
                        </span>
                    }.into_any()
                } else {
                    view! {
                        <button id="clear-scores" class="quiet" disabled=move || scored() == 0
                            on:click=move |_| confirm_clear.set(true)>"Clear scores"</button>
                    }.into_any()
                }}
            </div>
        </div>
    }
}

//! The one status area: what the last action did (info, warning, error: replaced by the next
//! action, so an old error does not linger), whether everything is saved, and, when the browser
//! refused to store something, a banner that says what is not saved with an export beside it.
//! Also the export's question when kept pairs are not ready.

use leptos::prelude::*;

use super::state::{AppState, Message};
use crate::export::{Mode, STALE_TAG, names};

#[component]
pub fn StatusArea() -> impl IntoView {
    let state = expect_context::<AppState>();
    let message = move || {
        state.message.get().map(|m| {
            let (class, text) = match m {
                Message::Info(t) => ("message info", t),
                Message::Warning(t) => ("message warning", t),
                Message::Error(t) => ("message error", t),
            };
            view! { <p id="message" class=class>{text}</p> }
        })
    };
    let banner = Memo::new(move |_| state.health.with(|h| h.banner(state.unsaved.get())));
    let save_state = move || {
        let h = state.health.get();
        if h.curation.is_some() {
            "failed"
        } else if h.scores.is_some() {
            "scores-failed"
        } else if state.unsaved.with(|u| u.curation + u.scores) > 0 {
            "saving"
        } else {
            "saved"
        }
    };
    let line = move || {
        state
            .dataset
            .with(Option::is_some)
            .then(|| state.health.with(|h| h.line(state.unsaved.get())))
    };
    view! {
        <section class="status" id="status">
            {move || banner.get().map(|b| view! {
                <div id="storage-banner" class="banner" class:severe=b.severe role="alert">
                    <p>{b.text}</p>
                    <button id="banner-export" on:click=move |_| state.export()>"Export now"</button>
                    <button id="banner-retry" class="quiet" on:click=move |_| state.retry_saving()>"Try saving again"</button>
                </div>
            })}
            {message}
            <p id="save-status" class="summary" data-state=save_state
                data-refused=move || state.health.with(|h| h.refused.to_string())>{line}</p>
        </section>
    }
}

#[component]
pub fn ExportDialog() -> impl IntoView {
    let state = expect_context::<AppState>();
    move || {
        state.dialog.get().map(|d| {
            let pending = (!d.pending.is_empty()).then(|| {
                view! {
                    <p id="export-pending">{format!(
                        "{} kept pair(s) were edited after scoring and wait for new scores: {}.",
                        d.pending.len(), names(&d.pending)
                    )}</p>
                }
            });
            let unscored = (!d.unscored.is_empty()).then(|| {
                view! {
                    <p id="export-unscored">{format!(
                        "{} kept pair(s) have no scores yet while the others have: {}.",
                        d.unscored.len(), names(&d.unscored)
                    )}</p>
                }
            });
            let can_flag = d.unscored.is_empty() && !d.pending.is_empty();
            let scorer = match &d.scorer {
                Ok(m) => format!("Score them with {m}, then export"),
                Err(_) => "Score them, then export".to_owned(),
            };
            let why = d.scorer.clone().err();
            view! {
                <section id="export-dialog" class="dialog" role="dialog">
                    <h2>"Export: some kept pairs are not ready"</h2>
                    {pending}
                    {unscored}
                    <div class="row">
                        <button id="export-rescore" disabled=why.is_some()
                            on:click=move |_| state.score_then_export()>{scorer}</button>
                        {can_flag.then(|| view! {
                            <button id="export-flagged" on:click=move |_| state.export_with(Mode::OldScoresFlagged)>
                                {format!("Export them with their old δ, tagged `{STALE_TAG}`")}
                            </button>
                        })}
                        <button id="export-unscored-all" class="quiet" on:click=move |_| state.export_with(Mode::WithoutScores)>
                            "Export without any scores (the curation only)"
                        </button>
                        <button id="export-cancel" class="quiet" on:click=move |_| state.dialog.set(None)>"Cancel"</button>
                    </div>
                    {why.map(|w| view! { <p class="hint">{format!("Cannot score here: {w}.")}</p> })}
                </section>
            }
        })
    }
}

//! One pair: its image, question, both full answers (editable: an edit splits the answer again)
//! and their sub-sentences (editable) with each one's CLIP score and softmax probability (Eq. 4)
//! as a bar, δ and α_D, and the curation controls. ◀ ▶ follow the table's sort and filter.

use dama_data::Status;
use leptos::prelude::*;

use super::keys::LEGEND;
use super::state::AppState;
use crate::browser::image_data_url;
use crate::format::{count, fixed};
use crate::probs::probabilities;
use crate::session::{ScoreState, Side};
use crate::table::band_name;

#[component]
pub fn PairView() -> impl IntoView {
    let state = expect_context::<AppState>();
    let position = move || {
        let c = state.cursor.get();
        let (n, place) = state.order.with(|o| (o.len(), c.place_in(o)));
        if !state.dataset.with(Option::is_some) {
            return "no pair to show: load a dataset first".to_owned();
        }
        let how = state.sort.get().describe();
        let filter = state.filter.with(|f| f.describe());
        let within = if filter.is_empty() {
            format!("sorted by {how}")
        } else {
            format!("sorted by {how}; {filter}")
        };
        match (n, place) {
            (0, _) => format!("no pair matches the table's filter ({filter})"),
            (_, Some(p)) => format!("pair {} of {} ({within})", count(p + 1), count(n)),
            (_, None) => format!(
                "this pair is not in the table's filter ({within}, {} pairs)",
                count(n)
            ),
        }
    };
    let at_start = move || {
        let c = state.cursor.get();
        state.order.with(|o| c.step(o, -1).is_none())
    };
    let at_end = move || {
        let c = state.cursor.get();
        state.order.with(|o| c.step(o, 1).is_none())
    };
    view! {
        <section id="pair" class="pair">
            <div class="row">
                <button id="pair-prev" disabled=at_start on:click=move |_| state.step(-1)>"◀"</button>
                <span id="pair-position" class="summary">{position}</span>
                <button id="pair-next" disabled=at_end on:click=move |_| state.step(1)>"▶"</button>
                <button id="pair-hardest" class="quiet" on:click=move |_| state.hardest_unreviewed()>"Hardest unreviewed (h)"</button>
            </div>
            <p class="hint">{LEGEND}</p>
            {move || {
                let i = state.cursor.get().pair;
                let has = state.dataset.with(|d| d.as_ref().is_some_and(|d| i < d.pairs));
                has.then(|| view! { <PairBody i=i/> })
            }}
        </section>
    }
}

#[component]
fn PairBody(i: usize) -> impl IntoView {
    let state = expect_context::<AppState>();
    let image = state
        .with_session(|s| s.pairs[i].image.bytes.as_deref().map(image_data_url))
        .flatten();
    let id = state
        .with_session(|s| s.pairs[i].id.clone())
        .unwrap_or_default();
    let question = move || state.pair(i, |_, p| p.question.clone()).unwrap_or_default();
    let facts = move || {
        state.stats.with(|stats| {
            state.pair(i, |s, p| {
                let alpha = stats
                    .as_ref()
                    .and_then(|st| st.alpha_d(p.is_kept(), p.delta));
                let band = stats
                    .as_ref()
                    .and_then(|st| st.bands)
                    .zip(p.delta.filter(|_| p.is_kept()))
                    .map(|(b, d)| band_name(b.band(d)));
                (s.score_state(i), p.delta, alpha, band, p.delta_edge)
            })
        })
    };
    let kept = move || state.pair(i, |_, p| p.is_kept()).unwrap_or(true);
    let reviewed = move || {
        state
            .pair(i, |s, _| s.pairs[i].annotation.reviewed)
            .unwrap_or(false)
    };
    let toggle = move |_| {
        let status = if kept() { Status::Drop } else { Status::Keep };
        state.curate(i, |s| s.set_status(i, status));
    };
    view! {
        <div class="pair-grid">
            <div class="pair-image">
                {image.map(|src| view! { <img id="pair-image" src=src alt="the pair's image"/> })}
                <p id="pair-id" class="id">{id}</p>
            </div>
            <div class="pair-main">
                <p class="question">{question}</p>
                <p id="pair-delta" class="delta-line"
                    data-state=move || match facts().map(|f| f.0) {
                        Some(ScoreState::Scored) => "scored",
                        Some(ScoreState::Pending { .. }) => "pending",
                        _ => "unscored",
                    }
                    data-value=move || facts().and_then(|f| f.1).map(|d| d.to_string()).unwrap_or_default()>
                    {move || match facts() {
                        Some((ScoreState::Scored, d, a, band, edge)) => format!(
                            "δ = {} · α_D = {} · {}{}",
                            fixed(d, 4),
                            a.map(|a| fixed(Some(a), 4)).unwrap_or_else(|| "– (dropped)".into()),
                            band.unwrap_or("–"),
                            match edge { Some(dama_core::DeltaEdge::None) | None => String::new(), Some(e) => format!(" · edge case {e:?}") }
                        ),
                        Some((ScoreState::Pending { old }, ..)) => format!(
                            "edited, score pending · δ before the edit: {}",
                            fixed(old, 4)
                        ),
                        _ => "not scored yet".to_owned(),
                    }}
                </p>
                <div class="answers">
                    <Answer i=i side=Side::Chosen/>
                    <Answer i=i side=Side::Rejected/>
                </div>
                <div class="curation row">
                    <button id="pair-drop" class:dropped=move || !kept() on:click=toggle>
                        {move || if kept() { "Drop (d)" } else { "Keep (dropped; k)" }}
                    </button>
                    <button id="pair-swap" on:click=move |_| state.swap_current()>"Swap chosen ⇄ rejected (s)"</button>
                    <label class="check"><input id="pair-reviewed" type="checkbox" prop:checked=reviewed
                        on:change=move |_| state.toggle_reviewed()/>" reviewed (r)"</label>
                    <input id="pair-tags" type="text" placeholder="tags, comma-separated"
                        prop:value=move || state.pair(i, |_, p| p.annotation.tags.join(", ")).unwrap_or_default()
                        on:change=move |ev| { let v = event_target_value(&ev); state.curate(i, |s| s.set_tags(i, &v)); }/>
                </div>
                <textarea id="pair-note" placeholder="note"
                    prop:value=move || state.pair(i, |_, p| p.annotation.note.clone()).unwrap_or_default()
                    on:change=move |ev| { let v = event_target_value(&ev); state.curate(i, |s| s.set_note(i, &v)); }></textarea>
                <p class="flags">{move || state.pair(i, |s, p| {
                    let a = &p.annotation;
                    let pending = matches!(s.score_state(i), ScoreState::Pending { .. });
                    [(a.swapped, "swapped"), (a.edited, "edited"), (pending, "score pending"), (a.reviewed, "reviewed")]
                        .into_iter().filter(|f| f.0).map(|f| f.1).collect::<Vec<_>>().join(" · ")
                })}</p>
            </div>
        </div>
    }
}

/// Enter in a one-line field ends the edit (the field loses focus, so its change applies).
fn enter_ends_edit(ev: leptos::ev::KeyboardEvent) {
    if ev.key() == "Enter" && !ev.shift_key() {
        ev.prevent_default();
        if let Some(el) = ev
            .target()
            .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(t).ok())
        {
            let _ = el.blur();
        }
    }
}

/// One answer: the full text (editable; an edit splits it again), then its sub-sentences, each
/// editable, with Γ and P as a bar.
#[component]
fn Answer(i: usize, side: Side) -> impl IntoView {
    let state = expect_context::<AppState>();
    let text = move || {
        state
            .pair(i, |_, p| match side {
                Side::Chosen => p.chosen.clone(),
                Side::Rejected => p.rejected.clone(),
            })
            .unwrap_or_default()
    };
    let lines = move || {
        state.pair(i, |_, p| {
            let subs = p.sub_sentences.clone().unwrap_or_default();
            let texts = match side {
                Side::Chosen => subs.chosen,
                Side::Rejected => subs.rejected,
            };
            let (scores, probs) = match &p.scores {
                Some(sc) => {
                    let (pw, pl) = probabilities(sc);
                    match side {
                        Side::Chosen => (sc.chosen.clone(), pw),
                        Side::Rejected => (sc.rejected.clone(), pl),
                    }
                }
                None => (vec![], vec![]),
            };
            (texts, scores, probs)
        })
    };
    let title = match side {
        Side::Chosen => "chosen y_w",
        Side::Rejected => "rejected y_l",
    };
    view! {
        <div class=format!("answer {}", side.name())>
            <h3>{title}</h3>
            <textarea id=format!("answer-{}", side.name()) class="answer-text" data-side=side.name()
                prop:value=text
                on:change=move |ev| state.edit_answer(i, side, event_target_value(&ev))></textarea>
            <p class="hint">"The text training reads. Editing it splits it again into the sub-sentences below (rules-v1)."</p>
            {move || lines().map(|(texts, scores, probs)| {
                let n = texts.len();
                let rows = texts.into_iter().enumerate().map(|(j, text)| {
                    let score = scores.get(j).copied();
                    let prob = probs.get(j).copied();
                    view! {
                        <div class="sub">
                            <textarea class="sub-input" rows="1" data-side=side.name() data-j=j.to_string() prop:value=text
                                on:keydown=enter_ends_edit
                                on:change=move |ev| state.edit_sub_sentence(i, side, j, event_target_value(&ev))></textarea>
                            <span class="score">{score.map(|c| format!("Γ {c:.2}")).unwrap_or_else(|| "Γ –".into())}</span>
                            <span class="pbar"><span class="pfill" style:width=format!("{:.1}%", prob.unwrap_or(0.0) * 100.0)></span></span>
                            <span class="prob">{prob.map(|p| format!("P {p:.3}")).unwrap_or_default()}</span>
                        </div>
                    }
                }).collect_view();
                view! {
                    {rows}
                    <div class="sub add">
                        <textarea class="sub-input" rows="1" placeholder="+ add a sub-sentence" data-side=side.name() data-j=n.to_string()
                            on:keydown=enter_ends_edit
                            on:change=move |ev| state.edit_sub_sentence(i, side, n, event_target_value(&ev))></textarea>
                    </div>
                }
            })}
        </div>
    }
}

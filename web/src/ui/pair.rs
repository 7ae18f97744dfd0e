//! One pair: its image, question and both answers' sub-sentences with their CLIP score and
//! softmax probability (Eq. 4) as a bar, δ and α_D, and the curation controls.

use dama_data::Status;
use leptos::prelude::*;

use super::state::AppState;
use crate::browser::image_data_url;
use crate::probs::probabilities;
use crate::session::Side;
use crate::table::band_name;

#[component]
pub fn PairView() -> impl IntoView {
    let state = expect_context::<AppState>();
    let count = move || state.session.with(|s| s.as_ref().map_or(0, |s| s.len()));
    let step = move |d: isize| {
        let n = count() as isize;
        if n > 0 {
            state
                .selected
                .update(|i| *i = ((*i as isize + d).rem_euclid(n)) as usize);
        }
    };
    view! {
        <section id="pair" class="pair">
            <div class="row">
                <button id="pair-prev" on:click=move |_| step(-1)>"◀"</button>
                <span class="summary">{move || format!("pair {} of {}", state.selected.get() + 1, count())}</span>
                <button id="pair-next" on:click=move |_| step(1)>"▶"</button>
            </div>
            {move || {
                let i = state.selected.get();
                let has = state.session.with(|s| s.as_ref().is_some_and(|s| i < s.len()));
                has.then(|| view! { <PairBody i=i/> })
            }}
        </section>
    }
}

#[component]
fn PairBody(i: usize) -> impl IntoView {
    let state = expect_context::<AppState>();
    let pair = move || {
        state
            .session
            .with(|s| s.as_ref().map(|s| s.pairs[i].clone()))
    };
    let image = state.session.with_untracked(|s| {
        s.as_ref()
            .and_then(|s| s.pairs[i].image.bytes.as_deref().map(image_data_url))
    });
    let facts = move || {
        state.session.with(|s| {
            let s = s.as_ref()?;
            let p = &s.pairs[i];
            let stats = s.stats();
            let alpha = stats
                .as_ref()
                .and_then(|st| st.alpha_d(p.is_kept(), p.delta));
            let band = stats
                .as_ref()
                .and_then(|st| st.bands)
                .zip(p.delta.filter(|_| p.is_kept()))
                .map(|(b, d)| band_name(b.band(d)));
            Some((p.delta, alpha, band, p.delta_edge))
        })
    };
    let kept = move || pair().is_some_and(|p| p.is_kept());
    let toggle = move |_| {
        let status = if kept() { Status::Drop } else { Status::Keep };
        state.curate(|s| s.set_status(i, status));
    };
    let swap = move |_| {
        state.curate(|s| {
            if let Err(e) = s.swap(i) {
                leptos::logging::error!("{e}");
            }
        })
    };
    view! {
        <div class="pair-grid">
            <div class="pair-image">
                {image.map(|src| view! { <img id="pair-image" src=src alt="the pair's image"/> })}
                <p class="id">{move || pair().map(|p| p.id).unwrap_or_default()}</p>
            </div>
            <div class="pair-main">
                <p class="question">{move || pair().map(|p| p.question).unwrap_or_default()}</p>
                <p id="pair-delta" class="delta-line"
                    data-value=move || facts().and_then(|f| f.0).map(|d| d.to_string()).unwrap_or_default()>
                    {move || match facts() {
                        Some((Some(d), a, band, edge)) => format!(
                            "δ = {d:.4} · α_D = {} · {}{}",
                            a.map(|a| format!("{a:.4}")).unwrap_or_else(|| "– (dropped)".into()),
                            band.unwrap_or("–"),
                            match edge { Some(dama_core::DeltaEdge::None) | None => String::new(), Some(e) => format!(" · edge case {e:?}") }
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
                        {move || if kept() { "Drop" } else { "Keep (dropped)" }}
                    </button>
                    <button id="pair-swap" on:click=swap>"Swap chosen ⇄ rejected"</button>
                    <input id="pair-tags" type="text" placeholder="tags, comma-separated"
                        prop:value=move || pair().map(|p| p.annotation.tags.join(", ")).unwrap_or_default()
                        on:change=move |ev| { let v = event_target_value(&ev); state.curate(|s| s.set_tags(i, &v)) }/>
                </div>
                <textarea id="pair-note" placeholder="note"
                    prop:value=move || pair().map(|p| p.annotation.note).unwrap_or_default()
                    on:change=move |ev| { let v = event_target_value(&ev); state.curate(|s| s.set_note(i, &v)) }></textarea>
                <p class="flags">{move || pair().map(|p| {
                    let a = p.annotation;
                    [(a.swapped, "swapped"), (a.edited, "sub-sentences edited")]
                        .into_iter().filter(|f| f.0).map(|f| f.1).collect::<Vec<_>>().join(" · ")
                })}</p>
            </div>
        </div>
    }
}

/// One answer: its sub-sentences, each editable, with Γ and P as a bar.
#[component]
fn Answer(i: usize, side: Side) -> impl IntoView {
    let state = expect_context::<AppState>();
    let lines = move || {
        state.session.with(|s| {
            let p = &s.as_ref()?.pairs[i];
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
            Some((texts, scores, probs))
        })
    };
    let title = match side {
        Side::Chosen => "chosen y_w",
        Side::Rejected => "rejected y_l",
    };
    view! {
        <div class=format!("answer {}", side.name())>
            <h3>{title}</h3>
            {move || lines().map(|(texts, scores, probs)| {
                let n = texts.len();
                let rows = texts.into_iter().enumerate().map(|(j, text)| {
                    let score = scores.get(j).copied();
                    let prob = probs.get(j).copied();
                    view! {
                        <div class="sub">
                            <input class="sub-input" type="text" data-side=side.name() data-j=j.to_string() prop:value=text
                                on:change=move |ev| state.edit_sub_sentence(i, side, j, event_target_value(&ev))/>
                            <span class="score">{score.map(|c| format!("Γ {c:.2}")).unwrap_or_else(|| "Γ –".into())}</span>
                            <span class="pbar"><span class="pfill" style:width=format!("{:.1}%", prob.unwrap_or(0.0) * 100.0)></span></span>
                            <span class="prob">{prob.map(|p| format!("P {p:.3}")).unwrap_or_default()}</span>
                        </div>
                    }
                }).collect_view();
                view! {
                    {rows}
                    <div class="sub add">
                        <input class="sub-input" type="text" placeholder="+ add a sub-sentence" data-side=side.name() data-j=n.to_string()
                            on:change=move |ev| state.edit_sub_sentence(i, side, n, event_target_value(&ev))/>
                    </div>
                }
            })}
        </div>
    }
}

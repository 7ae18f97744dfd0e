//! The sortable, filterable table of pairs. A click on a row opens it in the pair view.

use dama_core::Band;
use leptos::prelude::*;

use super::state::{AppState, View};
use crate::table::{Column, Row, StatusFilter, band_name, rows};

/// Rows drawn at once; the filter narrows larger datasets.
const MAX_ROWS: usize = 400;

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into())
}

#[component]
pub fn PairTable() -> impl IntoView {
    let state = expect_context::<AppState>();
    let all_rows = Memo::new(move |_| {
        let (filter, sort) = (state.filter.get(), state.sort.get());
        state.session.with(|s| {
            s.as_ref()
                .map(|s| rows(s, &filter, sort))
                .unwrap_or_default()
        })
    });
    let header = Column::ALL
        .into_iter()
        .map(|c| {
            let arrow = move || {
                let s = state.sort.get();
                match (s.column == c, s.descending) {
                    (true, false) => " ▲",
                    (true, true) => " ▼",
                    _ => "",
                }
            };
            view! {
                <th data-col=format!("{c:?}").to_lowercase()
                    on:click=move |_| state.sort.update(|s| *s = s.click(c))>{c.title()}{arrow}</th>
            }
        })
        .collect_view();
    let set_band = move |ev: leptos::ev::Event| {
        let band = match event_target_value(&ev).as_str() {
            "hard" => Some(Band::Hard),
            "normal" => Some(Band::Normal),
            "easy" => Some(Band::Easy),
            _ => None,
        };
        state.filter.update(|f| f.band = band);
    };
    let set_status = move |ev: leptos::ev::Event| {
        let status = match event_target_value(&ev).as_str() {
            "kept" => StatusFilter::Kept,
            "dropped" => StatusFilter::Dropped,
            "curated" => StatusFilter::Curated,
            "unscored" => StatusFilter::Unscored,
            _ => StatusFilter::All,
        };
        state.filter.update(|f| f.status = status);
    };
    let body = move || {
        all_rows.with(|rows| {
            rows.iter()
                .take(MAX_ROWS)
                .map(|r| row_view(state, r.clone()))
                .collect_view()
        })
    };
    view! {
        <section id="pairs" class="pairs">
            <div class="row filters">
                <input id="filter-text" type="search" placeholder="filter: words in id, question, answers, tags, note"
                    prop:value=move || state.filter.with(|f| f.text.clone())
                    on:input=move |ev| state.filter.update(|f| f.text = event_target_value(&ev))/>
                <select id="filter-band" on:change=set_band>
                    <option value="">"all bands"</option>
                    <option value="hard">"hard"</option>
                    <option value="normal">"normal"</option>
                    <option value="easy">"easy"</option>
                </select>
                <select id="filter-status" on:change=set_status>
                    <option value="">"all"</option>
                    <option value="kept">"kept"</option>
                    <option value="dropped">"dropped"</option>
                    <option value="curated">"changed here"</option>
                    <option value="unscored">"unscored"</option>
                </select>
                <span id="row-count" class="summary">{move || {
                    let n = all_rows.with(Vec::len);
                    if n > MAX_ROWS { format!("showing {MAX_ROWS} of {n} pairs") } else { format!("{n} pairs") }
                }}</span>
            </div>
            <table id="pair-table">
                <thead><tr>{header}</tr></thead>
                <tbody>{body}</tbody>
            </table>
        </section>
    }
}

fn row_view(state: AppState, r: Row) -> impl IntoView {
    let index = r.index;
    let band = r.band.map(band_name).unwrap_or("");
    let open = move |_| {
        state.selected.set(index);
        state.view.set(View::Pair);
    };
    let tags = r.tags.join(", ");
    view! {
        <tr data-id=r.id.clone() class=format!("band-{band} {}", r.state_words().join(" ")) on:click=open>
            <td>{r.index + 1}</td>
            <td class="id">{r.id.clone()}</td>
            <td class="delta num" data-value=r.delta.map(|d| d.to_string()).unwrap_or_default()>{fmt(r.delta)}</td>
            <td class="num">{fmt(r.alpha_d)}</td>
            <td class="num">{format!("{} / {}", r.p, r.q)}</td>
            <td class="num">{format!("{} / {}", r.chosen_chars, r.rejected_chars)}</td>
            <td class="state">{r.state_words().join(" · ")}<span class="tags">{tags}</span></td>
        </tr>
    }
}

//! The pair table over every pair: virtualised (only the rows in view exist, in a scrolled box
//! whose height stands for all of them) and keyed (`<For>` by pair, so a row in view survives a
//! scroll or a re-sort and re-renders only when its own pair or the dataset's δ̄ changes).
//! A click opens the pair; the pair view's ◀ ▶ walk this same order.

use std::time::Duration;

use dama_core::Band;
use leptos::prelude::*;

use super::state::{AppState, View};
use crate::format::{count, fixed};
use crate::navigate::Cursor;
use crate::table::{Column, Row, StatusFilter, band_name};

/// Every row is this tall (CSS `.pairs tbody tr`), so a scroll position is a row number.
pub const ROW_PX: f64 = 30.0;
/// Rows drawn above and below the visible ones.
const OVERSCAN: usize = 10;
/// Typing in the filter applies it after this pause, not at every key.
const FILTER_AFTER_MS: u64 = 250;

#[component]
pub fn PairTable() -> impl IntoView {
    let state = expect_context::<AppState>();
    let order = state.order;
    let scroll = RwSignal::new(0.0f64);
    let height = RwSignal::new(600.0f64);
    let window = Memo::new(move |_| {
        let n = order.with(Vec::len);
        let first = ((scroll.get() / ROW_PX) as usize)
            .saturating_sub(OVERSCAN)
            .min(n);
        let rows = (height.get() / ROW_PX).ceil() as usize + 2 * OVERSCAN;
        (first, (first + rows).min(n), n)
    });
    let visible = Memo::new(move |_| {
        let (a, b, _) = window.get();
        order.with(|o| o.get(a..b).map(<[u32]>::to_vec).unwrap_or_default())
    });
    let boxed = NodeRef::<leptos::html::Div>::new();
    // Back on this tab: where the table was, or where the pair walked to in the pair view is.
    Effect::new(move || {
        if let Some(el) = boxed.get() {
            let cursor = state.cursor.get_untracked();
            let h = f64::from(el.client_height());
            height.set(h);
            let top = match state.table_view.get_value() {
                None => 0.0,
                Some((top, c)) if c == cursor => top,
                Some((top, _)) => order
                    .with_untracked(|o| cursor.place_in(o))
                    .map_or(top, |p| (p as f64 * ROW_PX - h / 2.0).max(0.0)),
            };
            el.set_scroll_top(top as i32);
            scroll.set(top);
        }
    });
    let on_scroll = move |_| {
        if let Some(el) = boxed.get_untracked() {
            let top = f64::from(el.scroll_top());
            scroll.set(top);
            height.set(f64::from(el.client_height()));
            state
                .table_view
                .set_value(Some((top, state.cursor.get_untracked())));
        }
    };
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
    let top = move || format!("{}px", window.get().0 as f64 * ROW_PX);
    let bottom = move || {
        let (_, b, n) = window.get();
        format!("{}px", (n - b) as f64 * ROW_PX)
    };
    let total = move || state.dataset.with(|d| d.as_ref().map_or(0, |d| d.pairs));
    view! {
        <section id="pairs" class="pairs">
            <Filters/>
            <p id="row-count" class="summary" data-n=move || order.with(Vec::len).to_string()>{move || {
                let (n, all) = (order.with(Vec::len), total());
                if n == all { format!("{} pairs", count(n)) } else { format!("{} of {} pairs", count(n), count(all)) }
            }}</p>
            <div id="table-scroll" class="table-scroll" tabindex="0" node_ref=boxed on:scroll=on_scroll>
                <table id="pair-table">
                    <thead><tr>{header}</tr></thead>
                    <tbody>
                        <tr class="spacer"><td colspan="7" style:height=top></td></tr>
                        <For each=move || visible.get() key=|i| *i let:i>
                            <RowView i=i as usize/>
                        </For>
                        <tr class="spacer"><td colspan="7" style:height=bottom></td></tr>
                    </tbody>
                </table>
            </div>
        </section>
    }
}

/// The filter row. The dropdowns show the filter in effect (also after switching tabs).
#[component]
fn Filters() -> impl IntoView {
    let state = expect_context::<AppState>();
    let pending = StoredValue::new_local(None::<TimeoutHandle>);
    let on_text = move |ev: leptos::ev::Event| {
        let text = event_target_value(&ev);
        state.filter_text.set(text.clone());
        if let Some(h) = pending.get_value() {
            h.clear();
        }
        let h = set_timeout_with_handle(
            move || state.filter.update(|f| f.text = text),
            Duration::from_millis(FILTER_AFTER_MS),
        );
        pending.set_value(h.ok());
    };
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
        let status = StatusFilter::from_value(&event_target_value(&ev));
        state.filter.update(|f| f.status = status);
    };
    let band_option = move |value: &'static str, label: &'static str, band: Option<Band>| {
        view! {
            <option value=value prop:selected=move || state.filter.with(|f| f.band == band)>{label}</option>
        }
    };
    let status_options = StatusFilter::ALL
        .into_iter()
        .map(|s| {
            view! {
                <option value=s.value() prop:selected=move || state.filter.with(|f| f.status == s)>{s.label()}</option>
            }
        })
        .collect_view();
    view! {
        <div class="row filters">
            <input id="filter-text" type="search" placeholder="filter: words in id, question, answers, tags, note"
                prop:value=move || state.filter_text.get() on:input=on_text/>
            <select id="filter-band" on:change=set_band>
                {band_option("", "all bands", None)}
                {band_option("hard", "hard", Some(Band::Hard))}
                {band_option("normal", "normal", Some(Band::Normal))}
                {band_option("easy", "easy", Some(Band::Easy))}
            </select>
            <select id="filter-status" on:change=set_status>{status_options}</select>
        </div>
    }
}

/// One row; re-renders when its pair or the dataset's statistics change.
#[component]
fn RowView(i: usize) -> impl IntoView {
    let state = expect_context::<AppState>();
    let row = Memo::new(move |_| {
        state
            .stats
            .with(|st| state.pair(i, |s, _| Row::new(s, i, st.as_ref())))
    });
    let open = move |_| {
        let place = state
            .order
            .with_untracked(|o| Cursor { pair: i, place: 0 }.place_in(o));
        let cursor = Cursor {
            pair: i,
            place: place.unwrap_or(0),
        };
        state.cursor.set(cursor);
        state
            .table_view
            .update_value(|v| *v = Some((v.map_or(0.0, |(top, _)| top), cursor)));
        state.view.set(View::Pair);
    };
    let selected = move || state.cursor.with(|c| c.pair == i);
    move || {
        row.get().map(|r| {
            let band = r.band.map(band_name).unwrap_or("");
            let words = r.state_words();
            let flags: Vec<String> = words.iter().map(|w| w.replace(' ', "-")).collect();
            let class = format!("band-{band} {}", flags.join(" "));
            view! {
                <tr data-id=r.id.clone() class=class class:selected=selected on:click=open>
                    <td>{r.index + 1}</td>
                    <td class="id" title=r.id.clone()>{r.id.clone()}</td>
                    <td class="delta num" data-value=r.delta.map(|d| d.to_string()).unwrap_or_default()>{fixed(r.delta, 4)}</td>
                    <td class="num">{fixed(r.alpha_d, 4)}</td>
                    <td class="num">{format!("{} / {}", r.p, r.q)}</td>
                    <td class="num">{format!("{} / {}", r.chosen_chars, r.rejected_chars)}</td>
                    <td class="state">{words.join(" · ")}<span class="tags">{r.tags.join(", ")}</span></td>
                </tr>
            }
        })
    }
}

//! Tests that run in headless Chromium (wasm-bindgen-test): the worker's scorer compiled to
//! wasm32 gives the scores recorded natively, and the components render what the plain modules
//! compute. Run by `scripts/test-web.sh`:
//! `cargo test -p dama-web --lib --target wasm32-unknown-unknown` with wasm-bindgen-test-runner.

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

use crate::histogram::{Quantity, histogram};
use crate::load::load_demo;
use crate::scorer::{expected, fixture};
use crate::scoring::item;

wasm_bindgen_test_configure!(run_in_browser);

fn document() -> web_sys::Document {
    web_sys::window().unwrap().document().unwrap()
}

/// A fresh element to mount a component into.
fn host(id: &str) -> web_sys::HtmlElement {
    let el: web_sys::HtmlElement = document().create_element("div").unwrap().unchecked_into();
    el.set_id(id);
    document().body().unwrap().append_child(&el).unwrap();
    el
}

#[wasm_bindgen_test]
fn the_worker_scorer_in_wasm_gives_the_native_scores() {
    let recorded = expected::load();
    let session = load_demo().unwrap();
    let items: Vec<_> = session.pairs[..recorded.len()]
        .iter()
        .map(|p| item(p).unwrap())
        .collect();
    let got = fixture::tiny().score(&items);
    expected::assert_close(&recorded, &got);
}

#[wasm_bindgen_test]
fn the_histogram_component_draws_every_bin_and_the_bands() {
    let mut session = load_demo().unwrap();
    crate::export::tests::score_all(&mut session);
    let h = histogram(&session, Quantity::Delta, 12).unwrap();
    let el = host("hist-test");
    let _mounted = leptos::mount::mount_to(el.clone(), move || {
        view! { <crate::ui::histogram::Chart h=h.clone()/> }
    });
    let bars = el.query_selector_all("rect.hbar").unwrap().length();
    assert_eq!(bars, 12);
    for band in ["hard", "normal", "easy"] {
        assert!(
            el.query_selector(&format!("rect.band.{band}"))
                .unwrap()
                .is_some(),
            "{band}"
        );
    }
    let svg = el.query_selector("svg.hist").unwrap().unwrap();
    assert_eq!(svg.get_attribute("data-n").as_deref(), Some("48"));
}

/// Lets scheduled effects run (Leptos runs them after the current task).
async fn next_tick() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback(&resolve)
            .unwrap();
    });
    wasm_bindgen_futures::JsFuture::from(promise).await.unwrap();
}

#[wasm_bindgen_test]
async fn the_dataset_panel_shows_the_loaded_session() {
    // The panel reads the app state from context; build it without a worker.
    let el = host("panel-test");
    let _mounted = leptos::mount::mount_to(el.clone(), move || {
        let state = crate::ui::state::AppState::without_worker();
        provide_context(state);
        state.load_demo();
        view! { <crate::ui::panels::DatasetPanel/> }
    });
    next_tick().await;
    let summary = el.query_selector("#dataset-summary").unwrap().unwrap();
    let text = summary.text_content().unwrap();
    assert!(text.contains("48 pairs · 0 scored"), "{text}");
    let folder = el.query_selector("#pick-folder").unwrap().unwrap();
    assert!(
        folder.has_attribute("webkitdirectory"),
        "folder picking is on"
    );
}

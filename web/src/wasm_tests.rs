//! Tests that run in headless Chromium (wasm-bindgen-test): the worker's scorer compiled to
//! wasm32 gives the scores recorded natively, the components render what the plain modules
//! compute, and the IndexedDB store keeps and forgets records per dataset. Run by `scripts/test-web.sh`:
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
    let got = fixture::demo_model().score(&items);
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
    assert_eq!(
        svg.get_attribute("data-n"),
        Some(crate::load::DEMO_PAIRS.to_string())
    );
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
    assert!(
        text.contains(&format!("{} pairs · 0 scored", crate::load::DEMO_PAIRS)),
        "{text}"
    );
    let folder = el.query_selector("#pick-folder").unwrap().unwrap();
    assert!(
        folder.has_attribute("webkitdirectory"),
        "folder picking is on"
    );
}

#[wasm_bindgen_test]
async fn the_store_keeps_records_per_dataset_and_forgets_them_by_prefix() {
    use crate::browser::store::{Kind, Store};
    use crate::persist::{DatasetSource, SavedCuration, SavedScores, SavedSession};

    let store = Store::open().await.unwrap();
    let cur = |id: &str, note: &str| {
        let c = SavedCuration {
            id: id.into(),
            annotation: Some(dama_data::Annotation {
                note: note.into(),
                ..Default::default()
            }),
            ..SavedCuration::default()
        };
        (id.to_owned(), Some(serde_json::to_string(&c).unwrap()))
    };
    store
        .write(
            "fp-a",
            Kind::Curation,
            &vec![cur("p1", "one"), cur("p2", "two")],
        )
        .await
        .unwrap();
    store
        .write("fp-b", Kind::Curation, &vec![cur("p1", "other dataset")])
        .await
        .unwrap();
    let scores = SavedScores {
        id: "p1".into(),
        key: "00000000000000ff".into(),
        chosen: vec![25.5],
        rejected: vec![20.25],
    };
    let sc = vec![(
        "p1".to_owned(),
        Some(serde_json::to_string(&scores).unwrap()),
    )];
    store.write("fp-a", Kind::Scores, &sc).await.unwrap();

    let (c, s) = store.records("fp-a").await.unwrap();
    let notes: Vec<String> = c
        .iter()
        .map(|c| c.annotation.clone().unwrap().note)
        .collect();
    assert_eq!(notes, ["one", "two"]);
    assert_eq!(s, [scores]);
    // A deletion and a rewrite touch only their records.
    store
        .write(
            "fp-a",
            Kind::Curation,
            &vec![("p1".to_owned(), None), cur("p2", "TWO")],
        )
        .await
        .unwrap();
    let (c, _) = store.records("fp-a").await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].annotation.as_ref().unwrap().note, "TWO");
    store.drop_scores("fp-a").await.unwrap();
    assert!(store.records("fp-a").await.unwrap().1.is_empty());
    let (other, _) = store.records("fp-b").await.unwrap();
    assert_eq!(other.len(), 1, "another dataset's records stay");
    // The session record, and which one reopens after a reload.
    let saved = SavedSession {
        version: crate::persist::VERSION,
        fingerprint: "fp-b".into(),
        name: "b.jsonl".into(),
        pairs: 1,
        clip_model: None,
        source: DatasetSource::Demo,
    };
    store.save_session(&saved).await.unwrap();
    assert_eq!(store.last().await, Some(saved));
}

//! The Leptos (CSR) components. They render what the plain modules compute and call
//! [`state::AppState`]'s actions; no decision is made here.

pub mod exporter;
pub mod histogram;
pub mod keys;
pub mod pair;
pub mod panels;
pub mod saver;
pub mod scoring;
pub mod state;
pub mod status;
pub mod table;

use leptos::prelude::*;

use state::{AppState, View};

/// Mounts the explorer into `<body>`.
pub fn start() {
    leptos::mount::mount_to_body(App);
}

#[component]
pub fn App() -> impl IntoView {
    let state = AppState::with_worker();
    provide_context(state);
    keys::install(state);
    let tab = move |view: View, id: &'static str, label: &'static str| {
        view! {
            <button id=id class="tab" class:active=move || state.view.get() == view
                on:click=move |_| state.view.set(view)>{label}</button>
        }
    };
    view! {
        <header>
            <h1>"dama" <span>" · hardness explorer"</span></h1>
            <p class="sub">"Data-aware DPO: how hard is each preference pair for CLIP? Everything stays in this browser."</p>
        </header>
        <section class="controls">
            <panels::DatasetPanel/>
            <panels::ModelPanel/>
            <panels::ScorePanel/>
        </section>
        <status::StatusArea/>
        <status::ExportDialog/>
        <nav class="tabs">
            {tab(View::Overview, "tab-overview", "Overview")}
            {tab(View::Table, "tab-table", "Pairs")}
            {tab(View::Pair, "tab-pair", "Pair")}
        </nav>
        <main>
            {move || match state.view.get() {
                View::Overview => view! { <histogram::Overview/> }.into_any(),
                View::Table => view! { <table::PairTable/> }.into_any(),
                View::Pair => view! { <pair::PairView/> }.into_any(),
            }}
        </main>
    }
}

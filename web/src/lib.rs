//! The DAMA hardness explorer (issue 6): a person loads a preference dataset, CLIP scores every
//! pair in a Web Worker, and they inspect the easy / normal / hard pairs, curate them and export
//! the curated set in the annotated schema that `dama-native train` reads.
//!
//! The crate is split so that everything that decides something is plain Rust, tested by
//! `cargo test` on the host:
//! - [`session`], [`curation`]: the loaded dataset, its sub-sentences and scores, and a person's
//!   edits (each marks only its pair unsaved);
//! - [`load`]: picked files / the bundled demo → pairs (through `dama-data`'s readers);
//! - [`scoring`]: which pairs go to the worker next, progress, pairs/s, cancel and resume;
//! - [`scorer`]: what the worker runs (dama-clip from bytes), also runnable natively;
//! - [`table`], [`navigate`], [`histogram`]: the table's order and rows, walking it, the bins
//!   (bands from `dama-core`);
//! - [`persist`], [`saving`]: what survives a reload (per-pair records), and the saving policy
//!   (what a save writes, what a refused one means);
//! - [`export`]: the curated set as annotated JSONL, streamed in chunks, δ̄ recomputed over the
//!   kept pairs;
//! - [`protocol`], [`hub`]: the worker's messages and where model files come from;
//! - [`bench`]: CLIP timings in the worker for `scripts/bench-web.sh` (not used when scoring).
//!
//! The browser-only parts ([`ui`], [`browser`], [`worker`]) compile for wasm32 only: Leptos
//! components, the gloo-worker bridge, IndexedDB, the Cache API and downloads.
//! All maths is `dama-core`'s (through `dama-data`); no formula is written here.

pub mod bench;
pub mod curation;
pub mod export;
pub mod format;
pub mod histogram;
pub mod hub;
pub mod load;
pub mod navigate;
pub mod persist;
pub mod probs;
pub mod protocol;
pub mod saving;
pub mod scorer;
pub mod scoring;
pub mod session;
pub mod table;

#[cfg(target_arch = "wasm32")]
pub mod browser;
#[cfg(target_arch = "wasm32")]
pub mod ui;
#[cfg(target_arch = "wasm32")]
pub mod worker;

#[cfg(all(test, target_arch = "wasm32"))]
mod wasm_tests;

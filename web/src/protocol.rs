//! The messages between the page and the scoring worker (gloo-worker, bincode). The page sends
//! small batches of pairs and decides what comes next, so a cancel takes effect after at most
//! one batch and the worker never holds a queue of its own.

use dama_data::Scores;
use serde::{Deserialize, Serialize};

use crate::bench::BenchReport;
use crate::hub::ModelUrls;

/// One pair to score: its encoded image and the sub-sentences of both answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreItem {
    pub id: String,
    /// [`crate::session::subs_key`] of the sub-sentences below, echoed in the result so that
    /// a result for sub-sentences edited meanwhile is recognised as stale.
    pub subs_key: u64,
    pub image: Vec<u8>,
    pub chosen: Vec<String>,
    pub rejected: Vec<String>,
}

/// Γ(I, s) of one pair's sub-sentences, or why it could not be scored (an undecodable image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResult {
    pub id: String,
    pub subs_key: u64,
    pub scores: Result<Scores, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Fetch (through the Cache API when `cache`) and load a model, replacing any other.
    Load(ModelUrls),
    Score {
        batch: u64,
        items: Vec<ScoreItem>,
    },
    /// Time the loaded model ([`crate::bench`]; `scripts/bench-web.sh`), `repeats` times after
    /// a warm-up. Not sent by the explorer itself.
    Bench {
        repeats: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// A file of the model is being fetched (`from_cache`: found in the Cache API).
    Fetching {
        file: String,
        from_cache: bool,
    },
    Ready {
        name: String,
        load_ms: f64,
    },
    LoadFailed {
        name: String,
        error: String,
    },
    Scored {
        batch: u64,
        results: Vec<ScoreResult>,
        /// Time the worker spent on the batch.
        ms: f64,
    },
    /// A `Score` arrived before any model was loaded.
    NoModel {
        batch: u64,
    },
    /// The answer to [`ToWorker::Bench`] (an error when no model is loaded); boxed, as the
    /// report is large next to the other messages.
    Bench(Box<Result<BenchReport, String>>),
}

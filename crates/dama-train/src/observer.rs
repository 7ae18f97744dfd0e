//! What a run tells whoever watches it. The library never prints: the binary turns these
//! events into progress bars and lines (as ripgrep's crates report to its printer), a test
//! can record them, and [`Silent`] ignores them.

use std::path::Path;

use dama_data::ReadSummary;

use crate::metrics::StepMetrics;

/// Progress and notices of a run; every method defaults to doing nothing.
pub trait Observer {
    /// Something the user should know that does not stop the run.
    fn notice(&self, _message: &str) {}
    /// What reading the data skipped (`summary.errors`, every one); `list` is the file that
    /// names them all, when one was written.
    fn bad_records(&self, _summary: &ReadSummary, _list: Option<&Path>) {}
    /// The reference pass has `todo` of `total` pairs to compute (the rest are cached).
    fn reference_started(&self, _todo: usize, _total: usize) {}
    /// `done` more pairs of the reference pass are computed.
    fn reference_progress(&self, _done: usize) {}
    fn reference_finished(&self) {}
    /// The run continues from checkpoint `dir`, after `step` steps.
    fn resumed(&self, _dir: &Path, _step: u64) {}
    /// The loop starts: `total` steps in the run, `done` of them already taken.
    fn training_started(&self, _label: &str, _total: u64, _done: u64) {}
    fn step_finished(&self, _metrics: &StepMetrics) {}
    /// A step of a loop other than preference training (CLIP, SFT) finished; `message` says
    /// its loss.
    fn step_summary(&self, _message: &str) {}
    fn training_finished(&self) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}

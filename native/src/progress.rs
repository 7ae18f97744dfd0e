//! The terminal side of a run: the library's [`Observer`] events as indicatif progress bars
//! and notices on stderr.

use std::cell::RefCell;
use std::path::Path;

use dama_data::{ReadSummary, SHOWN_SKIPPED};
use dama_train::{Observer, StepMetrics};
use indicatif::{ProgressBar, ProgressStyle};

/// Progress bars for the reference pass and the training loop.
#[derive(Default)]
pub struct Progress {
    bar: RefCell<Option<ProgressBar>>,
}

impl Progress {
    fn start(&self, bar: ProgressBar) {
        if let Some(old) = self.bar.replace(Some(bar)) {
            old.finish_and_clear();
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            f(bar);
        }
    }
}

impl Observer for Progress {
    fn notice(&self, message: &str) {
        match self.bar.borrow().as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        }
    }

    fn bad_records(&self, summary: &ReadSummary, list: Option<&Path>) {
        let list = list.map(|p| p.display().to_string());
        let report = summary.report(SHOWN_SKIPPED, list.as_deref());
        if !report.is_empty() {
            self.notice(report.trim_end());
        }
    }

    fn reference_started(&self, todo: usize, total: usize) {
        eprintln!(
            "reference log-probs: {todo} of {total} pairs to compute ({} cached)",
            total - todo
        );
        self.start(
            ProgressBar::new(todo as u64).with_style(
                ProgressStyle::with_template(
                    "reference {bar:30} {pos}/{len} pairs  {per_sec}  eta {eta}",
                )
                .expect("valid template"),
            ),
        );
    }

    fn reference_progress(&self, done: usize) {
        self.with_bar(|bar| bar.inc(done as u64));
    }

    fn reference_finished(&self) {
        self.finish();
    }

    fn resumed(&self, dir: &Path, step: u64) {
        eprintln!("resuming from {} (step {step})", dir.display());
    }

    fn training_started(&self, label: &str, total: u64, done: u64) {
        let bar = ProgressBar::new(total).with_position(done).with_style(
            ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} steps  {msg}  eta {eta}")
                .expect("valid template"),
        );
        bar.set_prefix(label.to_owned());
        self.start(bar);
    }

    fn step_finished(&self, m: &StepMetrics) {
        self.with_bar(|bar| {
            bar.set_message(format!(
                "loss {:.4}  margin {:+.4}  acc {:.2}",
                m.loss, m.rewards_margins, m.rewards_accuracies
            ));
            bar.inc(1);
        });
    }

    fn step_summary(&self, message: &str) {
        self.with_bar(|bar| {
            bar.set_message(message.to_owned());
            bar.inc(1);
        });
    }

    fn training_finished(&self) {
        self.finish();
    }
}

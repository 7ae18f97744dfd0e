//! One JSON line of metrics per optimizer step, with TRL's names where TRL has one
//! (`loss`, `learning_rate`, `grad_norm`, `epoch`, `rewards/*`, `logps/*`) and DAMA's own
//! quantities under `dama/` (the paper's Figs. 7–9 plot them).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use dama_core::{Sampling, Summary};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, TrainError};
use crate::files::write_atomic;
use crate::step::StepReport;

fn mean(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len().max(1) as f64
}

/// mean / std / min / max flattened for a JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl From<Summary<f32>> for Stat {
    fn from(s: Summary<f32>) -> Self {
        Self {
            mean: s.mean as f64,
            std: s.std as f64,
            min: s.min as f64,
            max: s.max as f64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub epoch: f64,
    pub learning_rate: f64,
    pub loss: f64,
    pub grad_norm: f64,
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f64,
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f64,
    #[serde(rename = "logps/ref_chosen")]
    pub logps_ref_chosen: f64,
    #[serde(rename = "logps/ref_rejected")]
    pub logps_ref_rejected: f64,
    #[serde(rename = "dama/beta_d")]
    pub beta_d: Stat,
    #[serde(rename = "dama/beta_m")]
    pub beta_m: Stat,
    #[serde(rename = "dama/beta_c")]
    pub beta_c: Stat,
    #[serde(rename = "dama/alpha_m")]
    pub alpha_m: f64,
    #[serde(rename = "dama/kept")]
    pub kept: usize,
    #[serde(rename = "dama/clamped")]
    pub clamped: usize,
    #[serde(rename = "dama/ema_gap_before")]
    pub ema_gap_before: f64,
    #[serde(rename = "dama/ema_gap")]
    pub ema_gap: f64,
    #[serde(rename = "dama/sampling")]
    pub sampling: Sampling,
    #[serde(rename = "perf/step_seconds")]
    pub step_seconds: f64,
    #[serde(rename = "perf/pairs_per_second")]
    pub pairs_per_second: f64,
    #[serde(rename = "perf/tokens_per_second")]
    pub tokens_per_second: f64,
    /// With several ranks: the step's gradient-sum buckets, and how many of them started
    /// while the backward was still running (absent when the sum followed the backward).
    #[serde(
        rename = "dist/buckets",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub buckets: Option<usize>,
    #[serde(
        rename = "dist/buckets_in_backward",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub buckets_in_backward: Option<usize>,
}

impl StepMetrics {
    pub fn new(
        step: u64,
        epoch: f64,
        lr: f64,
        refs: (&[f32], &[f32]),
        report: &StepReport,
        seconds: f64,
    ) -> Self {
        let o = &report.outcome;
        let s = &o.stats;
        let n = o.margins.len() as f64;
        Self {
            step,
            epoch,
            learning_rate: lr,
            loss: o.loss as f64,
            grad_norm: report.grad_norm,
            rewards_chosen: s.rewards.chosen as f64,
            rewards_rejected: s.rewards.rejected as f64,
            rewards_margins: s.rewards.margins as f64,
            rewards_accuracies: s.rewards.accuracy as f64,
            logps_chosen: mean(&report.policy_chosen),
            logps_rejected: mean(&report.policy_rejected),
            logps_ref_chosen: mean(refs.0),
            logps_ref_rejected: mean(refs.1),
            beta_d: s.beta_d.into(),
            beta_m: s.beta_m.into(),
            beta_c: s.beta_c.into(),
            alpha_m: o.alpha_m as f64,
            kept: s.kept,
            clamped: s.clamped,
            ema_gap_before: o.ema_gap_before as f64,
            ema_gap: o.ema_gap_after as f64,
            sampling: o.sampling,
            step_seconds: seconds,
            pairs_per_second: n / seconds.max(1e-12),
            tokens_per_second: report.tokens as f64 / seconds.max(1e-12),
            buckets: report.overlap.map(|c| c.buckets),
            buckets_in_backward: report.overlap.map(|c| c.in_backward),
        }
    }
}

/// `metrics.jsonl` of a run, appended one line per step.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens the log of a run that has completed `steps_done` steps: lines of later steps (written
    /// after the checkpoint a resumed run starts from) are dropped, so the log always describes
    /// the weights on disk.
    pub fn open(path: &Path, steps_done: u64) -> Result<Self> {
        let io = |what| TrainError::io(what, path);
        let mut kept = String::new();
        if path.exists() {
            let f = File::open(path).map_err(io("opening"))?;
            for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
                if serde_json::from_str::<StepMetrics>(&line).is_ok_and(|m| m.step <= steps_done) {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
        }
        // Replaced whole: a kill while it is rewritten keeps the old log.
        write_atomic(path, kept.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io("opening"))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    pub fn append(&mut self, m: &StepMetrics) -> Result<()> {
        let line = serde_json::to_string(m).expect("metrics serialise");
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.flush())
            .map_err(TrainError::io("writing", &self.path))
    }

    /// Every step logged so far, in order.
    pub fn read(path: &Path) -> Result<Vec<StepMetrics>> {
        let f = File::open(path).map_err(TrainError::io("opening", path))?;
        BufReader::new(f)
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let l = l.map_err(TrainError::io("reading", path))?;
                serde_json::from_str(&l)
                    .map_err(TrainError::json(path))
                    .with_context(|| format!("{}: line {}", path.display(), i + 1))
            })
            .collect()
    }
}

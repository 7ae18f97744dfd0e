//! The end-of-run plots: loss, reward margins and β over steps (the paper's Figs. 7–9), for
//! one run or several runs side by side (the demo compares `dama` with `dpo`).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::plots::{Series, line_chart};
use dama_train::metrics::{Stat, StepMetrics};

/// A run's metrics under a name for the legend.
pub struct NamedRun<'a> {
    pub name: &'a str,
    pub steps: &'a [StepMetrics],
}

fn curve(steps: &[StepMetrics], f: impl Fn(&StepMetrics) -> f64) -> Vec<(f64, f64)> {
    steps.iter().map(|m| (m.step as f64, f(m))).collect()
}

fn banded<'a>(
    name: &'a str,
    steps: &[StepMetrics],
    f: impl Fn(&StepMetrics) -> Stat,
) -> Series<'a> {
    Series {
        name,
        points: curve(steps, |m| f(m).mean),
        band: Some(
            steps
                .iter()
                .map(|m| (m.step as f64, f(m).min, f(m).max))
                .collect(),
        ),
    }
}

/// Writes `loss.png`, `margins.png`, `accuracy.png` comparing the runs, and for each run
/// `beta_<name>.png` (β_D, β_M, β_C mean with their min–max band). Returns the files written.
pub fn plot_runs(dir: &Path, runs: &[NamedRun<'_>]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut chart =
        |file: &str, title: &str, y: &str, f: &dyn Fn(&StepMetrics) -> f64| -> Result<()> {
            let series: Vec<Series> = runs
                .iter()
                .map(|r| Series {
                    name: r.name,
                    points: curve(r.steps, f),
                    band: None,
                })
                .collect();
            let path = dir.join(file);
            line_chart(&path, title, "step", y, &series)?;
            written.push(path);
            Ok(())
        };
    chart("loss.png", "DPO loss", "loss", &|m| m.loss)?;
    chart(
        "margins.png",
        "reward margin β·h (rewards/margins)",
        "margin",
        &|m| m.rewards_margins,
    )?;
    chart(
        "accuracy.png",
        "reward accuracy (rewards/accuracies)",
        "accuracy",
        &|m| m.rewards_accuracies,
    )?;
    for r in runs {
        let path = dir.join(format!("beta_{}.png", r.name));
        let series = [
            banded("β_D (data-aware)", r.steps, |m| m.beta_d),
            banded("β_M (model-aware)", r.steps, |m| m.beta_m),
            banded("β_C (in the loss)", r.steps, |m| m.beta_c),
        ];
        line_chart(
            &path,
            &format!("β over steps: {}", r.name),
            "step",
            "β",
            &series,
        )?;
        written.push(path);
    }
    Ok(written)
}

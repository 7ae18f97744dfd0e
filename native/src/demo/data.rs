//! The demo's datasets, written from its world, and what the CLIP scores say about them
//! against the ground truth.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dama_data::{ImageCheck, ReadOptions, open_dataset};
use dama_world::{LabelledPair, Scene, World, errors_of, write_pairs};
use serde::{Deserialize, Serialize};

/// The datasets written from the world before any model exists, unscored.
pub struct DemoData {
    /// The training split's pairs: SFT learns their chosen (true) descriptions.
    pub sft: PathBuf,
    /// The held-out split's pairs (true description against 1–3 false facts): the held-out
    /// reward accuracy by hardness band.
    pub heldout: PathBuf,
    pub heldout_pairs: Vec<LabelledPair>,
}

/// Writes `sft.jsonl` and `heldout.jsonl` (with their image folders) into `dir`. The preference
/// pairs come later, sampled from the SFT model (`demo::preference`).
pub fn write_data(world: &World, dir: &Path) -> Result<DemoData> {
    let sft = write_pairs(dir, "sft", &world.pairs(&world.train, "train"))?;
    let heldout_pairs = world.pairs(&world.heldout, "heldout");
    let heldout = write_pairs(dir, "heldout", &heldout_pairs)?;
    Ok(DemoData {
        sft,
        heldout,
        heldout_pairs,
    })
}

/// CLIP's scores of a scored dataset against the truth of its sub-sentences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreCheck {
    /// Mean Γ of the sub-sentences that are true of the image (by
    /// `dama_world::errors_of`) and of those that are not.
    pub mean_true: f64,
    pub mean_false: f64,
    /// Share of pairs whose δ is positive (the chosen answer scores higher).
    pub positive_delta: f64,
    /// Mean δ of the pairs whose rejected answer makes 1, 2 and 3 or more errors more than
    /// the chosen one: a larger gap, an easier pair.
    pub delta_by_gap: [f64; 3],
}

/// Reads the scores of `scored` (a dataset `score` wrote from pairs of the world) and compares
/// them with the ground truth: `truth` gives each pair's scene and error gap by id.
pub fn score_check(scored: &Path, truth: &HashMap<String, (Scene, usize)>) -> Result<ScoreCheck> {
    let records = open_dataset(
        scored,
        None,
        ReadOptions {
            images: ImageCheck::Skip,
            ..ReadOptions::strict()
        },
    )?;
    let (read, _) = records.read_all()?;
    let (mut t, mut f) = (Vec::new(), Vec::new());
    let mut by_gap = [(0f64, 0usize); 3];
    let mut positive = 0usize;
    for r in &read {
        let (scene, gap) = truth.get(r.id.as_str()).with_context(|| {
            format!(
                "{}: pair `{}` is not one the demo wrote",
                scored.display(),
                r.id
            )
        })?;
        let what = |field: &str| format!("{}: pair `{}` has no {field}", scored.display(), r.id);
        let scores = r.scores.as_ref().with_context(|| what("scores"))?;
        let subs = r
            .sub_sentences
            .as_ref()
            .with_context(|| what("sub-sentences"))?;
        let sides = [
            (&scores.chosen, &subs.chosen),
            (&scores.rejected, &subs.rejected),
        ];
        for (s, texts) in sides {
            for (score, text) in s.iter().zip(texts) {
                if errors_of(text, scene) == 0 {
                    t.push(*score);
                } else {
                    f.push(*score);
                }
            }
        }
        let delta = r.delta.with_context(|| what("δ"))?;
        positive += usize::from(delta > 0.0);
        let slot = &mut by_gap[(*gap).clamp(1, 3) - 1];
        slot.0 += delta;
        slot.1 += 1;
    }
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    Ok(ScoreCheck {
        mean_true: mean(&t),
        mean_false: mean(&f),
        positive_delta: positive as f64 / read.len().max(1) as f64,
        delta_by_gap: by_gap.map(|(s, n)| s / n.max(1) as f64),
    })
}

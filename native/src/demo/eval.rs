//! How a trained policy separates held-out pairs, overall and by hardness band (the paper's
//! Fig. 6: log-probability gaps of easy / normal / hard pairs).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use dama_core::{Band, HardnessBands};
use dama_llava::{LlavaModel, LlavaProcessor, LoadOptions, Trainable};

use dama_train::{RefLogps, TrainData};

/// Held-out results of one model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Share of pairs whose margin h_i is positive (the chosen answer gained more than the
    /// rejected one, relative to the reference).
    pub accuracy: f64,
    /// Mean implicit reward margin β·h_i.
    pub margin: f64,
    /// Mean log-prob gap log π(y_w) − log π(y_l) of the hard, normal and easy pairs (Fig. 6).
    pub gap_by_band: [f64; 3],
}

/// The policy in `model_dir` on `data` (held out), against the reference log-probs `refs`.
pub fn evaluate(
    model_dir: &Path,
    data: &TrainData,
    processor: &LlavaProcessor,
    refs: &RefLogps,
    beta: f64,
    device: &Device,
) -> Result<Evaluation> {
    let opts = LoadOptions {
        dtype: DType::F32,
        device: device.clone(),
        trainable: Trainable::Frozen,
    };
    let model = LlavaModel::load(model_dir, &opts)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
    let idx: Vec<usize> = (0..data.pairs.len()).collect();
    for chunk in idx.chunks(16) {
        let logps = model.pair_logps_no_grad(&data.batch(chunk, processor, device)?, true)?;
        chosen.extend(logps.chosen.to_vec1::<f32>()?);
        rejected.extend(logps.rejected.to_vec1::<f32>()?);
    }
    let n = data.pairs.len() as f64;
    let margins: Vec<f64> = (0..data.pairs.len())
        .map(|i| ((chosen[i] - refs.chosen[i]) - (rejected[i] - refs.rejected[i])) as f64)
        .collect();
    let deltas: Vec<f64> = data.pairs.iter().map(|p| p.delta.unwrap_or(0.0)).collect();
    let bands = HardnessBands::from_deltas(&deltas)?;
    let mut sums = [(0.0, 0usize); 3];
    for i in 0..data.pairs.len() {
        let slot = match bands.band(deltas[i]) {
            Band::Hard => 0,
            Band::Normal => 1,
            Band::Easy => 2,
        };
        sums[slot].0 += (chosen[i] - rejected[i]) as f64;
        sums[slot].1 += 1;
    }
    Ok(Evaluation {
        accuracy: margins.iter().filter(|&&m| m > 0.0).count() as f64 / n,
        margin: beta * margins.iter().sum::<f64>() / n,
        gap_by_band: sums.map(|(s, c)| s / c.max(1) as f64),
    })
}

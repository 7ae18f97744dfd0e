//! Everything a run needs before its policy exists: the output folder checked against a
//! resume, the settings saved, the data read and encoded, and the reference log-probs
//! computed (the reference model is dropped again before the policy loads).

use std::path::{Path, PathBuf};

use candle_core::Device;
use dama_llava::{AspectMode, LlavaConfig, LlavaProcessor};

use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::data::{DataOptions, TrainData};
use crate::dist::Collectives;
use crate::error::{Result, TrainError};
use crate::files::write_atomic;
use crate::observer::Observer;
use crate::reference::{RefLogps, ReferencePass, reference_logps_on};

/// A run ready for its policy.
pub struct Prepared {
    /// [`TrainConfig::identity`] of the settings: what a checkpoint must match.
    pub identity: String,
    /// The checkpoint a resumed run continues from.
    pub resumed: Option<(PathBuf, TrainerState)>,
    pub processor: LlavaProcessor,
    pub data: TrainData,
    /// α_D per pair (a scored dataset), aligned with `data.pairs`.
    pub alpha_d: Option<Vec<f32>>,
    pub refs: RefLogps,
}

/// The image and text processing of the model in `model_dir` (padded to a square as
/// LLaVA-1.5, or resized; conversations cut at `max_length`), and its
/// `max_position_embeddings`. `train`, `ref-logps` and `generate` must process alike.
pub fn load_processor(
    model_dir: &Path,
    aspect_pad: bool,
    max_length: Option<usize>,
) -> Result<(LlavaProcessor, usize)> {
    let model_cfg = LlavaConfig::from_file(&model_dir.join("config.json"))?;
    let positions = model_cfg.text.max_position_embeddings;
    let aspect = if aspect_pad {
        AspectMode::Pad
    } else {
        AspectMode::Resize
    };
    let processor = LlavaProcessor::load(model_dir, &model_cfg)?
        .with_aspect(aspect)
        .with_max_length(max_length);
    Ok((processor, positions))
}

/// Checks the output folder (a resume must find its checkpoint and the same settings; a fresh
/// run must not overwrite one), writes `run.json`, reads the data and computes the reference
/// log-probs. Every rank reads the folder and the data; rank 0 alone writes.
pub fn prepare(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    observer: &dyn Observer,
    comm: &dyn Collectives,
) -> Result<Prepared> {
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(TrainError::io("creating", out))?;
    let identity = cfg.identity()?;
    let ckpt_root = out.join("checkpoints");
    let resumed = if resume {
        checkpoint::latest(&ckpt_root)?
    } else {
        None
    };
    match (&resumed, resume) {
        (Some((_, st)), _) if st.config_hash != identity => {
            return Err(TrainError::Resume(format!(
                "{} was trained with other settings than these (see its run.json); an exact resume needs the same ones",
                out.display()
            )));
        }
        (None, false) if ckpt_root.exists() => {
            return Err(TrainError::Resume(format!(
                "{} already holds checkpoints: pass --resume to continue that run, or choose another --out",
                out.display()
            )));
        }
        _ => {}
    }
    let main = comm.is_main();
    if main {
        let run_json = out.join("run.json");
        let settings = serde_json::to_string_pretty(cfg).expect("a config serialises") + "\n";
        write_atomic(&run_json, settings.as_bytes())?;
    }

    let (processor, positions) = load_processor(&cfg.model, cfg.aspect_pad, cfg.max_length)?;
    let options = DataOptions {
        images: cfg.images.as_deref(),
        skip_bad: cfg.skip_bad,
        absolute_images: cfg.allow_absolute_images,
        max_positions: Some(positions),
    };
    let data = TrainData::load(&cfg.data, &processor, options)?;
    let list = out.join("skipped.jsonl");
    if main {
        data.summary.write_skipped(&list)?;
    }
    data.report(observer, Some(&list), cfg.max_length);
    let alpha_d = data.alpha_d()?;
    if alpha_d.is_none() && cfg.dama.mode.uses_alpha_d() {
        return Err(TrainError::Settings(format!(
            "mode `{}` needs the data hardness α_D, but {} is not a scored dataset: run `dama-native score` on it first, or train with --mode dpo or mdpo",
            cfg.dama.mode,
            cfg.data.display()
        )));
    }
    let cache = cfg
        .ref_cache
        .clone()
        .unwrap_or_else(|| out.join("ref_logps.jsonl"));
    let pass = ReferencePass {
        model_dir: cfg.ref_model.as_deref().unwrap_or(&cfg.model),
        max_length: cfg.max_length,
        cache: &cache,
        device,
        dtype: cfg.precision.dtype(),
        batch: cfg.micro_batch,
        shared_prefix: cfg.shared_prefix,
    };
    let refs = reference_logps_on(&pass, &data, &processor, observer, comm)?;
    Ok(Prepared {
        identity,
        resumed,
        processor,
        data,
        alpha_d,
        refs,
    })
}

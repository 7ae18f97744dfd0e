//! The demo's preference data, built as the paper's is: the SFT model answers each preference
//! image's question several times (`generate` with temperature), each answer is labelled by the
//! exact number of its errors (`dama_world::errors_of`), and the most faithful answer is
//! chosen against the least faithful (`dama_world::pair_from_samples`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dama_world::{Example, SampledPair, pair_from_samples, unscored_run_info, write_dataset};
use serde::Deserialize;

use crate::args::{InputArgs, ModelArgs, defaults};
use crate::commands::generate::GenerateArgs;
use crate::device::DeviceArgs;
use crate::generator::DecodeArgs;

/// Answers sampled per image (with 4, five images in six tied: no pair).
pub const SAMPLES: usize = 8;
/// Sampling temperature: the model's own distribution, as RLAIF-V samples.
pub const TEMPERATURE: f32 = 1.0;
/// At most this many new tokens per sampled answer.
pub const MAX_NEW_TOKENS: usize = 128;

/// What the sampling gave.
pub struct Sampled {
    /// The dataset DPO and DAMA train on once scored (`<dir>/pairs.jsonl`).
    pub path: PathBuf,
    pub pairs: Vec<SampledPair>,
    /// Images whose samples all tied (or named no object): no pair.
    pub dropped: usize,
    /// Mean errors of all sampled answers.
    pub mean_errors: f64,
}

#[derive(Deserialize)]
struct Line {
    id: String,
    answer: String,
}

/// Samples [`SAMPLES`] answers per example of `split` from `model` (answers file
/// `<dir>/samples.jsonl`, ids `<index>.<sample>`) and writes the pairs as `<dir>/pairs.jsonl`.
pub fn sample_pairs(
    model: &Path,
    split: &[Example],
    dir: &Path,
    seed: u64,
    device: &DeviceArgs,
    max_length: usize,
) -> Result<Sampled> {
    let images = dir.join("sample_images");
    std::fs::create_dir_all(&images)?;
    let questions = dir.join("sample_questions.jsonl");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&questions)
            .with_context(|| format!("creating {}", questions.display()))?,
    );
    for e in split {
        std::fs::write(images.join(&e.file_name), &e.image)?;
        for k in 0..SAMPLES {
            let line = serde_json::json!({
                "id": format!("{}.{k}", e.index),
                "image": format!("sample_images/{}", e.file_name),
                "question": e.question_text(),
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    let answers = dir.join("samples.jsonl");
    crate::commands::generate::run(&GenerateArgs {
        model: ModelArgs {
            model: model.display().to_string(),
            hf_cache: None,
            offline: true,
        },
        data: Some(questions),
        images: None,
        out: Some(answers.clone()),
        image: None,
        question: None,
        decode: DecodeArgs {
            temperature: TEMPERATURE,
            seed,
            max_new_tokens: MAX_NEW_TOKENS,
            batch_size: 32,
            ..defaults::<DecodeArgs>()
        },
        input: InputArgs {
            max_length,
            ..defaults::<InputArgs>()
        },
        device: device.clone(),
    })
    .context("sampling answers from the SFT model")?;

    let text = std::fs::read_to_string(&answers)
        .with_context(|| format!("reading {}", answers.display()))?;
    let mut by_image: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let where_ = || format!("{}:{}", answers.display(), i + 1);
        let line: Line = serde_json::from_str(raw).with_context(where_)?;
        let (image, k) = line
            .id
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .with_context(|| format!("{}: id {:?} is not <image>.<sample>", where_(), line.id))?;
        by_image.entry(image).or_default().push((k, line.answer));
    }
    let (mut pairs, mut dropped, mut errors, mut answers_n) = (Vec::new(), 0, 0usize, 0usize);
    for e in split {
        let mut samples = by_image.remove(&e.index).unwrap_or_default();
        samples.sort_by_key(|(k, _)| *k);
        let texts: Vec<String> = samples.into_iter().map(|(_, a)| a).collect();
        answers_n += texts.len();
        errors += texts
            .iter()
            .map(|a| dama_world::errors_of(a, &e.scene))
            .sum::<usize>();
        match pair_from_samples(e, &texts) {
            Some(p) => pairs.push(p),
            None => dropped += 1,
        }
    }
    anyhow::ensure!(
        !pairs.is_empty(),
        "no preference pair: every image's {SAMPLES} samples tied ({})",
        answers.display()
    );
    let path = write_dataset(
        dir,
        "pairs",
        pairs.iter().map(|p| &p.pair),
        &unscored_run_info(),
    )?;
    Ok(Sampled {
        path,
        pairs,
        dropped,
        mean_errors: errors as f64 / answers_n.max(1) as f64,
    })
}

//! `score`: the data-aware half of DAMA (paper §3.1). Dataset in, annotated dataset out: split
//! each answer into sub-sentences, score each against the image with CLIP (Γ, Eq. 3), turn the
//! scores into δ (Eqs. 4–5) per pair, δ̄ over the set and α_D (Eq. 6) per pair.
//!
//! Resumable: each pair's result is appended to `<out>.score-log.jsonl` as soon as it exists,
//! so a killed run skips the pairs already done. The annotated file appears only when every
//! pair is scored (δ̄ needs them all), with a summary, the hardness quartiles and a histogram.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use dama_clip::{ClipScorer, PairInput};
use dama_core::{Band, Estimator, HardnessBands};
use dama_data::annotated::FolderSink;
use dama_data::score_log::{Output, ScoreLog, ScoredPair, finalize};
use dama_data::split::llm::{LlmConfig, LlmSplitter, OnFailure};
use dama_data::{
    ImageCheck, ImageOut, PreferencePair, ReadMode, ReadOptions, RuleSplitter, RunInfo,
    SHOWN_SKIPPED, Scores, Splitter, SubSentences, open_dataset,
};
use dama_train::Precision;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::choice;
use crate::device::{DeviceArgs, describe};
use crate::hub::{HubOptions, Wanted, resolve_model};
use crate::plots::histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitterArg {
    /// The built-in deterministic rule-based splitter (sentences, then clauses).
    Rules,
    /// The paper's Appendix A.1 prompt to an OpenAI-compatible chat endpoint.
    Llm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Jsonl,
    Parquet,
}

#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// The dataset: RLAIF-V parquet (file or folder of shards), JSONL, the authors' JSON list,
    /// or an annotated dataset (scored again).
    pub data: PathBuf,
    /// Folder the dataset's image paths are relative to (default: next to the dataset).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The CLIP model: an HF folder or repo id (HF cache, downloaded unless --offline).
    #[arg(long, default_value = "openai/clip-vit-large-patch14")]
    pub clip: String,
    #[arg(long)]
    pub hf_cache: Option<PathBuf>,
    #[arg(long)]
    pub offline: bool,
    /// The annotated dataset to write (default: `<data>.scored.jsonl` beside the data).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Output format (default: from --out's extension; parquet embeds the images).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// probs (softmax over all sub-sentence scores, δ = ΣP_w − ΣP_l: the paper's) or
    /// raw_ratio (δ = ΣC_w / ΣC_l, Table 2's ablation).
    #[arg(long, value_parser = choice::<Estimator>(), default_value_t = Estimator::Probs)]
    pub estimator: Estimator,
    #[arg(long, value_enum, default_value_t = SplitterArg::Rules)]
    pub splitter: SplitterArg,
    /// Split again even where the dataset already has sub-sentences.
    #[arg(long)]
    pub resplit: bool,
    /// LLM endpoint (default $DAMA_LLM_BASE_URL), e.g. http://localhost:8000/v1.
    #[arg(long)]
    pub llm_base_url: Option<String>,
    /// LLM model name (default $DAMA_LLM_MODEL).
    #[arg(long)]
    pub llm_model: Option<String>,
    /// API key (default $DAMA_LLM_API_KEY or $OPENAI_API_KEY).
    #[arg(long)]
    pub llm_api_key: Option<String>,
    /// Cache of the LLM's answers (default: `<out>.llm-cache/`).
    #[arg(long)]
    pub llm_cache: Option<PathBuf>,
    /// When the LLM fails on an answer after its retries, split it with the rules instead of
    /// stopping.
    #[arg(long)]
    pub llm_fallback: bool,
    /// Stop at the first bad record instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Read absolute image paths where they point (only for data of your own: by default
    /// every image must be inside the image folder, and a path out of it is a bad record).
    #[arg(long)]
    pub allow_absolute_images: bool,
    /// Pairs scored together (images in one batch).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::F32)]
    pub precision: Precision,
    #[command(flatten)]
    pub device: DeviceArgs,
}

const CLIP_FILES: Wanted<'static> = Wanted {
    required: &["config.json", "tokenizer.json", "preprocessor_config.json"],
    optional: &["tokenizer_config.json", "special_tokens_map.json"],
};

fn default_out(data: &Path) -> PathBuf {
    let stem = data
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    data.with_file_name(format!("{stem}.scored.jsonl"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

fn widen(xs: &[f32]) -> Vec<f64> {
    xs.iter().map(|&x| x as f64).collect()
}

fn is_parquet_source(path: &Path) -> bool {
    path.is_dir() || path.extension().is_some_and(|e| e == "parquet")
}

/// Whether a JSONL source embeds any of its images (`image_b64`): the output then embeds them
/// all, so that a self-contained file (the explorer's export, the demo's bundle) stays one
/// (a reference would name a file that exists nowhere).
fn embeds_images(data: &Path, images: Option<&Path>, options: ReadOptions) -> Result<bool> {
    let options = ReadOptions {
        mode: ReadMode::Lenient,
        images: ImageCheck::Skip,
        ..options
    };
    for record in open_dataset(data, images, options)? {
        if record.is_ok_and(|p| p.image.bytes.is_some()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The splitter of a run. The LLM one is kept as itself, so that the run can say which
/// answers fell back to the rules and record it with each pair.
enum PairSplitter {
    Rules(RuleSplitter),
    Llm(Box<LlmSplitter>),
}

impl PairSplitter {
    fn name(&self) -> String {
        match self {
            PairSplitter::Rules(r) => r.name(),
            PairSplitter::Llm(l) => l.name(),
        }
    }

    /// The pair's sub-sentences and what produced them; a fallback to the rules is said on
    /// the terminal with the LLM's error.
    fn split(&self, pair: &PreferencePair, say: &dyn Fn(String)) -> Result<(SubSentences, String)> {
        match self {
            PairSplitter::Rules(r) => Ok((r.split_pair(pair)?, r.name())),
            PairSplitter::Llm(l) => {
                let subs = l.split_pair(pair)?;
                let failures = l.take_failures();
                if failures.is_empty() {
                    return Ok((subs, l.name()));
                }
                for why in failures {
                    say(format!(
                        "pair `{}`: {why}; split with {} instead (--llm-fallback)",
                        pair.id,
                        l.fallback_name()
                    ));
                }
                Ok((subs, l.fallback_name()))
            }
        }
    }
}

fn splitter(args: &ScoreArgs, scorer: &ClipScorer, out: &Path) -> Result<PairSplitter> {
    let tokenizer = scorer.tokenizer.clone();
    let rules = || {
        let t = tokenizer.clone();
        RuleSplitter::with_token_counter(77, Box::new(move |s: &str| t.token_count(s)))
    };
    Ok(match args.splitter {
        SplitterArg::Rules => PairSplitter::Rules(rules()),
        SplitterArg::Llm => {
            let mut cfg = LlmConfig::from_env(
                args.llm_base_url.clone(),
                args.llm_model.clone(),
                args.llm_api_key.clone(),
            )?;
            cfg.cache_dir = Some(
                args.llm_cache
                    .clone()
                    .unwrap_or_else(|| with_suffix(out, ".llm-cache")),
            );
            cfg.on_failure = if args.llm_fallback {
                OnFailure::FallBackToRules
            } else {
                OnFailure::Fail
            };
            PairSplitter::Llm(Box::new(LlmSplitter::new(cfg)?.with_fallback(rules())))
        }
    })
}

pub fn run(args: &ScoreArgs) -> Result<()> {
    let started = Instant::now();
    let device = args.device.device()?;
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.data));
    let format = args
        .format
        .unwrap_or(if out.extension().is_some_and(|e| e == "parquet") {
            FormatArg::Parquet
        } else {
            FormatArg::Jsonl
        });
    let clip_dir = resolve_model(
        &args.clip,
        CLIP_FILES,
        &HubOptions::from_env(args.hf_cache.clone(), args.offline),
    )?;
    let scorer = ClipScorer::load(&clip_dir, &device, args.precision.dtype())
        .with_context(|| format!("loading CLIP from {}", clip_dir.display()))?;
    let mut scorer = scorer;
    scorer.options.pairs_per_batch = args.batch.max(1);
    let splitter = splitter(args, &scorer, &out)?;
    let splitter_name = splitter.name();
    let estimator = args.estimator;
    let run_info = RunInfo {
        clip_model: Some(args.clip.clone()),
        estimator: Some(estimator),
        splitter: Some(splitter_name.clone()),
    };
    let log_path = with_suffix(&out, ".score-log.jsonl");
    let mut log = ScoreLog::open(&log_path, &run_info)?;
    eprintln!(
        "scoring {} with {} on {} (splitter {splitter_name}); {} pairs already scored",
        args.data.display(),
        args.clip,
        describe(&device),
        log.len()
    );

    let mode = if args.strict {
        ReadMode::Strict
    } else {
        ReadMode::Lenient
    };
    let options = ReadOptions {
        mode,
        images: ImageCheck::Decode,
        absolute_images: args.allow_absolute_images,
        ..ReadOptions::default()
    };
    let mut records = open_dataset(&args.data, args.images.as_deref(), options)?;
    // Where the source's image files are, for an output that references them.
    let data_dir = args.data.parent().unwrap_or(Path::new(".")).to_path_buf();
    let image_folder = match (
        &args.images,
        records.header().and_then(|h| h.images.clone()),
    ) {
        (Some(dir), _) => dir.clone(),
        (None, Some(rel)) => data_dir.join(rel),
        (None, None) => data_dir,
    };
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} pairs scored  {per_sec}  {elapsed}  {msg}")
            .expect("valid template"),
    );
    let mut pending: Vec<PreferencePair> = Vec::new();
    let mut scored_now = 0usize;
    let say = |line: String| bar.suspend(|| eprintln!("{line}"));
    let mut flush = |pending: &mut Vec<PreferencePair>, log: &mut ScoreLog| -> Result<()> {
        let (subs, origins): (Vec<SubSentences>, Vec<String>) = pending
            .iter()
            .map(|p| match (&p.sub_sentences, args.resplit) {
                (Some(s), false) => Ok((s.clone(), "input".to_owned())),
                _ => splitter.split(p, &say),
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let inputs: Vec<PairInput<'_, String>> = pending
            .iter()
            .zip(&subs)
            .map(|(p, s)| PairInput {
                image: p.image.decoded.as_ref().expect("decoded by the reader"),
                chosen: &s.chosen,
                rejected: &s.rejected,
            })
            .collect();
        let scores = scorer.score_pairs(&inputs).context("CLIP scoring")?;
        for (((p, s), sc), origin) in pending.iter().zip(subs).zip(scores).zip(origins) {
            let scored = ScoredPair::new(
                p,
                s,
                Scores {
                    chosen: widen(&sc.chosen),
                    rejected: widen(&sc.rejected),
                },
                estimator,
            )
            .with_context(|| format!("pair `{}`", p.id))?
            .split_by(origin);
            log.append(&scored)?;
        }
        scored_now += pending.len();
        bar.inc(pending.len() as u64);
        pending.clear();
        Ok(())
    };
    for record in records.by_ref() {
        let pair = record.with_context(|| {
            format!(
                "reading {} (drop --strict to skip bad records)",
                args.data.display()
            )
        })?;
        if log.contains(&pair.id) {
            continue;
        }
        pending.push(pair);
        if pending.len() >= args.batch.max(1) {
            flush(&mut pending, &mut log)?;
        }
    }
    if !pending.is_empty() {
        flush(&mut pending, &mut log)?;
    }
    bar.finish_and_clear();
    let first_pass = records.into_summary();
    // The final pass loads images without decoding them: it learns from the log which pairs
    // only decoding showed to be bad.
    log.append_skipped(&first_pass)?;
    let skipped_list = with_suffix(&out, ".skipped.jsonl");
    first_pass.write_skipped(&skipped_list)?;
    let report = first_pass.report(SHOWN_SKIPPED, Some(&skipped_list.display().to_string()));
    eprint!("{report}");
    if log.is_empty() {
        bail!(
            "no pair of {} could be scored ({first_pass}): nothing is written",
            args.data.display()
        );
    }

    // The final file: the source read again (same options) for text and images, δ̄ and α_D.
    let images = ImageCheck::Load;
    let source = open_dataset(
        &args.data,
        args.images.as_deref(),
        ReadOptions { images, ..options },
    )?;
    let image_dir = with_suffix(&out.with_extension(""), "_images");
    let mut sink;
    let output = match format {
        FormatArg::Parquet => Output::Parquet,
        FormatArg::Jsonl if is_parquet_source(&args.data) => {
            sink = FolderSink::new(&image_dir)?;
            let folder = image_dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            Output::Jsonl(ImageOut::Sink {
                folder,
                sink: &mut sink,
            })
        }
        FormatArg::Jsonl if embeds_images(&args.data, args.images.as_deref(), options)? => {
            Output::Jsonl(ImageOut::Inline)
        }
        FormatArg::Jsonl => {
            let folder = std::path::absolute(&image_folder)?;
            Output::Jsonl(ImageOut::Reference {
                folder: folder.display().to_string(),
            })
        }
    };
    let done = finalize(&log_path, source, &out, output)?;
    let header = &done.header;
    let delta_mean = header
        .delta_mean
        .context("the annotated header has no δ̄ although pairs were scored")?;

    // Summary and histogram.
    let annotated = open_dataset(
        &out,
        None,
        ReadOptions {
            images: ImageCheck::Skip,
            ..ReadOptions::default()
        },
    )?;
    let (pairs, _) = annotated.read_all()?;
    let deltas: Vec<f64> = pairs.iter().filter_map(|p| p.delta).collect();
    let bands = HardnessBands::from_deltas(&deltas)?;
    let count = |b: Band| deltas.iter().filter(|&&d| bands.band(d) == b).count();
    println!(
        "scored {} pairs in {:.0} s ({scored_now} in this run); {first_pass}",
        deltas.len(),
        started.elapsed().as_secs_f64()
    );
    let e = &header.edge_counts;
    if e.total() > 0 {
        println!(
            "edge cases (fixed δ, kept): {} with no sub-sentence, {} with no chosen, {} with no rejected sub-sentence",
            e.no_subsentences, e.no_chosen, e.no_rejected
        );
    }
    println!(
        "δ̄ = {delta_mean:.6}; quartiles {:.4} / {:.4} / {:.4}",
        bands.q1, bands.median, bands.q3
    );
    println!(
        "hard (δ < q1): {}, normal: {}, easy (δ > q3): {}",
        count(Band::Hard),
        count(Band::Normal),
        count(Band::Easy)
    );
    let plot = with_suffix(&out.with_extension(""), ".delta.png");
    histogram(
        &plot,
        "hardness δ of the dataset",
        "δ",
        &deltas,
        40,
        &[("q1", bands.q1), ("δ̄", delta_mean), ("q3", bands.q3)],
    )?;
    println!("annotated dataset: {}", out.display());
    println!("histogram: {}", plot.display());
    Ok(())
}

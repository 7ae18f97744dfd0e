//! The demo (`dama-native` with no arguments): the paper's pipeline in miniature, every stage
//! the product's own code, on a world whose ground truth is known exactly, offline on a CPU.
//!
//! 1. the world (`dama_world`): pictures of coloured shapes with their exact object lists, in a
//!    training, a preference and a held-out split;
//! 2. a tiny CLIP trained contrastively on the training images' true sentences
//!    (`dama_train::clip`), saved in the Hugging Face layout;
//! 3. a tiny LLaVA-1.5 on that CLIP's vision tower, fine-tuned on the true descriptions
//!    (`dama_train::sft`, the `sft` command);
//! 4. preference pairs as the paper builds them: the SFT model samples 8 answers per preference
//!    image (`generate`), each labelled by its exact number of errors, the most faithful chosen
//!    against the least (`demo::preference`);
//! 5. `score` with the CLIP: δ, δ̄ and α_D of those pairs and of the held-out ones from real
//!    CLIP forwards;
//! 6. DAMA against DPO from the SFT model on the scored pairs, same data order and steps;
//! 7. both policies on the held-out pairs: reward accuracy, margin, and the log-prob gap of
//!    hard / normal / easy pairs (the paper's Fig. 6), plus the training curves as PNGs;
//! 8. the SFT model, DPO and DAMA answer the held-out questions (`generate`, 3 beams) and CHAIR
//!    counts their hallucinations against the exact ground truth (the paper's Table 1).
//!
//! The CLIP and the SFT model are the same every run with the same settings: they are kept in
//! `<out>/cache/` and reused (`--from-scratch` trains them again). `summary.json` holds every
//! number the demo prints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use clap::Args;
use dama_core::{DamaConfig, Estimator, Mode};

use dama_train::prepare::load_processor;
use dama_train::{
    DataOptions, ReferencePass, Silent, TrainConfig, TrainData, reference_logps, train,
};
use dama_world::{Scene, World, WorldSpec};
use serde::Serialize;

use crate::commands::score::{ScoreArgs, SplitterArg};
use crate::demo::chair::{Chair, NUM_BEAMS, chair_of, write_questions};
use crate::demo::clip::{ClipCheck, clip_stage};
use crate::demo::data::{ScoreCheck, score_check, write_data};
use crate::demo::eval::{Evaluation, evaluate};
use crate::demo::preference::{SAMPLES, TEMPERATURE, sample_pairs};
use crate::demo::sft::{MAX_LENGTH, SftCheck, sft_stage};
use crate::device::{DeviceArgs, describe};
use crate::progress::Progress;
use crate::report::{NamedRun, plot_runs};
use dama_train::Precision;

/// The pictures' side in pixels: 16 patches of 8 for the CLIP, 16 image tokens for LLaVA.
const IMAGE_SIZE: u32 = 32;
/// Marks a folder the demo made, so that a second run may clear it (and nothing else).
const MARKER: &str = ".dama-demo";
/// The folder under `--out` that a second run keeps: trained CLIP and SFT weights.
const CACHE: &str = "cache";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to write everything (cleared first if an earlier demo made it, except its cache/).
    #[arg(long, default_value = "dama-demo")]
    pub out: PathBuf,
    /// Passes of DPO and DAMA over the sampled preference pairs (batches of N = 16).
    #[arg(long, default_value_t = 12)]
    pub epochs: u64,
    /// Peak learning rate of DPO and DAMA (large: the model is tiny).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Passes of the CLIP over the training images' sentences.
    #[arg(long, default_value_t = 8)]
    pub clip_epochs: u64,
    /// Passes of SFT over the training images' descriptions.
    #[arg(long, default_value_t = 6)]
    pub sft_epochs: u64,
    /// Images of the training split (CLIP and SFT learn from them).
    #[arg(long, default_value_t = WorldSpec::default().train)]
    pub train_images: usize,
    /// Train the CLIP and the SFT model again even when the cache has them.
    #[arg(long)]
    pub from_scratch: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl Default for DemoArgs {
    /// The command line's defaults (what runs with no arguments).
    fn default() -> Self {
        crate::args::defaults()
    }
}

/// Clears `out` for a new demo (only a folder an earlier demo made), keeping its cache.
fn fresh_dir(out: &Path) -> Result<()> {
    if out.exists() {
        if !out.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by the demo: choose another --out",
                out.display()
            );
        }
        for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == CACHE) {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("clearing {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(MARKER),
        "made by `dama-native` (the demo); safe to delete\n",
    )?;
    Ok(())
}

/// One training run's last step.
#[derive(Debug, Clone, Serialize)]
struct RunLine {
    mode: String,
    steps: u64,
    seconds: f64,
    loss: f64,
    margin: f64,
    accuracy: f64,
}

/// Every number the demo prints, in `summary.json`.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    world: String,
    clip_cached: bool,
    clip_seconds: f64,
    clip_loss: (f64, f64),
    clip: ClipCheck,
    sample_seconds: f64,
    preference_pairs: usize,
    preference_dropped: usize,
    sampled_errors: f64,
    score_seconds: f64,
    score: ScoreCheck,
    sft_cached: bool,
    sft_seconds: f64,
    sft_loss: (f64, f64),
    sft: SftCheck,
    runs: Vec<RunLine>,
    heldout: Vec<(String, Evaluation)>,
    chair: Vec<(String, Chair)>,
    seconds: f64,
}

/// `score` on one dataset with the demo's CLIP, as a user runs it.
fn score(data: &Path, clip: &Path, out: &Path, args: &DemoArgs) -> Result<()> {
    crate::commands::score::run(&ScoreArgs {
        data: data.to_path_buf(),
        images: None,
        clip: clip.display().to_string(),
        hf_cache: None,
        offline: true,
        out: Some(out.to_path_buf()),
        format: None,
        estimator: Estimator::Probs,
        splitter: SplitterArg::Rules,
        resplit: false,
        llm_base_url: None,
        llm_model: None,
        llm_api_key: None,
        llm_cache: None,
        llm_fallback: false,
        strict: true,
        allow_absolute_images: false,
        batch: 64,
        precision: Precision::F32,
        device: args.device.clone(),
    })
    .with_context(|| format!("scoring {}", data.display()))
}

fn first_last<T>(steps: &[T], f: impl Fn(&T) -> f64) -> Result<(f64, f64)> {
    Ok((
        f(steps.first().context("no step")?),
        f(steps.last().context("no step")?),
    ))
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let device = args.device.device()?;
    let out = &args.out;
    fresh_dir(out)?;
    let cache_root = out.join(CACHE);
    println!("dama demo → {} ({})", out.display(), describe(&device));

    let spec = WorldSpec {
        train: args.train_images,
        seed: args.seed,
        image_size: IMAGE_SIZE,
        ..WorldSpec::default()
    };
    let world = World::build(&spec);
    let data_dir = out.join("data");
    let data = write_data(&world, &data_dir)?;
    println!(
        "  world: {} training images, {} preference images, {} held out, {}×{} pixels ({})",
        world.train.len(),
        world.preference.len(),
        world.heldout.len(),
        spec.image_size,
        spec.image_size,
        data_dir.display()
    );

    let clip = clip_stage(
        &world,
        args.clip_epochs,
        args.seed,
        &cache_root,
        args.from_scratch,
        &device,
    )?;
    let clip_loss = first_last(&clip.steps, |s| s.loss)?;
    let c = &clip.check;
    println!(
        "  clip: {} steps{} in {:.0} s, loss {:.3} → {:.3}; held out: a true sentence beats its hard negative {:.0}% of the time, another image's sentence {:.0}% (mean Γ {:.1} vs {:.1})",
        clip.steps.len(),
        if clip.cached { " (cached)" } else { "" },
        clip.seconds,
        clip_loss.0,
        clip_loss.1,
        100.0 * c.true_beats_negative,
        100.0 * c.matched_beats_mismatched,
        c.mean_true,
        c.mean_negative
    );

    let sft = sft_stage(
        &clip.dir,
        &data.sft,
        &data.heldout,
        args.sft_epochs,
        args.seed,
        &cache_root,
        &out.join("sft-check"),
        args.from_scratch,
        &device,
    )?;
    let sft_loss = first_last(&sft.steps, |s| s.loss)?;
    let s = &sft.check;
    println!(
        "  sft: {} steps{} in {:.0} s, loss {:.3} → {:.3}; held out: loss {:.3} → {:.3}, log π(true) > log π(hallucinated) for {:.0}% of pairs (before: {:.0}%)",
        sft.steps.len(),
        if sft.cached { " (cached)" } else { "" },
        sft.seconds,
        sft_loss.0,
        sft_loss.1,
        s.heldout_loss_init,
        s.heldout_loss,
        100.0 * s.accuracy,
        100.0 * s.accuracy_init
    );

    // Preference pairs as the paper builds them: the SFT model's own sampled answers.
    let t0 = Instant::now();
    let sampled = sample_pairs(
        &sft.model,
        &world.preference,
        &out.join("preference"),
        args.seed,
        &args.device,
        MAX_LENGTH,
    )?;
    let sample_seconds = t0.elapsed().as_secs_f64();
    let web = crate::demo::web::write_bundle(out, &sampled.pairs, &clip.dir)?;
    let gaps = {
        let mut n = [0usize; 3];
        for p in &sampled.pairs {
            n[p.gap().clamp(1, 3) - 1] += 1;
        }
        n
    };
    println!(
        "  preference: {SAMPLES} answers sampled per image (temperature {TEMPERATURE}) in {sample_seconds:.0} s, {:.2} errors per answer; {} pairs (chosen = fewest errors; {} images tied), the rejected answer making 1 / 2 / ≥3 more errors in {} / {} / {}",
        sampled.mean_errors,
        sampled.pairs.len(),
        sampled.dropped,
        gaps[0],
        gaps[1],
        gaps[2]
    );

    println!(
        "  explorer: these pairs and this CLIP for the browser in {} (scripts/make-web-demo.sh bundles seed 0's)",
        web.display()
    );

    let t0 = Instant::now();
    let train_path = data_dir.join("pairs.scored.jsonl");
    let held_path = data_dir.join("heldout.scored.jsonl");
    score(&sampled.path, &clip.dir, &train_path, args)?;
    score(&data.heldout, &clip.dir, &held_path, args)?;
    let score_seconds = t0.elapsed().as_secs_f64();
    let truth: HashMap<String, (Scene, usize)> = sampled
        .pairs
        .iter()
        .map(|p| (p.pair.id.clone(), (p.scene.clone(), p.gap())))
        .collect();
    let sc = score_check(&train_path, &truth)?;
    println!(
        "  score: {} + {} pairs in {score_seconds:.0} s; mean Γ of true sub-sentences {:.2}, of false ones {:.2}; δ > 0 for {:.0}% of pairs; mean δ when the rejected answer makes 1 / 2 / ≥3 more errors {:+.3} / {:+.3} / {:+.3}",
        sampled.pairs.len(),
        data.heldout_pairs.len(),
        sc.mean_true,
        sc.mean_false,
        100.0 * sc.positive_delta,
        sc.delta_by_gap[0],
        sc.delta_by_gap[1],
        sc.delta_by_gap[2]
    );

    let model = sft.model.clone();
    let base = TrainConfig {
        epochs: args.epochs,
        lr: args.lr,
        seed: args.seed,
        max_length: Some(MAX_LENGTH),
        save_every: 0,
        save_total_limit: 1,
        ref_cache: Some(out.join("ref_logps.jsonl")),
        ..TrainConfig::paper(model.clone(), train_path)
    };
    let mut runs = Vec::new();
    let mut lines = Vec::new();
    for mode in [Mode::Dama, Mode::Dpo] {
        let cfg = TrainConfig {
            dama: DamaConfig { mode, ..base.dama },
            ..base.clone()
        };
        let dir = out.join("runs").join(mode.to_string());
        let summary = train(&cfg, &dir, false, &device, &Progress::default())
            .with_context(|| format!("training {mode}"))?;
        let last = summary.steps.last().context("no step")?;
        println!(
            "  {mode:>4}: {} steps in {:.0} s, final loss {:.3}, margin {:+.3}, accuracy {:.2}",
            last.step, summary.seconds, last.loss, last.rewards_margins, last.rewards_accuracies
        );
        lines.push(RunLine {
            mode: mode.to_string(),
            steps: last.step,
            seconds: summary.seconds,
            loss: last.loss,
            margin: last.rewards_margins,
            accuracy: last.rewards_accuracies,
        });
        runs.push((mode, summary));
    }

    // Held-out comparison against the reference: the SFT model both runs started from.
    let (processor, _) = load_processor(&model, true, Some(MAX_LENGTH))?;
    let held_data = TrainData::load(&held_path, &processor, DataOptions::default())?;
    let held_cache = out.join("ref_logps_heldout.jsonl");
    let pass = ReferencePass {
        model_dir: &model,
        max_length: Some(MAX_LENGTH),
        cache: &held_cache,
        device: &device,
        dtype: candle_core::DType::F32,
        batch: 16,
        shared_prefix: true,
    };
    let held_refs = reference_logps(&pass, &held_data, &processor, &Silent)?;
    let beta = base.dama.beta as f64;
    let mut table = vec![(
        "reference (sft)",
        evaluate(&model, &held_data, &processor, &held_refs, beta, &device)?,
    )];
    for (mode, s) in &runs {
        let name = if *mode == Mode::Dama { "dama" } else { "dpo" };
        table.push((
            name,
            evaluate(
                &s.final_dir,
                &held_data,
                &processor,
                &held_refs,
                beta,
                &device,
            )?,
        ));
    }
    print_table(&table);

    // Hallucination of each model's own answers to the held-out questions (Table 1).
    let eval_dir = out.join("eval");
    let questions = write_questions(&world.heldout, &eval_dir)?;
    let mut models = vec![("sft", model.clone())];
    for (mode, s) in &runs {
        models.push((
            if *mode == Mode::Dama { "dama" } else { "dpo" },
            s.final_dir.clone(),
        ));
    }
    let mut chairs = Vec::new();
    for (name, dir) in &models {
        let answers = eval_dir.join(format!("answers-{name}.jsonl"));
        let c = chair_of(
            dir,
            &questions,
            &world.heldout,
            &answers,
            &args.device,
            MAX_LENGTH,
        )?;
        chairs.push((name.to_string(), c));
    }
    print_chair(&chairs);

    let named: Vec<NamedRun> = runs
        .iter()
        .map(|(m, s)| NamedRun {
            name: if *m == Mode::Dama { "dama" } else { "dpo" },
            steps: &s.steps,
        })
        .collect();
    let plots_dir = out.join("plots");
    std::fs::create_dir_all(&plots_dir)?;
    let plots = plot_runs(&plots_dir, &named)?;
    println!(
        "  plots: {}",
        plots
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        world: format!("{spec:?}"),
        clip_cached: clip.cached,
        clip_seconds: clip.seconds,
        clip_loss,
        clip: clip.check,
        sample_seconds,
        preference_pairs: sampled.pairs.len(),
        preference_dropped: sampled.dropped,
        sampled_errors: sampled.mean_errors,
        score_seconds,
        score: sc,
        sft_cached: sft.cached,
        sft_seconds: sft.seconds,
        sft_loss,
        sft: sft.check,
        runs: lines,
        heldout: table.iter().map(|(n, e)| (n.to_string(), *e)).collect(),
        chair: chairs,
        seconds,
    };
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    println!(
        "done in {seconds:.0} s; everything is in {} (numbers in summary.json)",
        out.display()
    );
    Ok(())
}

fn print_table(rows: &[(&str, Evaluation)]) {
    println!(
        "\n  held-out pairs      accuracy   margin β·h   log-prob gap log π(y_w) − log π(y_l)"
    );
    println!(
        "                                            hard      normal    easy   (bands of δ, Fig. 6)"
    );
    for (name, e) in rows {
        println!(
            "  {name:<18} {:>7.2}   {:>+9.3}   {:>+8.3}  {:>+8.3}  {:>+8.3}",
            e.accuracy, e.margin, e.gap_by_band[0], e.gap_by_band[1], e.gap_by_band[2]
        );
    }
    println!();
}

fn print_chair(rows: &[(String, Chair)]) {
    let n = rows.first().map_or(0, |(_, c)| c.answers);
    println!(
        "  held-out answers ({n} questions, {NUM_BEAMS} beams)   CHAIR: Resp.   Ment.   recall   world (kind and attributes): Resp.   Ment.   false statements / answer   words"
    );
    for (name, c) in rows {
        println!(
            "  {name:<38} {:>6.1}  {:>6.1}  {:>6.1}   {:>35.1}  {:>6.1}  {:>26.2}  {:>6.1}{}",
            100.0 * c.chair_s_refine,
            100.0 * c.chair_i,
            100.0 * c.recall,
            100.0 * c.attr_resp,
            100.0 * c.attr_ment,
            c.false_statements,
            c.words,
            if c.truncated > 0 {
                format!("  ({} cut at the token budget)", c.truncated)
            } else {
                String::new()
            }
        );
    }
    println!();
}

/// The demo on a given device, for `main`.
pub fn run_default() -> Result<()> {
    run(&DemoArgs::default())
}

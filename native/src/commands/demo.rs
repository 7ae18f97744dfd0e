//! The demo (`dama-native` with no arguments): the whole pipeline on data and a model it makes
//! itself, so that it runs offline, on a CPU, in a few minutes.
//!
//! 1. a synthetic preference set with known hardness (`demo::synthetic`): 256 pairs to train
//!    on, 64 held out, annotated with δ and α_D;
//! 2. a tiny random LLaVA-1.5 in the Hugging Face layout;
//! 3. the reference log-probs, once, shared by both runs;
//! 4. training with `dama` and with `dpo`, same data order, same steps;
//! 5. both policies on the held-out pairs: reward accuracy, margin, and the log-prob gap of
//!    hard / normal / easy pairs (the paper's Fig. 6), plus the training curves as PNGs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use clap::Args;
use dama_core::{DamaConfig, Mode};

use dama_llava::random::{TinySpec, write_tiny_model};

use dama_train::prepare::load_processor;
use dama_train::{
    DataOptions, ReferencePass, Silent, TrainConfig, TrainData, reference_logps, train,
};

use crate::demo::eval::{Evaluation, evaluate};
use crate::device::{DeviceArgs, describe};
use crate::progress::Progress;
use crate::report::{NamedRun, plot_runs};
use dama_world::{SyntheticSpec, generate, write_annotated};

/// Marks a folder the demo made, so that a second run may clear it (and nothing else).
const MARKER: &str = ".dama-demo";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to write everything (cleared first if an earlier demo made it).
    #[arg(long, default_value = "dama-demo")]
    pub out: PathBuf,
    /// Passes over the 256 training pairs (16 steps each at N = 16).
    #[arg(long, default_value_t = 12)]
    pub epochs: u64,
    /// Peak learning rate (large: the model is tiny and random).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            out: PathBuf::from("dama-demo"),
            epochs: 12,
            lr: 2e-3,
            seed: 0,
            device: DeviceArgs {
                device: crate::device::DeviceKind::Auto,
                gpu: 0,
            },
        }
    }
}

fn fresh_dir(out: &Path) -> Result<()> {
    if out.exists() {
        if !out.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by the demo: choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(MARKER),
        "made by `dama-native` (the demo); safe to delete\n",
    )?;
    Ok(())
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let device = args.device.device()?;
    let out = &args.out;
    fresh_dir(out)?;
    println!("dama demo → {} ({})", out.display(), describe(&device));

    let mut pairs = generate(&SyntheticSpec {
        seed: args.seed,
        ..SyntheticSpec::default()
    });
    let held = pairs.split_off(256);
    let data_dir = out.join("data");
    let train_path = write_annotated(&data_dir, "train", &pairs)?;
    let held_path = write_annotated(&data_dir, "heldout", &held)?;
    println!(
        "  data: {} training pairs, {} held out ({})",
        pairs.len(),
        held.len(),
        data_dir.display()
    );

    let model = out.join("tiny-llava");
    std::fs::create_dir_all(&model)?;
    write_tiny_model(&model, &TinySpec::default(), args.seed)?;
    println!("  model: a tiny random LLaVA-1.5 ({})", model.display());

    let base = TrainConfig {
        epochs: args.epochs,
        lr: args.lr,
        seed: args.seed,
        max_length: Some(512),
        save_every: 0,
        save_total_limit: 1,
        ref_cache: Some(out.join("ref_logps.jsonl")),
        ..TrainConfig::paper(model.clone(), train_path)
    };
    let mut runs = Vec::new();
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
        runs.push((mode, summary));
    }

    // Held-out comparison against the reference (the untrained tiny model).
    let (processor, _) = load_processor(&model, true, Some(512))?;
    let held_data = TrainData::load(&held_path, &processor, DataOptions::default())?;
    let held_cache = out.join("ref_logps_heldout.jsonl");
    let pass = ReferencePass {
        model_dir: &model,
        max_length: Some(512),
        cache: &held_cache,
        device: &device,
        dtype: candle_core::DType::F32,
        batch: 16,
        shared_prefix: true,
    };
    let held_refs = reference_logps(
        &pass,
        &held_data,
        &processor,
        &Silent,
        &dama_train::dist::Single,
    )?;
    let beta = base.dama.beta as f64;
    let mut table = vec![(
        "reference",
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
    println!(
        "done in {:.0} s; everything is in {}",
        started.elapsed().as_secs_f64(),
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

/// The demo on a given device, for `main`.
pub fn run_default() -> Result<()> {
    run(&DemoArgs::default())
}

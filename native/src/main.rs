//! `dama-native`: DAMA (Data- and Model-aware DPO) for LLaVA-1.5, from one binary.
//!
//! Run with no arguments for the end-to-end demo; `dama-native --help` lists the commands.

use anyhow::Result;
use clap::{Parser, Subcommand};
use dama_native::commands;

#[derive(Parser)]
#[command(
    name = "dama-native",
    version,
    about = "DAMA (Data- and Model-aware DPO, ICML 2025) for LLaVA-1.5: score preference data with CLIP, compute reference log-probs, train, generate, evaluate.",
    long_about = "DAMA (Data- and Model-aware DPO, ICML 2025) for LLaVA-1.5.\n\n\
        A typical run: `score` a preference dataset with CLIP (per-pair hardness δ and α_D), \
        `train` LLaVA-1.5 on it (reference log-probs are computed and cached first). \
        With no command, runs the demo: a world of pictures with known contents, a CLIP and an \
        SFT model trained on it, preference pairs sampled from that model, DPO against DAMA, \
        and CHAIR of their answers, in about a minute on a CPU (release build)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Measure each pair's hardness with CLIP: split, score, δ, δ̄, α_D → annotated dataset.
    Score(Box<commands::score::ScoreArgs>),
    /// Compute and cache the frozen reference model's log-probs of every pair.
    RefLogps(commands::ref_logps::RefLogpsArgs),
    /// Fine-tune LLaVA-1.5 with DPO, D²PO, MDPO or DAMA (defaults: the paper's settings).
    Train(Box<commands::train::TrainArgs>),
    /// Answer questions about images with a model (greedy, beam search or sampling), resumable.
    Generate(Box<commands::generate::GenerateArgs>),
    /// Supervised fine-tuning on a dataset's chosen answers (LLaVA's second stage).
    Sft(Box<commands::sft::SftArgs>),
    /// The end-to-end demo (also what runs with no command).
    Demo(commands::demo::DemoArgs),
    /// Measure hallucination: Object HalBench, AMBER, judged benchmarks (MMHal-, LLaVA-Bench).
    Eval(commands::eval::EvalArgs),
    /// Write a tiny random LLaVA-1.5 in the Hugging Face layout (for tests and trials).
    InitTiny(commands::init_tiny::InitTinyArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Score(args)) => commands::score::run(&args),
        Some(Command::RefLogps(args)) => commands::ref_logps::run(&args),
        Some(Command::Train(args)) => commands::train::run(&args),
        Some(Command::Generate(args)) => commands::generate::run(&args),
        Some(Command::Eval(args)) => commands::eval::run(&args),
        Some(Command::Sft(args)) => commands::sft::run(&args),
        Some(Command::InitTiny(args)) => commands::init_tiny::run(&args),
        Some(Command::Demo(args)) => commands::demo::run(&args),
        None => commands::demo::run_default(),
    }
}

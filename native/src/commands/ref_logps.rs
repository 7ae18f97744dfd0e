//! `ref-logps`: the frozen reference model's log-probs of every pair, computed once into a
//! cache keyed by model, template and preprocessing (`train` does this itself when needed).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dama_train::prepare::load_processor;
use dama_train::{DataOptions, ReferencePass, TrainData, reference_logps};

use crate::args::{InputArgs, ModelArgs};
use crate::device::{DeviceArgs, describe};
use crate::progress::Progress;

#[derive(Debug, Clone, Args)]
pub struct RefLogpsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The preference data (any format `train` reads).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The cache file to write (extended if it exists and matches; an error if it does not).
    #[arg(long)]
    pub out: PathBuf,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: &RefLogpsArgs) -> Result<()> {
    let device = args.device.device()?;
    let dir = args.model.resolve(&args.model.model)?;
    let dtype = args.input.precision(device.is_cuda()).dtype();
    let max_length = Some(args.input.max_length);
    let (processor, positions) = load_processor(&dir, !args.input.no_pad, max_length)?;
    let options = DataOptions {
        images: args.images.as_deref(),
        skip_bad: args.input.skip_bad,
        absolute_images: args.input.allow_absolute_images,
        max_positions: Some(positions),
    };
    let data = TrainData::load(&args.data, &processor, options)?;
    let progress = Progress::default();
    let list = PathBuf::from(format!("{}.skipped.jsonl", args.out.display()));
    data.summary.write_skipped(&list)?;
    data.report(&progress, Some(&list), max_length);
    eprintln!(
        "reference log-probs of {} pairs on {}",
        data.pairs.len(),
        describe(&device)
    );
    let pass = ReferencePass {
        model_dir: &dir,
        max_length: Some(args.input.max_length),
        cache: &args.out,
        device: &device,
        dtype,
        batch: args.batch,
        shared_prefix: !args.input.no_shared_prefix,
    };
    let refs = reference_logps(
        &pass,
        &data,
        &processor,
        &progress,
        &dama_train::dist::Single,
    )?;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    println!(
        "{} pairs: mean log-prob chosen {:.3}, rejected {:.3}; cache {}",
        refs.chosen.len(),
        mean(&refs.chosen),
        mean(&refs.rejected),
        args.out.display()
    );
    Ok(())
}

//! `init-tiny`: a tiny random LLaVA-1.5 in the Hugging Face layout, for tests, the demo and
//! trying the trainer without downloading 14 GB. transformers loads it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use dama_llava::random::{TinySpec, write_tiny_model};

#[derive(Debug, Clone, Args)]
pub struct InitTinyArgs {
    /// Folder to write (created; files in it are overwritten).
    pub out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Width of the language model.
    #[arg(long, default_value_t = 64)]
    pub hidden_size: usize,
    /// Width of its SwiGLU MLP.
    #[arg(long, default_value_t = 160)]
    pub intermediate_size: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Attention heads (hidden_size must be a multiple).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than --heads).
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// Side of the square image the vision tower takes (a multiple of --patch-size).
    #[arg(long, default_value_t = 56)]
    pub image_size: usize,
    #[arg(long, default_value_t = 14)]
    pub patch_size: usize,
}

impl InitTinyArgs {
    pub fn spec(&self) -> TinySpec {
        TinySpec {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.layers,
            num_heads: self.heads,
            num_kv_heads: self.kv_heads,
            image_size: self.image_size,
            patch_size: self.patch_size,
            ..TinySpec::default()
        }
    }
}

pub fn run(args: &InitTinyArgs) -> Result<()> {
    anyhow::ensure!(
        args.hidden_size.is_multiple_of(args.heads),
        "--hidden-size {} is not a multiple of --heads {}",
        args.hidden_size,
        args.heads
    );
    anyhow::ensure!(
        args.heads.is_multiple_of(args.kv_heads),
        "--heads {} is not a multiple of --kv-heads {}",
        args.heads,
        args.kv_heads
    );
    anyhow::ensure!(
        args.image_size.is_multiple_of(args.patch_size),
        "--image-size {} is not a multiple of --patch-size {}",
        args.image_size,
        args.patch_size
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_tiny_model(&args.out, &args.spec(), args.seed)
        .with_context(|| format!("writing a tiny LLaVA to {}", args.out.display()))?;
    let size = std::fs::metadata(args.out.join("model.safetensors"))?.len();
    println!(
        "wrote a tiny random LLaVA-1.5 ({:.1} MB of weights) to {}",
        size as f64 / 1e6,
        args.out.display()
    );
    Ok(())
}

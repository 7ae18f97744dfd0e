//! `train --plan` and the memory check at the start of every `train`: `dama_train::plan`'s
//! bytes per GPU, whether they fit, and the cheapest settings that would.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use dama_llava::LlavaConfig;
use dama_train::TrainConfig;
use dama_train::plan::{MemoryPlan, PlanSettings, plan, suggest};

/// The planner's flags. A data-parallel run is planned from the launch's own flags and
/// environment (`--nproc` or the launcher's world size, `--zero`): one name for one thing.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Print the memory plan (bytes per GPU by category, the peak, whether it fits
    /// --gpu-memory, the cheapest settings that would) and exit without training. --model may
    /// then also be a config.json file: nothing else is read.
    #[arg(long)]
    pub plan: bool,
    /// Memory of one GPU, e.g. `80GB`, `80GiB`, `141GB` (a bare number is GB). Default: the
    /// device's; required for --plan on the CPU.
    #[arg(long, value_parser = parse_bytes)]
    pub gpu_memory: Option<u64>,
    /// Tokens of one conversation (image tokens + prompt + answer) the plan assumes for the
    /// longest pair of a micro-batch. Default: --max-length, the worst case.
    #[arg(long)]
    pub plan_tokens: Option<usize>,
    /// Start training even when the plan says it will not fit the GPU.
    #[arg(long)]
    pub skip_memory_check: bool,
}

/// `80GB`, `80 GiB`, `1.5TB`, `80` (GB), `85899345920B`: bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a size such as 80GB or 80GiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "gb" | "g" => 1e9,
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        u => {
            return Err(format!(
                "`{s}`: unknown unit `{u}` (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    Ok((value * scale).round() as u64)
}

/// The model's config.json from a folder, or a config file itself.
pub fn read_config(path: &Path) -> Result<LlavaConfig> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    LlavaConfig::from_file(&file).with_context(|| format!("reading {}", file.display()))
}

fn gib(bytes: u64) -> String {
    dama_train::plan::table::gib(bytes)
}

impl PlanArgs {
    /// The plan of `cfg` (its ZeRO stage included) on each of `world` GPUs.
    pub fn plan(
        &self,
        cfg: &TrainConfig,
        model: &LlavaConfig,
        cuda: bool,
        world: usize,
    ) -> Result<MemoryPlan> {
        let settings = PlanSettings {
            world_size: world.max(1),
            ..PlanSettings::of_run(cfg, model, self.plan_tokens, cuda)
        };
        Ok(plan(model, &settings)?)
    }

    /// The GPU memory to plan for: --gpu-memory, else the device's (`None` on the CPU).
    pub fn capacity(&self, device: &Device) -> Option<u64> {
        self.gpu_memory.or_else(|| crate::device::memory(device))
    }
}

/// The plan as text: the table, whether it fits `capacity`, and if not the cheapest settings
/// that would (or that none of them does).
pub fn report(p: &MemoryPlan, model: &LlavaConfig, capacity: Option<u64>) -> Result<String> {
    let mut out = format!("{p}\n");
    let tokens = p.settings.sequence.prefix + p.settings.sequence.answer;
    out += &format!("  (conversations of {tokens} tokens: --plan-tokens, default --max-length)\n");
    let Some(cap) = capacity else {
        return Ok(out);
    };
    if p.fits(cap) {
        out += &format!(
            "fits {} of GPU memory ({:.0}% at the peak)\n",
            gib(cap),
            100.0 * p.peak as f64 / cap as f64
        );
        return Ok(out);
    }
    out += &format!(
        "does not fit {} of GPU memory: the peak needs {} more\n",
        gib(cap),
        gib(p.peak - cap)
    );
    let alternatives = suggest(model, &p.settings, cap, 3)?;
    if alternatives.is_empty() {
        out += "no combination of activation checkpointing, smaller micro-batches, a higher ZeRO stage, 8-bit moments, bf16-sr masters and LoRA fits: plan for more GPUs (--nproc, --zero) or a larger card\n";
    } else {
        out += "cheapest settings that fit (exact changes first, then approximations):\n";
        for a in &alternatives {
            out += &format!("  {}  → peak {}\n", a.flags.join(" "), gib(a.plan.peak));
        }
    }
    Ok(out)
}

/// `train --plan`: prints the report; a CPU needs --gpu-memory.
pub fn print_plan(
    args: &PlanArgs,
    cfg: &TrainConfig,
    model_path: &Path,
    device: &Device,
    world: usize,
) -> Result<()> {
    let model = read_config(model_path)?;
    let capacity = args.capacity(device);
    if capacity.is_none() {
        bail!(
            "--plan on the CPU needs --gpu-memory (the card to plan for, e.g. --gpu-memory 80GB)"
        );
    }
    let p = args.plan(
        cfg,
        &model,
        device.is_cuda() || args.gpu_memory.is_some(),
        world,
    )?;
    print!("{}", report(&p, &model, capacity)?);
    Ok(())
}

/// The check at the start of a run on a GPU: stops before anything loads when the plan does
/// not fit, naming the cheapest settings that would; one line when it does. Nothing on the
/// CPU (its memory is not the GPU's).
/// `world` is the run's number of ranks (each on its own GPU).
pub fn check(
    args: &PlanArgs,
    cfg: &TrainConfig,
    model_dir: &Path,
    device: &Device,
    world: usize,
) -> Result<()> {
    if !device.is_cuda() {
        return Ok(());
    }
    let model = read_config(model_dir)?;
    let Some(capacity) = args.capacity(device) else {
        return Ok(());
    };
    let p = args.plan(cfg, &model, true, world)?;
    if p.fits(capacity) || args.skip_memory_check {
        eprintln!(
            "memory plan: peak {} of {}{}",
            gib(p.peak),
            gib(capacity),
            if p.fits(capacity) {
                ""
            } else {
                " (does not fit; --skip-memory-check)"
            }
        );
        return Ok(());
    }
    bail!(
        "this run would not fit the GPU, so it stops before loading anything (--skip-memory-check starts it anyway):\n{}",
        report(&p, &model, Some(capacity))?
    )
}

/// A model folder or config file path for --plan (repo ids are resolved by the caller).
pub fn plan_model_path(spec: &str) -> Option<PathBuf> {
    let p = Path::new(spec);
    (p.is_dir() || p.is_file()).then(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_units() {
        assert_eq!(parse_bytes("80GB").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("80").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("80 GiB").unwrap(), 80 << 30);
        assert_eq!(parse_bytes("1.5TB").unwrap(), 1_500_000_000_000);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        let err = parse_bytes("80 parsecs").unwrap_err();
        assert!(err.contains("parsecs"), "{err}");
        assert!(parse_bytes("GB").is_err());
    }
}

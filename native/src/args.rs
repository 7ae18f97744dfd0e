//! Flags that several commands share, and the parser that reads dama's named choices (modes,
//! presets, precisions…) straight into the library types, with the names the files use.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use clap::builder::{PossibleValue, TypedValueParser};
use dama_core::Named;
use dama_train::{Precision, TrainConfig};

use crate::hub::{HubOptions, MODEL_FILES, resolve_model};

/// Parses one of a [`Named`] enum's names (`-` and `_` alike) and lists them in `--help`.
#[derive(Debug)]
pub struct Choice<T>(PhantomData<T>);

impl<T> Clone for Choice<T> {
    fn clone(&self) -> Self {
        Choice(PhantomData)
    }
}

pub fn choice<T: Named>() -> Choice<T> {
    Choice(PhantomData)
}

impl<T: Named + Send + Sync> TypedValueParser for Choice<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let s = value.to_string_lossy();
        T::from_name(&s)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::ALL.iter().map(|v| PossibleValue::new(v.name())),
        ))
    }
}

/// The paper's run: the defaults every flag of `train` shows.
pub fn paper() -> TrainConfig {
    TrainConfig::paper(PathBuf::new(), PathBuf::new())
}

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: a Hugging Face folder, or a repo id (`llava-hf/llava-1.5-7b-hf`) looked up in
    /// the HF cache and downloaded there unless --offline.
    #[arg(long)]
    pub model: String,
    /// The Hugging Face hub cache (default: as huggingface_hub decides, $HF_HOME…).
    #[arg(long)]
    pub hf_cache: Option<PathBuf>,
    /// Never download; also set by HF_HUB_OFFLINE=1.
    #[arg(long)]
    pub offline: bool,
}

impl ModelArgs {
    /// A model folder for `spec` (this `--model` or another, e.g. `--ref-model`).
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        resolve_model(
            spec,
            MODEL_FILES,
            &HubOptions::from_env(self.hf_cache.clone(), self.offline),
        )
    }
}

/// How pairs become model inputs; `train`, `ref-logps` and `generate` must agree on these.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Weights' dtype (f32 masters and moments in the optimizer either way). Default: bf16 on
    /// CUDA, f32 on CPU.
    #[arg(long, value_parser = choice::<Precision>())]
    pub precision: Option<Precision>,
    /// Resize and crop images instead of padding them to a square (LLaVA-1.5 pads).
    #[arg(long)]
    pub no_pad: bool,
    /// Cut conversations to this many tokens.
    #[arg(long, default_value_t = paper().max_length.expect("the paper cuts at 2048"))]
    pub max_length: usize,
    /// Run chosen and rejected as two full sequences instead of sharing the prefix.
    #[arg(long)]
    pub no_shared_prefix: bool,
    /// Report and skip bad records (missing/corrupt image, empty answer, duplicate id, an
    /// image outside the image folder, no scored token) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Read absolute image paths where they point (only for data of your own: by default
    /// every image must be inside the image folder, and a path out of it is a bad record).
    #[arg(long)]
    pub allow_absolute_images: bool,
}

impl InputArgs {
    pub fn precision(&self, cuda: bool) -> Precision {
        self.precision.unwrap_or(Precision::default_for(cuda))
    }
}

/// A flag group as the command line has it when none of its flags is given: its clap
/// defaults, the one place they are written (for code that runs a command without a command
/// line, as the demo does).
pub fn defaults<T: clap::FromArgMatches + Args>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults"));
    let matches = cmd
        .try_get_matches_from(["defaults"])
        .expect("a flag group with a required flag has no defaults");
    T::from_arg_matches(&matches).expect("clap's defaults parse")
}

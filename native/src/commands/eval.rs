//! `eval`: hallucination benchmarks over a model's answers, computed as their reference code
//! computes them (`dama_eval`): `objhal` (Object HalBench CHAIR), `amber` (AMBER), `judge`
//! (LLM-judged benchmarks: MMHal-Bench, LLaVA-Bench).
//!
//! Each reads the files the benchmark's authors publish (the user supplies them), takes the
//! answers from `--answers` (the JSONL of `dama-native generate`, or the benchmark's own answer
//! files) or generates them with `--model` (`dama-native generate`'s model, through the
//! benchmarks' [`Generator`] seam: [`answers_file`]), and writes `--out DIR/summary.json` (the reference's names), `details.jsonl` (one line
//! per answer) and prints a table.

pub mod amber;
pub mod judge;
pub mod objhal;
pub mod output;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use dama_data::split::llm::LlmConfig;
use dama_eval::answers::{BenchmarkQuestion, Generator};
use dama_eval::llm::Endpoint;
use dama_train::Precision;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{InputArgs, ModelArgs, choice, paper};
use crate::device::DeviceArgs;
use crate::generator::{DecodeArgs, ModelGenerator};

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub benchmark: Benchmark,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Benchmark {
    /// Object HalBench (RLHF-V / RLAIF-V): CHAIRs, CHAIRs_refine (Resp.), CHAIRi (Ment.),
    /// object recall, against COCO 2014's annotations.
    Objhal(Box<objhal::ObjhalArgs>),
    /// AMBER: discriminative accuracy / precision / recall / F1 per type, generative CHAIR,
    /// Cover, Hal, Cog, and the AMBER score.
    Amber(Box<amber::AmberArgs>),
    /// An LLM judge with the benchmark's rubric (MMHal-Bench, LLaVA-Bench), over an
    /// OpenAI-compatible endpoint; replies cached so a rerun costs nothing.
    Judge(Box<judge::JudgeArgs>),
}

pub fn run(args: &EvalArgs) -> Result<()> {
    match &args.benchmark {
        Benchmark::Objhal(a) => objhal::run(a),
        Benchmark::Amber(a) => amber::run(a),
        Benchmark::Judge(a) => judge::run(a),
    }
}

/// Where the answers come from: a file, or a model that generates them.
#[derive(Debug, Clone, Args)]
pub struct AnswerArgs {
    /// The answers: `dama-native generate`'s JSONL (`id`, `question`, `answer`), or the
    /// benchmark's own answer files (RLAIF-V's `image_id` / `question` / `text` JSONL, AMBER's
    /// `[{"id", "response"}]` list).
    #[arg(long)]
    pub answers: Option<PathBuf>,
    /// Generate the answers with this model (an HF folder or repo id) instead, into
    /// `--out/answers.jsonl` (resumed when it is there), with the benchmark's settings.
    #[arg(long)]
    pub model: Option<String>,
    /// With --model: the Hugging Face hub cache (default: as huggingface_hub decides).
    #[arg(long)]
    pub hf_cache: Option<PathBuf>,
    /// With --model: never download; also set by HF_HUB_OFFLINE=1.
    #[arg(long)]
    pub offline: bool,
    /// With --model: the weights' dtype (default bf16 on CUDA, f32 on CPU).
    #[arg(long, value_parser = choice::<Precision>())]
    pub precision: Option<Precision>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// With --model: beams (RLAIF-V's evaluation uses 3, temperature 0).
    #[arg(long, default_value_t = GenerationSettings::PAPER.num_beams)]
    pub num_beams: usize,
    /// With --model: the longest answer, in tokens.
    #[arg(long, default_value_t = GenerationSettings::PAPER.max_new_tokens)]
    pub max_new_tokens: usize,
    /// With --model: questions decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

impl AnswerArgs {
    pub fn validate(&self) -> Result<()> {
        match (&self.answers, &self.model) {
            (Some(_), Some(_)) => bail!("pass --answers or --model, not both"),
            (None, None) => bail!(
                "no answers: pass --answers FILE (the output of `dama-native generate`, or the \
                 benchmark's answer file) or --model DIR to generate them"
            ),
            _ => {}
        }
        if self.num_beams == 0 || self.max_new_tokens == 0 || self.batch_size == 0 {
            bail!("--num-beams, --max-new-tokens and --batch-size must be at least 1");
        }
        Ok(())
    }

    fn model_args(&self) -> ModelArgs {
        ModelArgs {
            model: self.model.clone().expect("validated: --answers or --model"),
            hf_cache: self.hf_cache.clone(),
            offline: self.offline,
        }
    }

    /// LLaVA-1.5's preprocessing, as `generate` defaults it: images padded to a square,
    /// prompt and answer within the paper's 2048 tokens.
    fn input_args(&self) -> InputArgs {
        InputArgs {
            precision: self.precision,
            no_pad: false,
            max_length: paper().max_length.expect("the paper cuts at 2048"),
            no_shared_prefix: false,
            skip_bad: false,
            allow_absolute_images: false,
        }
    }

    /// The benchmark's decoding: beam search (or greedy), no sampling, length penalty 1.
    fn decode_args(&self) -> DecodeArgs {
        DecodeArgs {
            num_beams: self.num_beams,
            length_penalty: 1.0,
            temperature: GenerationSettings::PAPER.temperature as f32,
            top_p: None,
            top_k: None,
            seed: 0,
            max_new_tokens: self.max_new_tokens,
            batch_size: self.batch_size,
        }
    }
}

/// How a benchmark's answers are generated: greedy or beam search, no sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationSettings {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    /// 0: no sampling (transformers' `do_sample=False`).
    pub temperature: f64,
}

impl GenerationSettings {
    /// RLAIF-V's evaluation (`muffin_vqa.py`): 3 beams, temperature 0, 1024 new tokens.
    pub const PAPER: Self = Self {
        num_beams: 3,
        max_new_tokens: 1024,
        temperature: 0.0,
    };
}

/// The answers file of a run: `--answers`, or `--out/answers.jsonl` generated with `--model`
/// for the benchmark's `questions` (listed only when needed).
///
/// Generation is `dama-native generate`'s ([`ModelGenerator`]) with the benchmark's settings:
/// the file holds `generate`'s lines, its settings sit beside it (`answers.jsonl.settings.json`),
/// a killed run resumes without repeating a question, and resuming with another model or other
/// decoding settings is refused, naming what differs, rather than mixing two models' answers.
pub fn answers_file(
    args: &AnswerArgs,
    out: &Path,
    questions: impl FnOnce() -> Result<Vec<BenchmarkQuestion>>,
) -> Result<PathBuf> {
    if let Some(path) = &args.answers {
        return Ok(path.clone());
    }
    let questions = questions()?;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let path = out.join("answers.jsonl");
    let progress = bar(questions.len(), "generate");
    let shown = progress.clone();
    let mut generator = ModelGenerator::load(
        &args.model_args(),
        &args.input_args(),
        &args.device,
        &args.decode_args(),
    )?
    .with_answers_file(path.clone())
    .with_progress(move |answered, total| {
        shown.set_length(total as u64);
        shown.set_position(answered as u64);
    });
    eprintln!(
        "generating the answers to {} questions into {} (resumed where it holds some)",
        questions.len(),
        path.display()
    );
    let start = std::time::Instant::now();
    let answers = generator.generate(&questions)?;
    progress.finish_and_clear();
    eprintln!(
        "{} answers in {} ({:.1} s)",
        answers.len(),
        path.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// An OpenAI-compatible endpoint for a judge or an extractor. The API key is read from the
/// environment only (`DAMA_LLM_API_KEY` or `OPENAI_API_KEY`), so that it is never in a
/// command line, a log or an output file.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// The endpoint (default $DAMA_LLM_BASE_URL), e.g. https://api.openai.com/v1.
    #[arg(long)]
    pub llm_base_url: Option<String>,
    /// The model (default $DAMA_LLM_MODEL); the published numbers used GPT-4 (judge) and
    /// GPT-3.5 (Object HalBench's extractor).
    #[arg(long)]
    pub llm_model: Option<String>,
    /// Cache of the replies (default: `--out/llm-cache/`): a rerun asks nothing again.
    #[arg(long)]
    pub llm_cache: Option<PathBuf>,
}

impl LlmArgs {
    /// The endpoint, its cache in `--llm-cache` or `out/llm-cache`.
    pub fn endpoint(&self, out: &Path) -> Result<Endpoint> {
        let mut config =
            LlmConfig::from_env(self.llm_base_url.clone(), self.llm_model.clone(), None)?;
        config.cache_dir = Some(
            self.llm_cache
                .clone()
                .unwrap_or_else(|| out.join("llm-cache")),
        );
        eprintln!(
            "LLM: {} at {} (key {}; cache {})",
            config.model,
            config.base_url,
            if config.api_key.is_some() {
                "from the environment"
            } else {
                "none"
            },
            config.cache_dir.as_ref().expect("set above").display()
        );
        Ok(Endpoint::new(config)?)
    }
}

/// A progress bar over `len` items of `what`.
pub fn bar(len: usize, what: &str) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}}  {{per_sec}}  eta {{eta}}  {{msg}}"
        ))
        .expect("valid template"),
    )
}

/// A spinner for a pass of unknown length.
pub fn spinner(message: &str) -> ProgressBar {
    let s = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg}  {elapsed}").expect("valid template"),
    );
    s.set_message(message.to_owned());
    s.enable_steady_tick(std::time::Duration::from_millis(200));
    s
}

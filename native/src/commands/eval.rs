//! `eval`: hallucination benchmarks over a model's answers, computed as their reference code
//! computes them (`dama_eval`): `objhal` (Object HalBench CHAIR), `amber` (AMBER), `judge`
//! (LLM-judged benchmarks: MMHal-Bench, LLaVA-Bench).
//!
//! Each reads the files the benchmark's authors publish (the user supplies them), takes the
//! answers from `--answers` (the JSONL of `dama-native generate`, or the benchmark's own answer
//! files) or generates them with `--model` ([`generator`]: the seam where `generate` plugs
//! in), and writes `--out DIR/summary.json` (the reference's names), `details.jsonl` (one line
//! per answer) and prints a table.

pub mod amber;
pub mod judge;
pub mod objhal;
pub mod output;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use dama_data::split::llm::LlmConfig;
use dama_eval::answers::{Answers, BenchmarkQuestion, Generator};
use dama_eval::llm::Endpoint;
use dama_train::Precision;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::choice;
use crate::device::DeviceArgs;

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
        if self.num_beams == 0 || self.max_new_tokens == 0 {
            bail!("--num-beams and --max-new-tokens must be at least 1");
        }
        Ok(())
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

/// The model `--model` names, and how to run it.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    pub model: String,
    pub hf_cache: Option<PathBuf>,
    pub offline: bool,
    pub precision: Option<Precision>,
    pub device: DeviceArgs,
}

/// The generator behind `--model`: where `dama-native generate`'s model plugs in. To wire it,
/// return `Box::new(<generate's Generator>::load(&choice.model, …, settings)?)` here; the
/// benchmarks call it only through [`dama_eval::answers::Generator`] and [`generate_into`].
pub fn generator(
    choice: &ModelChoice,
    _settings: &GenerationSettings,
) -> Result<Box<dyn Generator>> {
    bail!(
        "--model {}: this build of dama-native has no `generate` yet; write the answers with a \
         generator of your own (one JSON object a line: `id`, `question`, `answer`) and pass \
         --answers",
        choice.model
    )
}

/// The answers file of a run: `--answers`, or `--out/answers.jsonl` generated with `--model`
/// for the benchmark's `questions` (listed only when needed).
pub fn answers_file(
    args: &AnswerArgs,
    out: &Path,
    questions: impl FnOnce() -> Result<Vec<BenchmarkQuestion>>,
) -> Result<PathBuf> {
    if let Some(path) = &args.answers {
        return Ok(path.clone());
    }
    let model = args.model.clone().expect("validated: --answers or --model");
    let settings = GenerationSettings {
        num_beams: args.num_beams,
        max_new_tokens: args.max_new_tokens,
        ..GenerationSettings::PAPER
    };
    let choice = ModelChoice {
        model,
        hf_cache: args.hf_cache.clone(),
        offline: args.offline,
        precision: args.precision,
        device: args.device.clone(),
    };
    let questions = questions()?;
    let mut generator = generator(&choice, &settings)?;
    let path = out.join("answers.jsonl");
    generate_into(generator.as_mut(), &questions, &path)?;
    Ok(path)
}

/// Questions per call of the generator: each batch is appended to the file as soon as it is
/// answered, so a killed run loses at most one.
pub const GENERATE_BATCH: usize = 8;

/// Answers the `questions` that `path` does not have yet (a killed run resumes) and appends
/// them as `generate` writes them (`id`, `question`, `answer`). Returns how many were
/// generated now.
pub fn generate_into(
    generator: &mut dyn Generator,
    questions: &[BenchmarkQuestion],
    path: &Path,
) -> Result<usize> {
    let done: HashSet<String> = if path.is_file() {
        Answers::read(path)?
            .records
            .iter()
            .filter_map(|r| r.id.as_ref().map(dama_eval::answers::show))
            .collect()
    } else {
        HashSet::new()
    };
    let todo: Vec<BenchmarkQuestion> = questions
        .iter()
        .filter(|q| !done.contains(&q.id))
        .cloned()
        .collect();
    eprintln!(
        "generating {} answers into {} ({} there already)",
        todo.len(),
        path.display(),
        questions.len() - todo.len()
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| path.display().to_string())?;
    let bar = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("generate {bar:30} {pos}/{len} answers  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    for batch in todo.chunks(GENERATE_BATCH) {
        let answers = generator.generate(batch)?;
        let asked: HashSet<&str> = batch.iter().map(|q| q.id.as_str()).collect();
        let mut lines = String::new();
        for a in &answers {
            if !asked.contains(a.id.as_str()) {
                bail!(
                    "the generator answered id {:?}, which it was not asked",
                    a.id
                );
            }
            let line = serde_json::json!({"id": a.id, "question": a.question, "answer": a.answer});
            lines.push_str(&format!("{line}\n"));
        }
        if answers.len() != batch.len() {
            bail!(
                "the generator gave {} answers to {} questions",
                answers.len(),
                batch.len()
            );
        }
        file.write_all(lines.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| path.display().to_string())?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(todo.len())
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

#[cfg(test)]
mod tests {
    use super::*;
    use dama_eval::EvalError;
    use dama_eval::answers::{GeneratedAnswer, ImageSource};

    /// Answers each question with a text made from its id, and records what it was asked.
    struct Echo {
        asked: Vec<String>,
        fail_after: Option<usize>,
    }

    impl Generator for Echo {
        fn generate(
            &mut self,
            questions: &[BenchmarkQuestion],
        ) -> Result<Vec<GeneratedAnswer>, EvalError> {
            if self.fail_after.is_some_and(|n| self.asked.len() >= n) {
                return Err(EvalError::Config("killed".into()));
            }
            self.asked.extend(questions.iter().map(|q| q.id.clone()));
            Ok(questions
                .iter()
                .map(|q| GeneratedAnswer {
                    id: q.id.clone(),
                    question: q.question.clone(),
                    answer: format!("answer to {}", q.id),
                })
                .collect())
        }
    }

    fn questions(n: usize) -> Vec<BenchmarkQuestion> {
        (0..n)
            .map(|i| BenchmarkQuestion {
                id: (100 + i).to_string(),
                question: format!("Q{i}?"),
                image: ImageSource::Path(PathBuf::from(format!("{i}.png"))),
            })
            .collect()
    }

    #[test]
    fn a_killed_generation_resumes_without_repeating_a_question() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/answers.jsonl");
        let qs = questions(GENERATE_BATCH * 2 + 3);
        let mut first = Echo {
            asked: vec![],
            fail_after: Some(GENERATE_BATCH),
        };
        assert!(generate_into(&mut first, &qs, &path).is_err());
        assert_eq!(first.asked.len(), GENERATE_BATCH);
        let mut second = Echo {
            asked: vec![],
            fail_after: None,
        };
        let n = generate_into(&mut second, &qs, &path).unwrap();
        assert_eq!(n, qs.len() - GENERATE_BATCH);
        assert!(second.asked.iter().all(|id| !first.asked.contains(id)));
        let answers = Answers::read(&path).unwrap();
        let ids: Vec<String> = answers
            .records
            .iter()
            .map(|r| dama_eval::answers::show(r.id.as_ref().unwrap()))
            .collect();
        let want: Vec<String> = qs.iter().map(|q| q.id.clone()).collect();
        assert_eq!(ids, want);
        assert_eq!(answers.records[3].answer, "answer to 103");
        assert_eq!(answers.records[3].question.as_deref(), Some("Q3?"));
        // Nothing left: no call at all.
        let mut third = Echo {
            asked: vec![],
            fail_after: Some(0),
        };
        assert_eq!(generate_into(&mut third, &qs, &path).unwrap(), 0);
    }
}

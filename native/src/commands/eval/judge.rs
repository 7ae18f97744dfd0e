//! `eval judge`: benchmarks whose answers an LLM rates with the benchmark's rubric, over an
//! OpenAI-compatible endpoint (see `dama_eval::judge`). The replies are cached in
//! `--out/llm-cache/`, so a rerun (another table, a killed run) asks nothing again; the API key
//! comes from the environment only and is never printed or written.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use dama_eval::answers::Answers;
use dama_eval::judge::{MmhalSummary, mmhal};

use super::output::{self, table};
use super::{AnswerArgs, LlmArgs, answers_file, bar};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JudgedBenchmark {
    /// MMHal-Bench (LLaVA-RLHF): 96 questions rated 0–6 with its GPT-4 rubric; a rating
    /// under 3 is a hallucination.
    Mmhal,
}

#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    #[arg(long, value_enum, default_value_t = JudgedBenchmark::Mmhal)]
    pub benchmark: JudgedBenchmark,
    /// The benchmark's questions: MMHal-Bench's `response_template.json` (`question_type`,
    /// `image_content`, `question`, `gt_answer`, `image_src`, …). Its own `model_answer`s are
    /// judged when neither --answers nor --model is given.
    #[arg(long)]
    pub template: PathBuf,
    /// The benchmark's images, named as the end of each `image_src` (for --model).
    #[arg(long)]
    pub images: Option<PathBuf>,
    #[command(flatten)]
    pub answers: AnswerArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Output folder: summary.json, details.jsonl, llm-cache/ (and answers.jsonl with --model).
    #[arg(long)]
    pub out: PathBuf,
}

impl JudgeArgs {
    pub fn validate(&self) -> Result<()> {
        // Neither --answers nor --model: the template's own answers.
        if self.answers.answers.is_some() || self.answers.model.is_some() {
            self.answers.validate()?;
        }
        if self.answers.model.is_some() && self.images.is_none() {
            bail!("--model needs --images: the benchmark's images, downloaded from `image_src`");
        }
        Ok(())
    }
}

pub fn run(args: &JudgeArgs) -> Result<()> {
    args.validate()?;
    match args.benchmark {
        JudgedBenchmark::Mmhal => run_mmhal(args),
    }
}

fn run_mmhal(args: &JudgeArgs) -> Result<()> {
    let records = mmhal::read_template(&args.template)?;
    let answers_path = if args.answers.answers.is_some() || args.answers.model.is_some() {
        Some(answers_file(&args.answers, &args.out, || {
            Ok(mmhal::benchmark_questions(&records, args.images.as_deref()))
        })?)
    } else {
        None
    };
    let answers = answers_path.as_deref().map(Answers::read).transpose()?;
    let merged = mmhal::merge_answers(&args.template, &records, answers.as_ref())?;
    let endpoint = args.llm.endpoint(&args.out)?;
    let b = bar(records.len(), "judge");
    let report = mmhal::evaluate(&records, &merged, &endpoint, |done| {
        let u = endpoint.usage();
        b.set_message(format!("{} asked, {} cached", u.requests, u.cache_hits));
        b.set_position(done as u64);
    })?;
    b.finish_and_clear();
    output::warn(&report.warnings);
    let answers_named = answers_path.unwrap_or_else(|| args.template.clone());
    let (summary_path, details_path) = output::write(
        &args.out,
        "mmhal",
        &answers_named,
        &report.summary,
        &report.details,
        &report.warnings,
    )?;
    print!("{}", render(&report.summary));
    let u = endpoint.usage();
    println!(
        "judge: {} requests, {} cached replies, {} retries",
        u.requests, u.cache_hits, u.retries
    );
    println!("summary: {}", summary_path.display());
    println!("details: {}", details_path.display());
    Ok(())
}

/// The printed table: the overall figures, then the average rating per question type.
pub fn render(s: &MmhalSummary) -> String {
    let mut rows = vec![
        vec!["MMHal-Bench".to_owned(), "value".to_owned()],
        vec![
            "average rating (0–6)".to_owned(),
            format!("{:.2}", s.average_score),
        ],
        vec![
            "hallucination rate".to_owned(),
            format!("{:.2}", s.hallucination_rate),
        ],
        vec![
            "informativeness %".to_owned(),
            format!("{:.2}", s.informativeness),
        ],
    ];
    for (kind, score) in &s.per_type {
        rows.push(vec![format!("  {kind}"), format!("{score:.2}")]);
    }
    format!(
        "{}{} questions, judge {}, {} replies without a single rating (counted 0)\n",
        table(&rows),
        s.questions,
        s.judge,
        s.unparsed_ratings
    )
}

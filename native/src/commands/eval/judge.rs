//! `eval judge`: benchmarks whose answers an LLM rates with the benchmark's rubric, over an
//! OpenAI-compatible endpoint (see `dama_eval::judge`): MMHal-Bench and LLaVA-Bench. The replies are cached in
//! `--out/llm-cache/`, so a rerun (another table, a killed run) asks nothing again; the API key
//! comes from the environment only and is never printed or written.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use dama_eval::answers::Answers;
use dama_eval::judge::llava_bench::{self, Bench, Files};
use dama_eval::judge::{LlavaSummary, MmhalSummary, mmhal};
use dama_eval::llm::Endpoint;

use super::output::{self, table};
use super::{AnswerArgs, LlmArgs, answers_file, bar};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JudgedBenchmark {
    /// MMHal-Bench (LLaVA-RLHF): 96 questions rated 0–6 with its GPT-4 rubric; a rating
    /// under 3 is a hallucination.
    Mmhal,
    /// LLaVA-Bench (In-the-Wild or COCO): each answer scored 1–10 against GPT-4's reference
    /// answer with LLaVA's rubric per category; the relative score in percent.
    LlavaBench,
}

#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    #[arg(long, value_enum, default_value_t = JudgedBenchmark::Mmhal)]
    pub benchmark: JudgedBenchmark,
    /// MMHal-Bench: its `response_template.json` (`question_type`, `image_content`,
    /// `question`, `gt_answer`, `image_src`, …). Its own `model_answer`s are judged when
    /// neither --answers nor --model is given.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// LLaVA-Bench: its `questions.jsonl` (`question_id`, `image`, `text`, `category`).
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// LLaVA-Bench: its `context.jsonl` (each image's `caption`).
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// LLaVA-Bench: the reference answers (`answers_gpt4.jsonl`), in the questions' order.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// LLaVA-Bench: LLaVA's rubrics, `llava/eval/table/rule.json` of its repository.
    #[arg(long)]
    pub rule: Option<PathBuf>,
    /// The benchmark's images (MMHal-Bench: named as the end of each `image_src`; LLaVA-Bench:
    /// its `images/`), for --model.
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
        let given = self.answers.answers.is_some() || self.answers.model.is_some();
        match self.benchmark {
            JudgedBenchmark::Mmhal => {
                if self.template.is_none() {
                    bail!(
                        "--benchmark mmhal needs --template (MMHal-Bench's response_template.json)"
                    );
                }
                // Neither --answers nor --model: the template's own answers.
                if given {
                    self.answers.validate()?;
                }
            }
            JudgedBenchmark::LlavaBench => {
                let missing: Vec<&str> = [
                    ("--questions", self.questions.is_none()),
                    ("--context", self.context.is_none()),
                    ("--reference", self.reference.is_none()),
                    ("--rule", self.rule.is_none()),
                ]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(f, _)| *f)
                .collect();
                if !missing.is_empty() {
                    bail!("--benchmark llava-bench needs {}", missing.join(", "));
                }
                self.answers.validate()?;
            }
        }
        if self.answers.model.is_some() && self.images.is_none() {
            bail!("--model needs --images: the benchmark's images");
        }
        Ok(())
    }
}

pub fn run(args: &JudgeArgs) -> Result<()> {
    args.validate()?;
    match args.benchmark {
        JudgedBenchmark::Mmhal => run_mmhal(args),
        JudgedBenchmark::LlavaBench => run_llava_bench(args),
    }
}

fn run_mmhal(args: &JudgeArgs) -> Result<()> {
    let template = args.template.as_deref().expect("validated");
    let records = mmhal::read_template(template)?;
    let answers_path = if args.answers.answers.is_some() || args.answers.model.is_some() {
        Some(answers_file(&args.answers, &args.out, || {
            Ok(mmhal::benchmark_questions(&records, args.images.as_deref()))
        })?)
    } else {
        None
    };
    let answers = answers_path.as_deref().map(Answers::read).transpose()?;
    let merged = mmhal::merge_answers(template, &records, answers.as_ref())?;
    let endpoint = args.llm.endpoint(&args.out)?;
    let b = bar(records.len(), "judge");
    let report = mmhal::evaluate(&records, &merged, &endpoint, |done| {
        let u = endpoint.usage();
        b.set_message(format!("{} asked, {} cached", u.requests, u.cache_hits));
        b.set_position(done as u64);
    })?;
    b.finish_and_clear();
    output::warn(&report.warnings);
    let answers_named = answers_path.unwrap_or_else(|| template.to_path_buf());
    let (summary_path, details_path) = output::write(
        &args.out,
        "mmhal",
        &answers_named,
        &report.summary,
        &report.details,
        &report.warnings,
    )?;
    print!("{}", render(&report.summary));
    say_done(&endpoint, &summary_path, &details_path);
    Ok(())
}

fn run_llava_bench(args: &JudgeArgs) -> Result<()> {
    let path = |p: &Option<PathBuf>| p.clone().expect("validated");
    let (questions, context, reference, rule) = (
        path(&args.questions),
        path(&args.context),
        path(&args.reference),
        path(&args.rule),
    );
    let bench = Bench::load(&Files {
        questions: &questions,
        context: &context,
        reference: &reference,
        rule: &rule,
    })?;
    let answers_path = answers_file(&args.answers, &args.out, || {
        Ok(bench.benchmark_questions(args.images.as_deref().expect("validated")))
    })?;
    let merged = bench.merge_answers(&Answers::read(&answers_path)?)?;
    let endpoint = args.llm.endpoint(&args.out)?;
    let b = bar(merged.len(), "judge");
    let report = llava_bench::evaluate(&bench, &merged, &endpoint, |done| {
        let u = endpoint.usage();
        b.set_message(format!("{} asked, {} cached", u.requests, u.cache_hits));
        b.set_position(done as u64);
    })?;
    b.finish_and_clear();
    output::warn(&report.warnings);
    let (summary_path, details_path) = output::write(
        &args.out,
        "llava-bench",
        &answers_path,
        &report.summary,
        &report.details,
        &report.warnings,
    )?;
    print!("{}", render_llava(&report.summary));
    say_done(&endpoint, &summary_path, &details_path);
    Ok(())
}

/// What the endpoint cost and where the results are: the last lines of either judge.
fn say_done(endpoint: &Endpoint, summary: &Path, details: &Path) {
    let u = endpoint.usage();
    println!(
        "judge: {} requests, {} cached replies, {} retries",
        u.requests, u.cache_hits, u.retries
    );
    println!("summary: {}", summary.display());
    println!("details: {}", details.display());
}

/// LLaVA-Bench's table: per category, the two means and the relative score.
pub fn render_llava(s: &LlavaSummary) -> String {
    let mut rows = vec![
        [
            "LLaVA-Bench",
            "questions",
            "reference",
            "model",
            "relative %",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for (name, c) in &s.categories {
        rows.push(vec![
            name.strip_prefix(llava_bench::CATEGORY_PREFIX)
                .unwrap_or(name)
                .to_owned(),
            c.questions.to_string(),
            format!("{:.3}", c.reference),
            format!("{:.3}", c.model),
            format!("{:.1}", c.relative),
        ]);
    }
    format!(
        "{}judge {}, {} replies without a score pair (counted -1, -1)\n",
        table(&rows),
        s.judge,
        s.unparsed_scores
    )
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

//! `generate`: answers to a dataset's questions (or one question about one image), with a KV
//! cache, greedy, beam search or sampling as transformers' `generate`; resumable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use dama_data::{MAX_IMAGE_SIDE, SHOWN_SKIPPED, decode_rgb, image_dimensions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::answers_file::AnswersFile;
use crate::args::{InputArgs, ModelArgs};
use crate::device::{DeviceArgs, describe};
use crate::generator::{DecodeArgs, ModelGenerator, Question};
use crate::questions::{PendingQuestion, QuestionOptions, read_questions};

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The questions: a questions file (JSONL, `{"id", "image", "question"}` a line) or any
    /// preference dataset `train` reads (each pair's question and image).
    #[arg(long, required_unless_present = "image", conflicts_with = "image")]
    pub data: Option<PathBuf>,
    /// Folder the image paths are relative to (default: the data file's).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The answers file (JSONL); ids already in it are not generated again.
    #[arg(long, required_unless_present = "image")]
    pub out: Option<PathBuf>,
    /// One image to ask about (with --question); the answer is printed.
    #[arg(long, requires = "question")]
    pub image: Option<PathBuf>,
    /// The question about --image.
    #[arg(long, requires = "image")]
    pub question: Option<String>,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    // flags are checked before the model loads
    args.decode.strategy()?;
    let generator = ModelGenerator::load(&args.model, &args.input, &args.device, &args.decode)?;
    match (&args.image, &args.question, &args.data, &args.out) {
        (Some(image), Some(question), _, _) => one(&generator, image, question),
        (None, None, Some(data), Some(out)) => dataset(args, &generator, data, out),
        _ => anyhow::bail!("give --data and --out, or --image and --question"),
    }
}

/// One answer, printed.
fn one(generator: &ModelGenerator, image: &Path, question: &str) -> Result<()> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let q = Question {
        id: image.display().to_string(),
        question: question.to_string(),
        image: decode_checked(&bytes).with_context(|| format!("{}", image.display()))?,
    };
    let a = generator
        .answer_batch(std::slice::from_ref(&q), &mut |_| {})?
        .remove(0);
    println!("{}", a.answer);
    eprintln!(
        "{} tokens ({}) in {:.2} s, {:.1} tokens/s",
        a.tokens.len(),
        a.finish,
        a.batch_ms / 1e3,
        a.batch_tokens_per_s
    );
    Ok(())
}

/// Decodes an image after checking its size from its header (no decompression bomb).
fn decode_checked(bytes: &[u8]) -> Result<image::DynamicImage> {
    let (w, h) = image_dimensions(bytes).context("not a readable image")?;
    anyhow::ensure!(
        w.max(h) <= MAX_IMAGE_SIDE,
        "an image of {w}×{h} pixels, over the limit of {MAX_IMAGE_SIDE} a side"
    );
    decode_rgb(bytes).context("the image cannot be decoded")
}

fn dataset(args: &GenerateArgs, generator: &ModelGenerator, data: &Path, out: &Path) -> Result<()> {
    let started = Instant::now();
    let opts = QuestionOptions {
        images: args.images.as_deref(),
        skip_bad: args.input.skip_bad,
        absolute_images: args.input.allow_absolute_images,
    };
    let mut set = read_questions(data, opts)?;
    let list = PathBuf::from(format!("{}.skipped.jsonl", out.display()));
    let mut file = AnswersFile::open(out, generator.identity())?;
    if let Some(line) = file.dropped_torn_line() {
        eprintln!(
            "{}: line {line} was cut short (a killed run): dropped, its answer is generated again",
            out.display()
        );
    }
    let total = set.questions.len();
    let mut todo: Vec<PendingQuestion> = set
        .questions
        .drain(..)
        .filter(|q| !file.done().contains_key(&q.id))
        .collect();
    // every prompt is checked before the first answer: a bad one stops (or is skipped) now
    let mut longest = 0;
    let mut kept = Vec::with_capacity(todo.len());
    for (i, q) in todo.drain(..).enumerate() {
        match generator.prompt(i, &q.id, &q.question) {
            Ok(p) => {
                longest = longest.max(p.input_ids.len() + p.max_new_tokens);
                kept.push(q);
            }
            Err(e) if args.input.skip_bad => {
                let at = dama_data::Location::file(data.display().to_string());
                let why = dama_data::Problem::Untrainable(format!("{e:#}"));
                let bad =
                    dama_data::DataError::record(at, Some(q.id.clone()), Some("question"), why);
                set.summary.skip(dama_data::SkipReason::Untrainable, bad);
            }
            Err(e) => return Err(e.context("pass --skip-bad to skip such questions")),
        }
    }
    let todo = kept;
    set.summary.write_skipped(&list)?;
    let report = set
        .summary
        .report(SHOWN_SKIPPED, Some(&list.display().to_string()));
    if !report.is_empty() {
        eprint!("{report}");
    }
    if longest > generator.max_positions() {
        eprintln!(
            "some answers may run to {longest} positions, past the model's max_position_embeddings ({}): lower --max-new-tokens or --max-length",
            generator.max_positions()
        );
    }
    let already = file.done().len();
    eprintln!(
        "{} {} from {}: {} to answer ({} already in {}), {:?}, batches of {}",
        total,
        set.kind,
        data.display(),
        todo.len(),
        already,
        out.display(),
        generator.strategy(),
        generator.batch_size()
    );
    let bar = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("generate {bar:30} {pos}/{len} questions  {msg}  eta {eta}")
            .expect("valid template"),
    );
    let (mut tokens, mut eos, mut length) = (0usize, 0usize, 0usize);
    let mut stepped = 0usize;
    let unit = match generator.strategy() {
        dama_llava::Strategy::Beam { num_beams, .. } if num_beams > 1 => "tokens/s (all beams)",
        _ => "tokens/s",
    };
    let decode_start = Instant::now();
    for chunk in todo.chunks(generator.batch_size()) {
        let batch = chunk
            .iter()
            .map(|q| {
                Ok(Question {
                    id: q.id.clone(),
                    question: q.question.clone(),
                    image: decode_checked(&q.image)
                        .with_context(|| format!("question `{}`", q.id))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let answers = generator.answer_batch(&batch, &mut |n| {
            stepped += n;
            let secs = decode_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.1} {unit}", stepped as f64 / secs));
        })?;
        for a in &answers {
            file.append(a)?;
            tokens += a.tokens.len();
            match a.finish {
                "eos" => eos += 1,
                _ => length += 1,
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = decode_start.elapsed().as_secs_f64();
    println!(
        "answered {} of {} {} on {} in {:.1} s ({} were already in {}): {} new tokens, {:.1} tokens/s; {} ended with </s>, {} at --max-new-tokens; answers in {}",
        todo.len(),
        total,
        set.kind,
        describe(generator.device()),
        started.elapsed().as_secs_f64(),
        already,
        out.display(),
        tokens,
        tokens as f64 / secs.max(1e-9),
        eos,
        length,
        file.path().display()
    );
    Ok(())
}

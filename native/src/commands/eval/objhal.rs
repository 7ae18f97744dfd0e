//! `eval objhal`: Object HalBench as RLAIF-V's `eval_gpt_obj_halbench.py` scores it (see
//! `dama_eval::objhal`): the benchmark's questions file, COCO 2014's annotations, the
//! reference's synonym list, and the answers.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use dama_eval::answers::Answers;
use dama_eval::nlp::NounLemmatizer;
use dama_eval::objhal::{
    self, LlmExtractor, ObjHalQuestion, ObjectExtractor, OfflineExtractor, Prepared, Summary,
    questions,
};

use super::output::{self, percent, table};
use super::{AnswerArgs, LlmArgs, answers_file, bar, spinner};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExtractorArg {
    /// The reference's offline path: NLTK word tokens, WordNet noun lemmas, the synonym list.
    Offline,
    /// RLAIF-V's GPT object extraction (how the published numbers were made), through
    /// --llm-base-url / --llm-model.
    Llm,
}

#[derive(Debug, Clone, Args)]
pub struct ObjhalArgs {
    /// The benchmark's questions: RLAIF-V's `obj_halbench_300_with_image.jsonl` (`image_id`,
    /// `question`, base64 `image`). Optional with --answers (they are then checked against
    /// it); needed with --model.
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// Folder with COCO 2014's `instances_{val,train}2014.json` and
    /// `captions_{val,train}2014.json` (annotations_trainval2014.zip).
    #[arg(long)]
    pub coco: PathBuf,
    /// RLAIF-V's `eval/data/synonyms_refine.txt`.
    #[arg(long)]
    pub synonyms: PathBuf,
    #[command(flatten)]
    pub answers: AnswerArgs,
    #[arg(long, value_enum, default_value_t = ExtractorArg::Offline)]
    pub extractor: ExtractorArg,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// A WordNet 3.0 `dict` folder (default: Debian's `wordnet-base`, /usr/share/wordnet).
    #[arg(long)]
    pub wordnet: Option<PathBuf>,
    /// Output folder: summary.json, details.jsonl (and answers.jsonl with --model).
    #[arg(long)]
    pub out: PathBuf,
}

impl ObjhalArgs {
    pub fn validate(&self) -> Result<()> {
        self.answers.validate()?;
        if self.answers.model.is_some() && self.questions.is_none() {
            bail!("--model needs --questions: the benchmark's questions and images to answer");
        }
        let llm_flags = self.llm.llm_base_url.is_some()
            || self.llm.llm_model.is_some()
            || self.llm.llm_cache.is_some();
        if llm_flags && self.extractor != ExtractorArg::Llm {
            bail!("--llm-base-url, --llm-model and --llm-cache are for --extractor llm");
        }
        Ok(())
    }
}

pub fn run(args: &ObjhalArgs) -> Result<()> {
    args.validate()?;
    let lemmatizer = NounLemmatizer::load_or_default(args.wordnet.as_deref())?;
    let questions: Option<Vec<ObjHalQuestion>> = match &args.questions {
        Some(path) => {
            let s = spinner(&format!("checking {}", path.display()));
            let qs = questions::read_questions(path)?;
            questions::check_images(path, &qs)?;
            s.finish_and_clear();
            Some(qs)
        }
        None => None,
    };
    let answers_path = answers_file(&args.answers, &args.out, || {
        Ok(questions::benchmark_questions(
            questions
                .as_deref()
                .expect("validated: --model has --questions"),
        ))
    })?;
    let answers = Answers::read(&answers_path)?;
    let finder = objhal::finder(&args.synonyms, lemmatizer)?;
    let s = spinner(&format!(
        "reading COCO annotations in {}",
        args.coco.display()
    ));
    let prepared = Prepared::new(finder, questions.as_deref(), answers, &args.coco)?;
    s.finish_and_clear();

    let endpoint = match args.extractor {
        ExtractorArg::Llm => Some(args.llm.endpoint(&args.out)?),
        ExtractorArg::Offline => None,
    };
    let extractor: Box<dyn ObjectExtractor + '_> = match &endpoint {
        Some(endpoint) => Box::new(LlmExtractor {
            finder: &prepared.finder,
            endpoint,
        }),
        None => Box::new(OfflineExtractor(&prepared.finder)),
    };
    let b = bar(prepared.items.len(), "CHAIR");
    let report = objhal::compute(
        &prepared.answers,
        &prepared.items,
        &prepared.truth,
        extractor.as_ref(),
        |done| {
            b.set_position(done as u64);
            if let Some(e) = &endpoint {
                let u = e.usage();
                b.set_message(format!("{} asked, {} cached", u.requests, u.cache_hits));
            }
        },
    )?;
    b.finish_and_clear();

    let mut warnings = report.warnings.clone();
    if let Some(qs) = &questions {
        let answered: HashSet<i64> = prepared.items.iter().map(|i| i.image_id).collect();
        let missing = qs
            .iter()
            .filter(|q| !answered.contains(&q.image_id))
            .count();
        if missing > 0 {
            warnings.push(format!(
                "{missing} of the benchmark's {} questions have no answer in {}",
                qs.len(),
                answers_path.display()
            ));
        }
    }
    output::warn(&warnings);
    let (summary_path, details_path) = output::write(
        &args.out,
        "objhal",
        &answers_path,
        &report.summary,
        &report.details,
        &warnings,
    )?;
    print!("{}", render(&report.summary));
    if let Some(e) = &endpoint {
        let u = e.usage();
        println!(
            "extractor: {} requests, {} cached replies, {} retries",
            u.requests, u.cache_hits, u.retries
        );
    }
    println!("summary: {}", summary_path.display());
    println!("details: {}", details_path.display());
    Ok(())
}

/// The printed table: the paper's Resp. and Ment. in percent, with the counts behind them.
pub fn render(s: &Summary) -> String {
    let row = |name: &str, value: String, counts: String| vec![name.to_owned(), value, counts];
    let rows = vec![
        row("Object HalBench", "%".into(), "counts".into()),
        row(
            "CHAIRs",
            percent(s.chair_s),
            format!(
                "{} / {} answers",
                s.hallucinated_sentence_num, s.sentence_num
            ),
        ),
        row(
            "CHAIRs_refine (Resp.)",
            percent(s.chair_s_refine),
            format!(
                "{} / {} answers with a COCO object",
                s.hallucinated_sentence_num, s.coco_sentence_num
            ),
        ),
        row(
            "CHAIRi (Ment.)",
            percent(s.chair_i),
            format!(
                "{} / {} mentions",
                s.hallucinated_mention_count, s.mention_count
            ),
        ),
        row(
            "obj_rec",
            percent(s.obj_rec),
            format!("{} / {} objects", s.coco_word_count, s.gt_word_count),
        ),
    ];
    format!(
        "{}{} images, extractor {}, {} words per answer\n",
        table(&rows),
        s.image_num,
        s.extractor,
        s.avg_word_len
            .map_or_else(|| "n/a".into(), |w| format!("{w:.1}"))
    )
}

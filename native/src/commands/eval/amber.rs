//! `eval amber`: AMBER as its `inference.py` scores it (see `dama_eval::amber`): AMBER's data
//! folder, the answers, and optionally a similarity table (spaCy's, precomputed) and NLTK's
//! tagger weights.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use dama_eval::amber::{
    self, AmberData, Discriminative, GenerativeScorer, NounFinder, Similarity, Summary,
};
use dama_eval::answers::Answers;
use dama_eval::nlp::{NounLemmatizer, PerceptronTagger, WordTokenizer};

use super::output::{self, table};
use super::{AnswerArgs, answers_file, bar};

#[derive(Debug, Clone, Args)]
pub struct AmberArgs {
    /// AMBER's `data/` folder: annotations.json, relation.json, safe_words.txt and
    /// query/query_all.json.
    #[arg(long)]
    pub data: PathBuf,
    /// AMBER's image folder (`AMBER_1.jpg` …), for --model.
    #[arg(long)]
    pub images: Option<PathBuf>,
    #[command(flatten)]
    pub answers: AnswerArgs,
    /// A word-similarity table over AMBER's vocabulary (`scripts/amber_similarity.py` writes
    /// it with spaCy's en_core_web_lg, as the reference compares words). Without it only
    /// identical words match.
    #[arg(long)]
    pub similarity: Option<PathBuf>,
    /// The reference's similarity threshold (`--similarity_score`).
    #[arg(long, default_value_t = amber::DEFAULT_THRESHOLD)]
    pub threshold: f64,
    /// NLTK's averaged-perceptron tagger folder (`averaged_perceptron_tagger_eng.*.json`), for
    /// the reference's noun filter. Without it every word in AMBER's vocabulary counts.
    #[arg(long)]
    pub tagger: Option<PathBuf>,
    /// A WordNet 3.0 `dict` folder (default: Debian's `wordnet-base`, /usr/share/wordnet).
    #[arg(long)]
    pub wordnet: Option<PathBuf>,
    /// Output folder: summary.json, details.jsonl (and answers.jsonl with --model).
    #[arg(long)]
    pub out: PathBuf,
}

impl AmberArgs {
    pub fn validate(&self) -> Result<()> {
        self.answers.validate()?;
        if self.answers.model.is_some() && self.images.is_none() {
            bail!("--model needs --images: AMBER's image folder");
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            bail!(
                "--threshold {} is not a similarity in [0, 1]",
                self.threshold
            );
        }
        Ok(())
    }
}

pub fn run(args: &AmberArgs) -> Result<()> {
    args.validate()?;
    let data = AmberData::load(&args.data)?;
    let answers_path = answers_file(&args.answers, &args.out, || {
        let images = args
            .images
            .as_deref()
            .expect("validated: --model has --images");
        Ok(amber::data::benchmark_questions(&args.data, images)?)
    })?;
    let answers = Answers::read(&answers_path)?;
    let similarity = match &args.similarity {
        Some(path) => Similarity::load(path)?,
        None => Similarity::Exact,
    };
    similarity.check_threshold(args.threshold)?;
    let tagger = args
        .tagger
        .as_deref()
        .map(PerceptronTagger::load)
        .transpose()?;
    let (tokenizer, lemmatizer) = (
        WordTokenizer::new(),
        NounLemmatizer::load_or_default(args.wordnet.as_deref())?,
    );
    let nouns = NounFinder {
        tokenizer: &tokenizer,
        lemmatizer: &lemmatizer,
        tagger: tagger.as_ref(),
    };
    let scorer = GenerativeScorer {
        association: &data.association,
        vocabulary: &data.vocabulary,
        safe_words: &data.safe_words,
        similarity: &similarity,
        threshold: args.threshold,
    };
    let b = bar(answers.records.len(), "AMBER");
    let report = amber::evaluate(&data, &answers, &nouns, &scorer, |done| {
        b.set_position(done as u64)
    })?;
    b.finish_and_clear();
    let mut warnings = report.warnings.clone();
    if similarity.name() == "exact" && report.summary.generative.is_some() {
        warnings.push(
            "no --similarity table: only identical words match, where the reference also \
             accepts spaCy-similar ones (Cover and Cog can only be lower, CHAIR and Hal higher)"
                .into(),
        );
    }
    output::warn(&warnings);
    let (summary_path, details_path) = output::write(
        &args.out,
        "amber",
        &answers_path,
        &report.summary,
        &report.details,
        &warnings,
    )?;
    print!("{}", render(&report.summary));
    println!("summary: {}", summary_path.display());
    println!("details: {}", details_path.display());
    Ok(())
}

/// The printed tables: generative, then discriminative per type, then the AMBER score.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    if let Some(g) = &s.generative {
        let rows = vec![
            ["AMBER generative", "CHAIR", "Cover", "Hal", "Cog"]
                .map(str::to_owned)
                .to_vec(),
            vec![
                format!("{} descriptions", g.descriptions),
                format!("{:.1}", g.chair),
                format!("{:.1}", g.cover),
                format!("{:.1}", g.hal),
                format!("{:.1}", g.cog),
            ],
        ];
        out.push_str(&table(&rows));
    }
    let groups: [(&str, Option<Discriminative>); 7] = [
        ("all", s.discriminative),
        ("existence", s.existence),
        ("attribute", s.attribute),
        ("  state", s.state),
        ("  number", s.number),
        ("  action", s.action),
        ("relation", s.relation),
    ];
    if s.discriminative.is_some() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut rows = vec![
            ["AMBER discriminative", "answers", "Acc.", "P", "R", "F1"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for (name, d) in groups {
            if let Some(d) = d {
                rows.push(vec![
                    name.to_owned(),
                    d.answers.to_string(),
                    format!("{:.1}", d.accuracy),
                    format!("{:.1}", d.precision),
                    format!("{:.1}", d.recall),
                    format!("{:.1}", d.f1),
                ]);
            }
        }
        out.push_str(&table(&rows));
    }
    if let Some(score) = s.amber {
        out.push_str(&format!("AMBER score (100 − CHAIR + F1) / 2: {score:.2}\n"));
    }
    out.push_str(&format!(
        "similarity {}, tagger {}, {} discriminative answers not exactly Yes/No\n",
        s.similarity, s.tagger, s.not_yes_no
    ));
    out
}

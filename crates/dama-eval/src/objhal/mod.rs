//! Object HalBench (RLHF-V / RLAIF-V, `eval/eval_gpt_obj_halbench.py`): CHAIR on 300 COCO
//! images. An image's ground truth is its COCO instance classes and the objects its five COCO
//! captions mention; an answer's mentions are found by the same word finder (or by an LLM,
//! [`extractor`]); a mention whose class is not in the ground truth is hallucinated.
//!
//! - `CHAIRs`: hallucinating answers / answers; `CHAIRs_refine` (the papers' *Resp.*):
//!   hallucinating answers / answers that mention a COCO object;
//! - `CHAIRi` (*Ment.*): hallucinated mentions / mentions;
//! - `obj_rec`: per answer, the distinct correctly mentioned classes, summed, over the summed
//!   ground-truth sizes.

pub mod coco;
pub mod extractor;
pub mod questions;
pub mod synonyms;
pub mod words;

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

pub use coco::CocoAnnotations;
pub use extractor::{LlmExtractor, ObjectExtractor, OfflineExtractor};
pub use questions::ObjHalQuestion;
pub use synonyms::Synonyms;
pub use words::{Mention, Mentions, WordFinder};

use crate::EvalError;
use crate::answers::{Answers, as_int, show};
use crate::nlp::py_strip;

/// The number of images the reference asserts.
pub const BENCHMARK_IMAGES: usize = 300;

/// One answer to evaluate.
#[derive(Debug, Clone)]
pub struct Item {
    pub image_id: i64,
    pub question: String,
    /// The answer with "Assistant:" removed and stripped, as the reference reads it.
    pub caption: String,
    /// Index into the answers file's records.
    pub record: usize,
}

/// The answers as the reference reads them, checked against the benchmark's questions when
/// given (an image the benchmark lacks, or another question for it, means an answers file of
/// another benchmark).
pub fn items(
    answers: &Answers,
    questions: Option<&[ObjHalQuestion]>,
) -> Result<Vec<Item>, EvalError> {
    let by_image: Option<HashMap<i64, &ObjHalQuestion>> =
        questions.map(|qs| qs.iter().map(|q| (q.image_id, q)).collect());
    let mut out = Vec::with_capacity(answers.records.len());
    for (k, r) in answers.records.iter().enumerate() {
        let raw = r.image_id.as_ref().or(r.id.as_ref()).ok_or_else(|| {
            answers.error(
                r,
                "no image id: Object HalBench answers carry `image_id` (or `id`)",
            )
        })?;
        let image_id = as_int(raw).ok_or_else(|| {
            answers.error(
                r,
                format!(
                    "field `{}`: {} is not an integer COCO image id",
                    id_field(r),
                    show(raw)
                ),
            )
        })?;
        let mut question = r.question.clone();
        if let Some(by_image) = &by_image {
            let q = by_image.get(&image_id).ok_or_else(|| {
                answers.error(
                    r,
                    format!(
                        "field `{}`: image {image_id} is not one of the benchmark's {} \
                         questions: is this an answers file of another benchmark?",
                        id_field(r),
                        by_image.len()
                    ),
                )
            })?;
            if let Some(asked) = &question
                && !same_question(asked, &q.question)
            {
                return Err(answers.error(
                    r,
                    format!(
                        "field `question`: the answer is to {asked:?}, but the benchmark asks {:?} for image {image_id}: \
                         is this an answers file of another benchmark?",
                        q.question
                    ),
                ));
            }
            question.get_or_insert_with(|| q.question.clone());
        }
        out.push(Item {
            image_id,
            question: question.unwrap_or_default(),
            caption: py_strip(&r.answer.replace("Assistant:", "")).to_owned(),
            record: k,
        });
    }
    Ok(out)
}

/// The field an answer's image id was read from.
fn id_field(r: &crate::answers::AnswerRecord) -> &'static str {
    if r.image_id.is_some() {
        "image_id"
    } else {
        "id"
    }
}

/// The same question, allowing for an image placeholder or template text around it.
fn same_question(a: &str, b: &str) -> bool {
    let clean = |s: &str| py_strip(&s.replace("<image>", "")).to_owned();
    let (a, b) = (clean(a), clean(b));
    a == b || a.contains(&b) || b.contains(&a)
}

/// Every image's ground-truth classes.
pub fn ground_truth(
    coco: &CocoAnnotations,
    finder: &WordFinder,
    images: &HashSet<i64>,
    coco_dir: &std::path::Path,
) -> Result<HashMap<i64, BTreeSet<String>>, EvalError> {
    let mut out = HashMap::new();
    for &image in images {
        let instances = coco.instances.get(&image);
        let captions = coco.captions.get(&image);
        if instances.is_none() && captions.is_none() {
            return Err(EvalError::file(
                coco_dir,
                format!(
                    "image_id {image} has no COCO annotations in {}",
                    list(&coco.files)
                ),
            ));
        }
        let mut classes = BTreeSet::new();
        for category in instances.into_iter().flatten() {
            let name = coco.categories.get(category).ok_or_else(|| {
                EvalError::file(
                    coco_dir,
                    format!("image_id {image}: unknown category_id {category}"),
                )
            })?;
            let class = finder.synonyms.class_of(name).ok_or_else(|| {
                EvalError::file(
                    coco_dir,
                    format!("COCO category {name:?} is not in the synonyms file"),
                )
            })?;
            classes.insert(class.to_owned());
        }
        for caption in captions.into_iter().flatten() {
            classes.extend(finder.find(caption).mentions.into_iter().map(|m| m.class));
        }
        out.insert(image, classes);
    }
    Ok(out)
}

fn list(files: &[std::path::PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One answer's CHAIR details (the reference's `sentences` entries).
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub id: Option<String>,
    pub image_id: i64,
    pub caption: String,
    /// `(word, [word, class])` for each hallucinated mention.
    pub mscoco_hallucinated_words: Vec<(String, (String, String))>,
    /// The ground truth, sorted.
    pub mscoco_gt_words: Vec<String>,
    /// `[word, class]` for each mention.
    pub mscoco_generated_words: Vec<(String, String)>,
    pub hallucination_idxs: Vec<usize>,
    /// The finder's words (offline: every lemma after merging; LLM: the refined objects).
    pub words: Vec<String>,
    pub metrics: DetailMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetailMetrics {
    #[serde(rename = "CHAIRs")]
    pub chair_s: u8,
    #[serde(rename = "CHAIRi")]
    pub chair_i: f64,
}

/// The reference's `overall_metrics` (its names), and the counts behind them. A ratio whose
/// denominator is zero (the reference divides by zero) is `None`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    #[serde(rename = "CHAIRs")]
    pub chair_s: Option<f64>,
    #[serde(rename = "CHAIRs_refine")]
    pub chair_s_refine: Option<f64>,
    #[serde(rename = "CHAIRi")]
    pub chair_i: Option<f64>,
    pub obj_rec: Option<f64>,
    pub sentence_num: usize,
    /// Answers that mention a COCO object.
    pub coco_sentence_num: usize,
    /// Summed distinct correctly mentioned classes (the reference's name for it).
    pub coco_word_count: usize,
    /// Summed ground-truth sizes.
    pub gt_word_count: usize,
    pub avg_word_len: Option<f64>,
    pub correct_rate: Option<f64>,
    pub object_correct_rate: Option<f64>,
    /// Not in the reference's summary: the counts of CHAIRs and CHAIRi.
    pub hallucinated_sentence_num: usize,
    pub mention_count: usize,
    pub hallucinated_mention_count: usize,
    pub image_num: usize,
    pub extractor: String,
}

pub struct Report {
    pub summary: Summary,
    pub details: Vec<Detail>,
    pub warnings: Vec<String>,
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// CHAIR over `items`, as `CHAIR.compute_chair` counts it.
pub fn compute(
    answers: &Answers,
    items: &[Item],
    truth: &HashMap<i64, BTreeSet<String>>,
    extractor: &dyn ObjectExtractor,
    mut progress: impl FnMut(usize),
) -> Result<Report, EvalError> {
    let mut details = Vec::with_capacity(items.len());
    let (mut caps, mut coco_caps, mut hallucinated_caps) = (0, 0, 0);
    let (mut mentions_total, mut hallucinated_total) = (0, 0);
    let (mut gt_count, mut recalled, mut word_total) = (0, 0, 0);
    for item in items {
        let record = &answers.records[item.record];
        let found = extractor
            .mentions(&item.question, &item.caption)
            .map_err(|e| answers.error(record, e.to_string()))?;
        let gt = &truth[&item.image_id];
        word_total += py_strip(&item.caption).split(' ').count();
        gt_count += gt.len();
        mentions_total += found.mentions.len();
        let mut hallucinated = Vec::new();
        let mut idxs = Vec::new();
        let mut correct = BTreeSet::new();
        for m in &found.mentions {
            if gt.contains(&m.class) {
                correct.insert(m.class.clone());
            } else {
                hallucinated.push((m.word.clone(), (m.word.clone(), m.class.clone())));
                idxs.push(m.index);
            }
        }
        hallucinated_total += hallucinated.len();
        recalled += correct.len();
        caps += 1;
        if !hallucinated.is_empty() {
            hallucinated_caps += 1;
        }
        let chair_i = if found.mentions.is_empty() {
            0.0
        } else {
            coco_caps += 1;
            hallucinated.len() as f64 / found.mentions.len() as f64
        };
        details.push(Detail {
            id: record.id.as_ref().map(show),
            image_id: item.image_id,
            caption: item.caption.clone(),
            metrics: DetailMetrics {
                chair_s: u8::from(!hallucinated.is_empty()),
                chair_i,
            },
            mscoco_hallucinated_words: hallucinated,
            mscoco_gt_words: gt.iter().cloned().collect(),
            mscoco_generated_words: found
                .mentions
                .iter()
                .map(|m| (m.word.clone(), m.class.clone()))
                .collect(),
            hallucination_idxs: idxs,
            words: found.words,
        });
        progress(details.len());
    }
    let images: HashSet<i64> = items.iter().map(|i| i.image_id).collect();
    let mut warnings = Vec::new();
    if images.len() != BENCHMARK_IMAGES {
        warnings.push(format!(
            "{} distinct images, not Object HalBench's {BENCHMARK_IMAGES}: the numbers are not \
             comparable with published ones",
            images.len()
        ));
    }
    let chair_s_refine = ratio(hallucinated_caps, coco_caps);
    let chair_i = ratio(hallucinated_total, mentions_total);
    for (name, value) in [("CHAIRs_refine", chair_s_refine), ("CHAIRi", chair_i)] {
        if value.is_none() {
            warnings.push(format!(
                "{name} is undefined: no answer mentions a COCO object"
            ));
        }
    }
    let summary = Summary {
        chair_s: ratio(hallucinated_caps, caps),
        chair_s_refine,
        chair_i,
        obj_rec: ratio(recalled, gt_count),
        sentence_num: caps,
        coco_sentence_num: coco_caps,
        coco_word_count: recalled,
        gt_word_count: gt_count,
        avg_word_len: ratio(word_total, caps),
        correct_rate: chair_s_refine.map(|r| 1.0 - r),
        object_correct_rate: chair_i.map(|r| 1.0 - r),
        hallucinated_sentence_num: hallucinated_caps,
        mention_count: mentions_total,
        hallucinated_mention_count: hallucinated_total,
        image_num: images.len(),
        extractor: extractor.name(),
    };
    Ok(Report {
        summary,
        details,
        warnings,
    })
}

/// The benchmark's files.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub synonyms: &'a std::path::Path,
    /// The folder with COCO 2014's `instances_*` and `captions_*` files.
    pub coco: &'a std::path::Path,
    /// The benchmark's questions file, to check the answers against (optional).
    pub questions: Option<&'a std::path::Path>,
    pub answers: &'a std::path::Path,
}

/// Everything [`compute`] needs, read and checked.
pub struct Prepared {
    pub finder: WordFinder,
    pub answers: Answers,
    pub items: Vec<Item>,
    pub truth: HashMap<i64, BTreeSet<String>>,
}

impl Prepared {
    pub fn load(
        inputs: &Inputs,
        lemmatizer: crate::nlp::NounLemmatizer,
    ) -> Result<Self, EvalError> {
        let questions = inputs
            .questions
            .map(questions::read_questions)
            .transpose()?;
        let answers = Answers::read(inputs.answers)?;
        Self::new(
            finder(inputs.synonyms, lemmatizer)?,
            questions.as_deref(),
            answers,
            inputs.coco,
        )
    }

    /// From files already read: the answers checked against the questions (when given) and
    /// against COCO (every answered image must have annotations), the ground truth built.
    pub fn new(
        finder: WordFinder,
        questions: Option<&[ObjHalQuestion]>,
        answers: Answers,
        coco_dir: &std::path::Path,
    ) -> Result<Self, EvalError> {
        let items = items(&answers, questions)?;
        let images: HashSet<i64> = items.iter().map(|i| i.image_id).collect();
        let coco = CocoAnnotations::read(coco_dir, &images)?;
        for item in &items {
            let id = item.image_id;
            if !coco.instances.contains_key(&id) && !coco.captions.contains_key(&id) {
                let record = &answers.records[item.record];
                return Err(answers.error(
                    record,
                    format!(
                        "field `{}`: image {id} has no COCO annotations in {}: is this \
                         an answers file of another benchmark, or are COCO's files incomplete?",
                        id_field(record),
                        list(&coco.files)
                    ),
                ));
            }
        }
        let truth = ground_truth(&coco, &finder, &images, coco_dir)?;
        Ok(Self {
            finder,
            answers,
            items,
            truth,
        })
    }
}

/// The offline word finder over the synonyms file.
pub fn finder(
    synonyms: &std::path::Path,
    lemmatizer: crate::nlp::NounLemmatizer,
) -> Result<WordFinder, EvalError> {
    Ok(WordFinder {
        tokenizer: crate::nlp::WordTokenizer::new(),
        lemmatizer,
        synonyms: Synonyms::load(synonyms)?,
    })
}

//! AMBER's data folder (the `data/` of its repository): `annotations.json` (a list, entry
//! `id - 1` for id `id`), `relation.json` (each object word → its associated words),
//! `safe_words.txt`, and the query files under `query/` (only to check answers against).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::EvalError;

/// What an annotation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Generative,
    /// `discriminative-hallucination`.
    Existence,
    /// `discriminative-attribute-state`.
    State,
    /// `discriminative-attribute-number`.
    Number,
    /// `discriminative-attribute-action`.
    Action,
    /// Any other type (`discriminative-relation`, `relation`), as the reference's `else`.
    Relation,
}

impl Kind {
    pub fn of(type_name: &str) -> Self {
        match type_name {
            "generative" => Self::Generative,
            "discriminative-hallucination" => Self::Existence,
            "discriminative-attribute-state" => Self::State,
            "discriminative-attribute-number" => Self::Number,
            "discriminative-attribute-action" => Self::Action,
            _ => Self::Relation,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Truth {
    /// Generative: the objects in the image and the hallucination targets.
    Objects {
        truth: Vec<String>,
        hallu: Vec<String>,
    },
    /// Discriminative: whether the truth is "yes" (anything else counts as "no").
    YesNo(bool),
}

#[derive(Debug, Clone)]
pub struct Annotation {
    pub kind: Kind,
    pub truth: Truth,
}

#[derive(Deserialize)]
struct RawAnnotation {
    #[serde(rename = "type")]
    kind: String,
    truth: Value,
    #[serde(default)]
    hallu: Vec<String>,
}

pub struct AmberData {
    pub dir: PathBuf,
    pub annotations: Vec<Annotation>,
    /// `relation.json`, in file order.
    pub association: HashMap<String, Vec<String>>,
    /// Every word of `relation.json`, keys and associated words (`hallucination_words`).
    pub vocabulary: std::collections::HashSet<String>,
    pub safe_words: Vec<String>,
    /// id → query, from `query/query_all.json` when it is there.
    pub queries: Option<HashMap<i64, String>>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EvalError::json(path, None, e))
}

impl AmberData {
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        let path = dir.join("annotations.json");
        let raw: Vec<RawAnnotation> = read_json(&path)?;
        let association: HashMap<String, Vec<String>> = read_json(&dir.join("relation.json"))?;
        let mut annotations = Vec::with_capacity(raw.len());
        for (i, a) in raw.into_iter().enumerate() {
            let kind = Kind::of(&a.kind);
            let at = |why: String| EvalError::at(&path, None, Some(format!("id {}", i + 1)), why);
            let truth = match (kind, a.truth) {
                (Kind::Generative, Value::Array(words)) => {
                    let truth: Vec<String> = words
                        .into_iter()
                        .map(|w| w.as_str().map(str::to_owned).ok_or(w))
                        .collect::<Result<_, _>>()
                        .map_err(|w| at(format!("truth word {w} is not a string")))?;
                    for w in truth.iter().chain(&a.hallu) {
                        if !association.contains_key(w) {
                            return Err(at(format!("object {w:?} is not a key of relation.json")));
                        }
                    }
                    Truth::Objects {
                        truth,
                        hallu: a.hallu,
                    }
                }
                (Kind::Generative, other) => {
                    return Err(at(format!(
                        "generative truth {other} is not a list of words"
                    )));
                }
                (_, Value::String(s)) => Truth::YesNo(s == "yes"),
                (_, other) => return Err(at(format!("truth {other} is not \"yes\" or \"no\""))),
            };
            annotations.push(Annotation { kind, truth });
        }
        let mut vocabulary = std::collections::HashSet::new();
        for (word, associated) in &association {
            vocabulary.insert(word.clone());
            vocabulary.extend(associated.iter().cloned());
        }
        let safe_path = dir.join("safe_words.txt");
        let safe = std::fs::read_to_string(&safe_path).map_err(|e| EvalError::io(&safe_path, e))?;
        // `line.split('\n')[0]` of each line read in text mode: the line without its newline.
        let safe_words = safe
            .split_inclusive('\n')
            .map(|l| {
                let l = l.strip_suffix('\n').unwrap_or(l);
                l.strip_suffix('\r').unwrap_or(l).to_owned()
            })
            .collect();
        let queries_path = queries_file(dir);
        let queries = if queries_path.is_file() {
            let list = read_queries(dir)?;
            Some(list.into_iter().map(|q| (q.id, q.query)).collect())
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            annotations,
            association,
            vocabulary,
            safe_words,
            queries,
        })
    }
}

/// One line of AMBER's `query/query_all.json`: the id, the image's file name in AMBER's image
/// folder, the question.
#[derive(Debug, Clone, Deserialize)]
pub struct Query {
    pub id: i64,
    pub image: String,
    pub query: String,
}

pub fn queries_file(dir: &Path) -> PathBuf {
    dir.join("query").join("query_all.json")
}

/// Every query, in the file's order.
pub fn read_queries(dir: &Path) -> Result<Vec<Query>, EvalError> {
    read_json(&queries_file(dir))
}

/// The queries as a generator takes them (the answer's `id` is AMBER's id), the images in
/// `images` (AMBER's `image/` folder); a query whose image is not there is an error naming it.
pub fn benchmark_questions(
    dir: &Path,
    images: &Path,
) -> Result<Vec<crate::answers::BenchmarkQuestion>, EvalError> {
    let path = queries_file(dir);
    read_queries(dir)?
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let image = images.join(&q.image);
            if !image.is_file() {
                return Err(EvalError::at(
                    &path,
                    None,
                    Some(format!("#{} (id {})", i + 1, q.id)),
                    format!(
                        "field `image` names {}, which is not in {}",
                        q.image,
                        images.display()
                    ),
                ));
            }
            Ok(crate::answers::BenchmarkQuestion {
                id: q.id.to_string(),
                question: q.query,
                image: crate::answers::ImageSource::Path(image),
            })
        })
        .collect()
}

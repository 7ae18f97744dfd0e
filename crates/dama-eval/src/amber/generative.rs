//! AMBER's generative task (`inference.py`, the `generative` branch): the nouns of a
//! description are matched against the image's objects (`truth`), their associated words, and
//! the hallucination targets (`hallu`).
//!
//! Per description: a noun that is none of the truth objects, their associated words, or a
//! near-synonym of those, is a hallucination (CHAIR counts them over all nouns, Hal counts the
//! descriptions with one); a truth object is covered when it, an associated word or a
//! near-synonym is mentioned (Cover); a hallucination target is "recognised" likewise (Cog).

use serde::Serialize;

use super::similarity::Similarity;
use crate::nlp::{NounLemmatizer, PerceptronTagger, WordTokenizer};

/// How the nouns of a description are found.
pub struct NounFinder<'a> {
    pub tokenizer: &'a WordTokenizer,
    pub lemmatizer: &'a NounLemmatizer,
    /// NLTK's tagger; without it every token passes the noun filter (README.md, "Measuring hallucination").
    pub tagger: Option<&'a PerceptronTagger>,
}

impl NounFinder<'_> {
    /// `extract_nouns`: the lemmas of the tokens tagged `NN*` (tokens as written, not
    /// lower-cased).
    pub fn nouns(&self, text: &str) -> Vec<String> {
        let tokens = self.tokenizer.tokenize(text);
        let keep: Vec<bool> = match self.tagger {
            Some(tagger) => tagger
                .tag(&tokens)
                .iter()
                .map(|t| t.starts_with("NN"))
                .collect(),
            None => vec![true; tokens.len()],
        };
        tokens
            .iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(t, _)| self.lemmatizer.lemmatize(t))
            .collect()
    }
}

/// One description's outcome (the reference's per-response lists).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GenerativeOutcome {
    /// The nouns in AMBER's vocabulary, in order.
    pub nouns: Vec<String>,
    /// Per noun: 1 when it is a hallucination (`safe_flag_list`).
    pub hallucinated: Vec<u8>,
    /// The truth objects' coverage (the tail of `safe_list`).
    pub covered: Vec<u8>,
    /// The hallucination targets' recognition (the tail of `ha_list`).
    pub recognised: Vec<u8>,
}

/// The reference's expansion of a word list: the associated words of each (remembering whose),
/// then the words themselves. A mark at position `j` lands on the owner's flag in the tail.
struct Expanded<'a> {
    words: Vec<&'a str>,
    /// `safe_list` / `ha_list`: owner index for associated words, then the tail of flags.
    list: Vec<usize>,
    tail: usize,
}

impl<'a> Expanded<'a> {
    fn new(
        objects: &'a [String],
        association: &'a std::collections::HashMap<String, Vec<String>>,
    ) -> Self {
        let (mut words, mut list) = (Vec::new(), Vec::new());
        for (idx, object) in objects.iter().enumerate() {
            let associated = &association[object];
            words.extend(associated.iter().map(String::as_str));
            list.extend(std::iter::repeat_n(idx, associated.len()));
        }
        words.extend(objects.iter().map(String::as_str));
        list.extend(std::iter::repeat_n(0, objects.len()));
        Self {
            words,
            list,
            tail: objects.len(),
        }
    }

    fn mark(&mut self, j: usize) {
        let head = self.list.len() - self.tail;
        if j < head {
            let owner = self.list[j];
            self.list[owner + head] = 1;
        } else {
            self.list[j] = 1;
        }
    }

    fn first(&self, noun: &str) -> Option<usize> {
        self.words.iter().position(|w| *w == noun)
    }

    /// `list[-tail:]`: Python's `[-0:]` is the whole list.
    fn flags(&self) -> Vec<u8> {
        let from = if self.tail == 0 {
            0
        } else {
            self.list.len() - self.tail
        };
        self.list[from..].iter().map(|&v| v as u8).collect()
    }
}

pub struct GenerativeScorer<'a> {
    pub association: &'a std::collections::HashMap<String, Vec<String>>,
    pub vocabulary: &'a std::collections::HashSet<String>,
    pub safe_words: &'a [String],
    pub similarity: &'a Similarity,
    pub threshold: f64,
}

impl GenerativeScorer<'_> {
    pub fn score(
        &self,
        nouns: Vec<String>,
        truth: &[String],
        hallu: &[String],
    ) -> GenerativeOutcome {
        let nouns: Vec<String> = nouns
            .into_iter()
            .filter(|n| self.vocabulary.contains(n))
            .collect();
        let mut safe = Expanded::new(truth, self.association);
        let mut ha = Expanded::new(hallu, self.association);
        let mut hallucinated = vec![0u8; nouns.len()];
        for (idx, noun) in nouns.iter().enumerate() {
            if self.safe_words.iter().any(|w| w == noun) {
                continue;
            }
            if let Some(j) = safe.first(noun) {
                safe.mark(j);
                continue;
            }
            if let Some(j) = ha.first(noun) {
                ha.mark(j);
            }
            let similar = |words: &[&str]| {
                words
                    .iter()
                    .position(|w| self.similarity.similar(noun, w, self.threshold))
            };
            if let Some(j) = similar(&ha.words) {
                ha.mark(j);
            }
            if let Some(j) = similar(&safe.words) {
                safe.mark(j);
                continue;
            }
            hallucinated[idx] = 1;
        }
        GenerativeOutcome {
            covered: safe.flags(),
            recognised: ha.flags(),
            nouns,
            hallucinated,
        }
    }
}

//! The reference's `caption_to_words`: the COCO objects a text mentions, found offline — NLTK
//! word tokens of the lower-cased text, their WordNet noun lemmas, two-word phrases merged,
//! then every word that is in the synonym list.

use crate::nlp::{NounLemmatizer, WordTokenizer};

use super::Synonyms;

/// One mention of a COCO object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// The word as the text has it (lemmatised, two-word phrases merged).
    pub word: String,
    /// Its COCO class.
    pub class: String,
    /// The reference's `idxs` entry (see [`Mentions::indices`]).
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mentions {
    pub mentions: Vec<Mention>,
    /// All lemmas after merging (the reference's `double_words`, reported as `words`).
    pub words: Vec<String>,
}

/// The offline object finder: NLTK's tokenizer and WordNet's noun lemmas.
pub struct WordFinder {
    pub tokenizer: WordTokenizer,
    pub lemmatizer: NounLemmatizer,
    pub synonyms: Synonyms,
}

impl WordFinder {
    /// The noun lemmas of the lower-cased text's NLTK tokens.
    pub fn lemmas(&self, text: &str) -> Vec<String> {
        self.tokenizer
            .tokenize(&text.to_lowercase())
            .iter()
            .map(|w| self.lemmatizer.lemmatize(w))
            .collect()
    }

    pub fn find(&self, text: &str) -> Mentions {
        let (words, starts) = merge_double_words(&self.synonyms, &self.lemmas(text), true);
        mentions_of(&self.synonyms, words, starts)
    }
}

/// Merges two-word phrases left to right (`i += 2` past a merged pair). Returns the merged
/// words and, for each, the index of its first lemma. With `keep_single` false, only the
/// merged phrases are kept (`get_double_words_only`, the LLM path).
pub fn merge_double_words(
    synonyms: &Synonyms,
    lemmas: &[String],
    keep_single: bool,
) -> (Vec<String>, Vec<usize>) {
    let (mut words, mut starts) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lemmas.len() {
        starts.push(i);
        let phrase = lemmas[i..(i + 2).min(lemmas.len())].join(" ");
        if let Some(word) = synonyms.double_word(&phrase) {
            words.push(word.to_owned());
            i += 2;
        } else {
            if keep_single {
                words.push(lemmas[i].clone());
            }
            i += 1;
        }
    }
    (words, starts)
}

/// The mentions among `words` (`caption_objects_to_coco_objects` and the end of
/// `caption_to_words`): "seat" is dropped when "toilet" is there, then every word in the
/// synonym list is a mention of its class.
///
/// `starts[k]` is where merged word `k` began. The reference pairs the kept words with
/// `starts` by their position *after* dropping "seat", so past a dropped "seat" an index points
/// at the word before; this only shows in the `hallucination_idxs` of the details, and is
/// reproduced so that they compare equal.
pub fn mentions_of(synonyms: &Synonyms, words: Vec<String>, starts: Vec<usize>) -> Mentions {
    let has = |w: &str| words.iter().any(|x| x == w);
    let filtered: Vec<&String> = if has("toilet") && has("seat") {
        words.iter().filter(|w| *w != "seat").collect()
    } else {
        words.iter().collect()
    };
    let mentions = filtered
        .iter()
        .enumerate()
        .filter_map(|(k, word)| {
            let class = synonyms.class_of(word)?;
            Some(Mention {
                word: (*word).clone(),
                class: class.to_owned(),
                index: starts[k],
            })
        })
        .collect();
    Mentions { mentions, words }
}

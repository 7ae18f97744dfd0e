//! The NLTK pieces the benchmarks' reference code calls, reproduced so that the metrics come out
//! identical: `nltk.word_tokenize` (Punkt sentences, then the improved Treebank tokenizer),
//! `WordNetLemmatizer().lemmatize(w)` (noun morphy) and `nltk.pos_tag` (the averaged
//! perceptron, given its weights). The behaviour is NLTK 3.10.4's, the release `pip install
//! nltk` gives; the benchmarks' authors ran older releases, whose differences were not checked.
//!
//! Python's `re` and Rust's regexes agree on the patterns used here except in their Unicode
//! classes: Python's `\w` is `str.isalnum() or "_"`, Rust's adds combining marks and connector
//! punctuation; Python's `\s` adds U+001C–U+001F. On text without combining marks, superscript
//! digits or those control characters the two are the same.

pub mod punkt;
pub mod tagger;
pub mod treebank;
pub mod wordnet;

pub use punkt::PunktTokenizer;
pub use tagger::PerceptronTagger;
pub use treebank::treebank_tokenize;
pub use wordnet::NounLemmatizer;

/// `str.isspace()` of one character.
pub fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.split()`: runs of whitespace separate, none are kept.
pub fn py_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(py_is_space).filter(|s| !s.is_empty())
}

/// `str.strip()` (no argument).
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(py_is_space)
}

/// `len(s)`: Python counts code points.
pub fn py_len(text: &str) -> usize {
    text.chars().count()
}

/// `nltk.word_tokenize(text)`: Punkt's English sentences, each split by the Treebank tokenizer.
pub struct WordTokenizer {
    punkt: PunktTokenizer,
}

impl Default for WordTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl WordTokenizer {
    pub fn new() -> Self {
        Self {
            punkt: PunktTokenizer::english(),
        }
    }

    pub fn tokenize(&self, text: &str) -> Vec<String> {
        self.punkt
            .sentences(text)
            .into_iter()
            .flat_map(treebank_tokenize)
            .collect()
    }
}

/// A regex compiled once; the patterns are constants, so a failure is a bug here.
pub(crate) fn regex(pattern: &str) -> fancy_regex::Regex {
    fancy_regex::Regex::new(pattern).unwrap_or_else(|e| panic!("pattern {pattern:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace() {
        assert_eq!(
            py_split(" a\u{1f}b\u{a0}c \n").collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(py_strip("\u{1c} x \u{2003}"), "x");
        assert_eq!(py_len("naïve"), 5);
    }
}

//! RLAIF-V's `synonyms_refine.txt` (one COCO class a line: the class, then its synonyms,
//! separated by ", ") and the multi-word rules its `CHAIR.__init__` builds on top.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::EvalError;
use crate::nlp::py_strip;

/// Two-word phrases that are no COCO object, kept together so that their words do not count
/// ("home plate" is not a plate, "train track" is not a train).
const EXTRA_DOUBLE_WORDS: [&str; 2] = ["home plate", "train track"];
/// "baby X" and "adult X" are an X.
const ANIMAL_WORDS: [&str; 12] = [
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "animal", "cub",
];
/// "passenger X" is an X.
const VEHICLE_WORDS: [&str; 2] = ["jet", "train"];

#[derive(Debug, Clone)]
pub struct Synonyms {
    /// Every word of the file → its class (the first word of its line; a word on two lines
    /// belongs to the later one, as the reference's dict assignment leaves it).
    class_of: HashMap<String, String>,
    /// Two-word phrase → the word it stands for (`double_word_dict`).
    double_words: HashMap<String, String>,
}

impl Synonyms {
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let synonyms = Self::parse(&text);
        if synonyms.class_of.len() <= 1 {
            return Err(EvalError::file(
                path,
                "no synonyms: expected lines like \"person, girl, boy, man\"",
            ));
        }
        Ok(synonyms)
    }

    /// As the reference reads the file: each line stripped and split on ", ", each word
    /// stripped (an empty line is the one-word class "").
    pub fn parse(text: &str) -> Self {
        let mut class_of = HashMap::new();
        for line in text.split_inclusive('\n') {
            let words: Vec<&str> = py_strip(line).split(", ").map(py_strip).collect();
            for word in &words {
                class_of.insert(word.to_string(), words[0].to_string());
            }
        }
        let mut double_words: HashMap<String, String> = class_of
            .keys()
            .filter(|w| py_strip(w).split(' ').count() >= 2)
            .map(|w| (w.clone(), w.clone()))
            .collect();
        for w in EXTRA_DOUBLE_WORDS {
            double_words.insert(w.into(), w.into());
        }
        for animal in ANIMAL_WORDS {
            double_words.insert(format!("baby {animal}"), animal.into());
            double_words.insert(format!("adult {animal}"), animal.into());
        }
        for vehicle in VEHICLE_WORDS {
            double_words.insert(format!("passenger {vehicle}"), vehicle.into());
        }
        double_words.insert("bow tie".into(), "tie".into());
        double_words.insert("toilet seat".into(), "toilet".into());
        // WordNet lemmatises "glass" to "glas"; the phrase is mended here.
        double_words.insert("wine glas".into(), "wine glass".into());
        Self {
            class_of,
            double_words,
        }
    }

    /// The COCO class of a word, if it is one of the file's words (`mscoco_objects`).
    pub fn class_of(&self, word: &str) -> Option<&str> {
        self.class_of.get(word).map(String::as_str)
    }

    pub fn double_word(&self, phrase: &str) -> Option<&str> {
        self.double_words.get(phrase).map(String::as_str)
    }

    /// The classes (first words of the lines).
    pub fn classes(&self) -> HashSet<&str> {
        self.class_of.values().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_synonyms_and_double_words() {
        let s = Synonyms::parse("person, girl, man\ndining table, table\nchair, seat, man\n");
        assert_eq!(s.class_of("girl"), Some("person"));
        // The later line wins for a word listed twice.
        assert_eq!(s.class_of("man"), Some("chair"));
        assert_eq!(s.class_of("table"), Some("dining table"));
        assert_eq!(s.double_word("dining table"), Some("dining table"));
        assert_eq!(s.double_word("baby zebra"), Some("zebra"));
        assert_eq!(s.double_word("passenger jet"), Some("jet"));
        assert_eq!(s.double_word("bow tie"), Some("tie"));
        assert_eq!(s.double_word("home plate"), Some("home plate"));
        assert_eq!(s.class_of("home plate"), None);
        assert_eq!(s.double_word("table"), None);
    }
}

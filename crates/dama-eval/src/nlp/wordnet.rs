//! `WordNetLemmatizer().lemmatize(word)` (pos `n`, NLTK 3.10.4): WordNet's morphy for nouns.
//! The candidates are the word itself and either its exception-list bases (`noun.exc`) or, when
//! it has none, the word with each detachment rule applied once; those that are noun lemmas
//! (`index.noun`) survive and the shortest wins (the first of equal length); with none, the
//! word is returned unchanged.
//!
//! The data is read at run time from a WordNet 3.0 `dict` folder: Debian's `wordnet-base`
//! puts it in `/usr/share/wordnet` ([`DEFAULT_WORDNET_DIR`]). Only the lemma column of
//! `index.noun` and the whole of `noun.exc` are kept (about 120 000 short strings).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::EvalError;

/// Where Debian's `wordnet-base` installs WordNet 3.0.
pub const DEFAULT_WORDNET_DIR: &str = "/usr/share/wordnet";

/// Morphy's noun detachment rules (`MORPHOLOGICAL_SUBSTITUTIONS[NOUN]`), in order.
const NOUN_RULES: [(&str, &str); 9] = [
    ("s", ""),
    ("ses", "s"),
    ("ves", "f"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
];

pub struct NounLemmatizer {
    lemmas: HashSet<String>,
    exceptions: HashMap<String, Vec<String>>,
}

impl NounLemmatizer {
    /// Reads `index.noun` and `noun.exc` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        let mut lemmas = HashSet::new();
        read_lines(&dir.join("index.noun"), |line| {
            // Lines starting with a space are the licence header.
            if !line.starts_with(' ')
                && let Some(lemma) = line.split_whitespace().next()
            {
                lemmas.insert(lemma.to_owned());
            }
        })?;
        let mut exceptions = HashMap::new();
        read_lines(&dir.join("noun.exc"), |line| {
            let mut terms = line.split_whitespace();
            if let Some(form) = terms.next() {
                exceptions.insert(form.to_owned(), terms.map(str::to_owned).collect());
            }
        })?;
        if lemmas.is_empty() {
            return Err(EvalError::file(
                dir.join("index.noun"),
                "no lemmas: is this a WordNet dict folder?",
            ));
        }
        Ok(Self { lemmas, exceptions })
    }

    /// From `dir`, else [`DEFAULT_WORDNET_DIR`]; a missing folder says how to get it.
    pub fn load_or_default(dir: Option<&Path>) -> Result<Self, EvalError> {
        let dir = dir.map_or_else(|| PathBuf::from(DEFAULT_WORDNET_DIR), Path::to_path_buf);
        if !dir.join("index.noun").is_file() {
            return Err(EvalError::file(
                dir.join("index.noun"),
                "WordNet 3.0 not found: install Debian's `wordnet-base` \
                 (apt-get install wordnet-base) or pass --wordnet DIR (a WordNet dict folder)",
            ));
        }
        Self::load(&dir)
    }

    /// The noun lemma of `word`, as `WordNetLemmatizer().lemmatize(word)`.
    pub fn lemmatize(&self, word: &str) -> String {
        let mut candidates: Vec<String> = vec![word.to_owned()];
        match self.exceptions.get(word) {
            Some(bases) => candidates.extend(bases.iter().cloned()),
            None => candidates.extend(NOUN_RULES.iter().filter_map(|(old, new)| {
                word.strip_suffix(old).map(|stem| format!("{stem}{new}"))
            })),
        }
        let mut best: Option<&String> = None;
        let mut seen = HashSet::new();
        for form in &candidates {
            if self.lemmas.contains(form) && seen.insert(form) {
                let shorter = best.is_none_or(|b| form.chars().count() < b.chars().count());
                if shorter {
                    best = Some(form);
                }
            }
        }
        best.cloned().unwrap_or_else(|| word.to_owned())
    }
}

fn read_lines(path: &Path, mut each: impl FnMut(&str)) -> Result<(), EvalError> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    for line in std::io::BufReader::new(file).lines() {
        each(&line.map_err(|e| EvalError::io(path, e))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dict folder in WordNet's format, written by the test.
    fn tiny() -> (tempfile::TempDir, NounLemmatizer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.noun"),
            "  1 This software and database is being provided\n\
             dog n 7 4 @ ~ #m %p 7 1 02084071\nglass n 1 0 1 0 0\nglasses n 1 0 1 0 0\n\
             u n 1 0 1 0 0\nus n 1 0 1 0 0\nmouse n 1 0 1 0 0\nbus n 1 0 1 0 0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("noun.exc"), "mice mouse\nbusses bus\n").unwrap();
        let lemmatizer = NounLemmatizer::load(dir.path()).unwrap();
        (dir, lemmatizer)
    }

    #[test]
    fn morphy_for_nouns() {
        let (_dir, l) = tiny();
        assert_eq!(l.lemmatize("dogs"), "dog");
        // The word itself is a candidate, and the shortest lemma wins.
        assert_eq!(l.lemmatize("glasses"), "glass");
        assert_eq!(l.lemmatize("us"), "u");
        // Exceptions replace the rules.
        assert_eq!(l.lemmatize("mice"), "mouse");
        assert_eq!(l.lemmatize("busses"), "bus");
        // Unknown words and upper case stay as they are.
        assert_eq!(l.lemmatize("Dogs"), "Dogs");
        assert_eq!(l.lemmatize("zzz"), "zzz");
    }

    #[test]
    fn a_missing_folder_says_what_to_install() {
        let err = NounLemmatizer::load_or_default(Some(Path::new("/nonexistent/wn")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("wordnet-base") && err.contains("/nonexistent/wn"),
            "{err}"
        );
    }
}

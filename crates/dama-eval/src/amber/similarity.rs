//! AMBER's near-synonym test, `nlp(w1).similarity(nlp(w2)) > 0.8` with spaCy's
//! `en_core_web_lg` vectors. Every word it compares is in AMBER's vocabulary (the words of
//! `relation.json`), so a table of that vocabulary's pairs replaces spaCy exactly;
//! `scripts/amber_similarity.py` writes it for users who have spaCy. Without a table, only
//! identical words are similar (spaCy's own answer for identical words is 1.0).
//!
//! The table: a header line `# amber-similarity floor=F`, then `word1<TAB>word2<TAB>sim`, one
//! unordered pair a line, every pair whose similarity is at least `F`; a pair not listed is
//! below `F`, so thresholds under `F` are refused.

use std::collections::HashMap;
use std::path::Path;

use crate::EvalError;

pub enum Similarity {
    /// Identical words only.
    Exact,
    Table {
        pairs: HashMap<(String, String), f64>,
        floor: f64,
    },
}

impl Similarity {
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let mut lines = text.lines().enumerate();
        let floor = lines
            .next()
            .and_then(|(_, header)| header.strip_prefix("# amber-similarity"))
            .and_then(|rest| {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("floor="))
                    .and_then(|f| f.parse::<f64>().ok())
            })
            .ok_or_else(|| {
                EvalError::at(
                    path,
                    Some(1),
                    None,
                    "expected the header `# amber-similarity floor=F`",
                )
            })?;
        let mut pairs = HashMap::new();
        for (i, line) in lines {
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let parsed = match fields[..] {
                [a, b, s] => s.parse::<f64>().ok().map(|s| (a, b, s)),
                _ => None,
            };
            let (a, b, s) = parsed.ok_or_else(|| {
                EvalError::at(
                    path,
                    Some(i + 1),
                    None,
                    "expected `word1<TAB>word2<TAB>similarity`",
                )
            })?;
            pairs.insert(key(a, b), s);
        }
        Ok(Self::Table { pairs, floor })
    }

    /// Refuses a threshold the table cannot decide.
    pub fn check_threshold(&self, threshold: f64) -> Result<(), EvalError> {
        match self {
            Self::Table { floor, .. } if threshold < *floor => Err(EvalError::Config(format!(
                "similarity threshold {threshold} is below the table's floor {floor}"
            ))),
            _ => Ok(()),
        }
    }

    /// `check_synonyms_word(a, b, threshold)`.
    pub fn similar(&self, a: &str, b: &str, threshold: f64) -> bool {
        let sim = if a == b {
            1.0
        } else {
            match self {
                Self::Exact => 0.0,
                Self::Table { pairs, .. } => {
                    pairs.get(&key(a, b)).copied().unwrap_or(f64::NEG_INFINITY)
                }
            }
        };
        sim > threshold
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Table { .. } => "table",
        }
    }
}

fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.tsv");
        std::fs::write(
            &path,
            "# amber-similarity floor=0.5\ncar\tvehicle\t0.85\nboat\tship\t0.7\n",
        )
        .unwrap();
        let table = Similarity::load(&path).unwrap();
        assert!(table.similar("vehicle", "car", 0.8));
        assert!(!table.similar("boat", "ship", 0.8));
        assert!(table.similar("boat", "ship", 0.6));
        assert!(!table.similar("boat", "car", 0.5));
        assert!(table.similar("boat", "boat", 0.99));
        assert!(table.check_threshold(0.4).is_err());
        assert!(!Similarity::Exact.similar("car", "vehicle", 0.0));
        std::fs::write(&path, "car\tvehicle\t0.85\n").unwrap();
        assert!(
            Similarity::load(&path)
                .err()
                .unwrap()
                .to_string()
                .contains("line 1")
        );
    }
}

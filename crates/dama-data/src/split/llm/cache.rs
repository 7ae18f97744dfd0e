//! A disk cache of the LLM's raw answers, one JSON file per request, keyed by the SHA-256 of
//! (base URL, model, prompt). The raw answer is stored rather than the parsed facts, so that a
//! better parser applies to old answers; each file repeats its key material and a mismatch is a
//! miss, so even a hash collision cannot return another prompt's answer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::SplitError;

#[derive(Serialize, Deserialize)]
struct Entry {
    base_url: String,
    model: String,
    prompt: String,
    answer: String,
}

pub struct AnswerCache {
    dir: PathBuf,
}

impl AnswerCache {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, SplitError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| cache_err(&dir, e))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, base_url: &str, model: &str, prompt: &str) -> PathBuf {
        let mut hash = Sha256::new();
        for part in [base_url, model, prompt] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.json"))
    }

    /// The cached answer; an unreadable or foreign entry is a miss (it will be overwritten).
    pub fn get(&self, base_url: &str, model: &str, prompt: &str) -> Option<String> {
        let bytes = std::fs::read(self.path(base_url, model, prompt)).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        (entry.base_url == base_url && entry.model == model && entry.prompt == prompt)
            .then_some(entry.answer)
    }

    /// Stores an answer atomically (a temporary file renamed into place), so that concurrent
    /// runs and crashes never leave half an entry.
    pub fn put(
        &self,
        base_url: &str,
        model: &str,
        prompt: &str,
        answer: &str,
    ) -> Result<(), SplitError> {
        let path = self.path(base_url, model, prompt);
        let entry = Entry {
            base_url: base_url.into(),
            model: model.into(),
            prompt: prompt.into(),
            answer: answer.into(),
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let json = serde_json::to_vec(&entry).expect("an entry always serialises");
        std::fs::write(&tmp, json).map_err(|e| cache_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| cache_err(&path, e))
    }
}

fn cache_err(path: &Path, e: std::io::Error) -> SplitError {
    SplitError::Cache {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_url_model_and_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AnswerCache::new(dir.path().join("c")).unwrap();
        assert_eq!(cache.get("u", "m", "p"), None);
        cache.put("u", "m", "p", "### Facts:\n- A.").unwrap();
        assert_eq!(
            cache.get("u", "m", "p").as_deref(),
            Some("### Facts:\n- A.")
        );
        assert_eq!(cache.get("u", "m2", "p"), None);
        assert_eq!(cache.get("u2", "m", "p"), None);
        // The key parts are length-prefixed: moving a boundary changes the key.
        assert_ne!(cache.path("ab", "c", "p"), cache.path("a", "bc", "p"));
        // A foreign entry under the right file name is a miss.
        std::fs::write(
            cache.path("u", "m", "q"),
            br#"{"base_url":"u","model":"m","prompt":"other","answer":"x"}"#,
        )
        .unwrap();
        assert_eq!(cache.get("u", "m", "q"), None);
    }
}

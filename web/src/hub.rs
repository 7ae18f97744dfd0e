//! Where the four files of a CLIP model come from: the Hugging Face hub, the bundled demo model
//! served next to the app, or files a person picked (object URLs). The worker fetches them
//! itself, so that hundreds of megabytes of weights never cross the message bridge.

use serde::{Deserialize, Serialize};

/// The model a person gets when they press "load from the hub" without typing another id.
pub const DEFAULT_HUB_MODEL: &str = "openai/clip-vit-base-patch32";

/// Folder (relative to the app) of the bundled CLIP: the tiny one `dama-native demo` trains on
/// its world of shapes (`web/demo/clip`, copied by trunk), so that it works offline and its
/// scores of the bundled demo set mean what a real CLIP's would.
pub const DEMO_MODEL_DIR: &str = "clip";

/// The files of a Hugging Face CLIP folder that the scorer reads, in the order of [`ModelUrls`].
pub const MODEL_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "preprocessor_config.json",
];

/// Absolute URLs of a model's files, and the name the annotated header records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUrls {
    pub name: String,
    pub config: String,
    pub weights: String,
    pub tokenizer: String,
    pub preprocessor: String,
    /// Keep the responses in the browser's Cache API (hub downloads: a reload must not fetch
    /// 600 MB again). Object URLs of picked files and the bundled model are not cached.
    pub cache: bool,
}

impl ModelUrls {
    /// The files of `dir` (a URL ending in a folder, with or without `/`).
    pub fn in_folder(name: impl Into<String>, dir: &str, cache: bool) -> Self {
        let dir = dir.trim_end_matches('/');
        let [config, weights, tokenizer, preprocessor] = MODEL_FILES.map(|f| format!("{dir}/{f}"));
        Self {
            name: name.into(),
            config,
            weights,
            tokenizer,
            preprocessor,
            cache,
        }
    }

    /// A hub repository at a revision (branch, tag or commit), e.g.
    /// `https://huggingface.co/openai/clip-vit-base-patch32/resolve/main/config.json`.
    pub fn hub(repo: &str, revision: &str) -> Result<Self, String> {
        let repo = repo.trim().trim_matches('/');
        let revision = revision.trim();
        let valid_part = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| valid_part(p)) {
            return Err(format!(
                "`{repo}` is not a Hugging Face model id of the form `owner/name`"
            ));
        }
        if !valid_part(revision) {
            return Err(format!(
                "`{revision}` is not a revision (branch, tag or commit)"
            ));
        }
        Ok(Self::in_folder(
            repo,
            &format!("https://huggingface.co/{repo}/resolve/{revision}"),
            true,
        ))
    }

    pub fn all(&self) -> [&str; 4] {
        [
            &self.config,
            &self.weights,
            &self.tokenizer,
            &self.preprocessor,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls() {
        let m = ModelUrls::hub(" openai/clip-vit-base-patch32 ", "main").unwrap();
        assert_eq!(m.name, "openai/clip-vit-base-patch32");
        assert_eq!(
            m.weights,
            "https://huggingface.co/openai/clip-vit-base-patch32/resolve/main/model.safetensors"
        );
        assert!(m.cache);
        assert_eq!(
            m.all()[3].rsplit('/').next(),
            Some("preprocessor_config.json")
        );
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in ["clip", "a/b/c", "../x", "a/", "o/n?x=1", "o/n#f"] {
            assert!(ModelUrls::hub(bad, "main").is_err(), "{bad}");
        }
        assert!(ModelUrls::hub("o/n", "../main").is_err());
    }

    #[test]
    fn folders_join_without_double_slashes() {
        let m = ModelUrls::in_folder("demo", "http://127.0.0.1:8080/tiny-clip/", false);
        assert_eq!(m.config, "http://127.0.0.1:8080/tiny-clip/config.json");
        assert!(!m.cache);
    }
}

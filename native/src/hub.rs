//! Where a model's files come from: a local folder, the Hugging Face cache, or the Hub.
//!
//! `spec` is a folder, or a repo id `org/name` with an optional `@revision`. A repo id is looked
//! up in the HF cache first (the layout `huggingface_hub` and transformers write, via the
//! `hf-hub` crate), and downloaded into it only when that is allowed: never with `--offline` or
//! `HF_HUB_OFFLINE=1`, and never in tests.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hf_hub::{Cache, Repo, RepoType};

/// The files of a model in the Hugging Face layout.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// Must exist (besides the weights).
    pub required: &'a [&'a str],
    /// Fetched when present in the repo.
    pub optional: &'a [&'a str],
}

/// What LLaVA and CLIP folders hold: config, tokenizer, image processor, safetensors weights.
pub const MODEL_FILES: Wanted<'static> = Wanted {
    required: &["config.json", "tokenizer.json"],
    optional: &[
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ],
};

/// How to resolve a model.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The hub cache (`…/huggingface/hub`); default: what `huggingface_hub` would use.
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network.
    pub offline: bool,
}

impl HubOptions {
    /// Offline when asked, or when `HF_HUB_OFFLINE` is set to a true value.
    pub fn from_env(cache_dir: Option<PathBuf>, offline: bool) -> Self {
        let env_offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"));
        Self {
            cache_dir,
            offline: offline || env_offline,
        }
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None => Cache::from_env(),
        }
    }
}

fn parse_repo(spec: &str) -> Option<Repo> {
    let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let mut parts = id.split('/');
    let ok = matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty());
    ok.then(|| Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string()))
}

/// The safetensors files a folder-like lookup needs: the shards of an index, or one file.
fn weight_files(index_path: Option<PathBuf>) -> Result<Vec<String>> {
    match index_path {
        Some(index) => {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("reading {}", index.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", index.display()))?;
            let map = v["weight_map"]
                .as_object()
                .with_context(|| format!("{}: no `weight_map`", index.display()))?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            shards.sort();
            shards.dedup();
            Ok(shards)
        }
        None => Ok(vec!["model.safetensors".into()]),
    }
}

/// The folder holding `spec`'s files (see the module doc).
pub fn resolve_model(spec: &str, wanted: Wanted<'_>, opts: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let Some(repo) = parse_repo(spec) else {
        bail!(
            "model `{spec}` is neither a folder nor a Hugging Face repo id `org/name[@revision]`"
        );
    };
    let cache = opts.cache();
    if let Some(dir) = from_cache(&cache, &repo, wanted)? {
        return Ok(dir);
    }
    if opts.offline {
        bail!(
            "model `{spec}` is not (completely) in the Hugging Face cache {} and downloads are off (--offline or HF_HUB_OFFLINE): download it there first (`huggingface-cli download {}`) or pass a folder",
            cache.path().display(),
            repo.url()
                .rsplit('/')
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("/")
        );
    }
    download(&cache, repo, wanted)
        .with_context(|| format!("downloading `{spec}` from the Hugging Face Hub"))
}

/// The snapshot folder when every wanted file (and all weight shards) are cached.
fn from_cache(cache: &Cache, repo: &Repo, wanted: Wanted<'_>) -> Result<Option<PathBuf>> {
    let c = cache.repo(repo.clone());
    let mut dir = None;
    for f in wanted.required {
        match c.get(f) {
            Some(p) => dir = p.parent().map(Path::to_path_buf),
            None => return Ok(None),
        }
    }
    for w in weight_files(c.get("model.safetensors.index.json"))? {
        if c.get(&w).is_none() {
            return Ok(None);
        }
    }
    Ok(dir)
}

fn download(cache: &Cache, repo: Repo, wanted: Wanted<'_>) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()?;
    let r = api.repo(repo);
    let mut dir = None;
    for f in wanted.required {
        dir = r
            .get(f)
            .with_context(|| format!("fetching {f}"))?
            .parent()
            .map(Path::to_path_buf);
    }
    for f in wanted.optional {
        let _ = r.get(f); // absent in many repos; that is fine
    }
    let index = r.get("model.safetensors.index.json").ok();
    for w in weight_files(index)? {
        r.get(&w).with_context(|| format!("fetching {w}"))?;
    }
    dir.context("no file was fetched")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache in the layout huggingface_hub writes (blobs linked from snapshots are plain
    /// files here, which the layout allows).
    fn fake_cache(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--org--tiny");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        let snap = repo.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        for f in files {
            let content = if *f == "model.safetensors.index.json" {
                r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
            } else {
                "{}"
            };
            std::fs::write(snap.join(f), content).unwrap();
        }
        dir
    }

    fn offline(dir: &Path) -> HubOptions {
        HubOptions {
            cache_dir: Some(dir.to_path_buf()),
            offline: true,
        }
    }

    #[test]
    fn a_folder_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().to_str().unwrap();
        assert_eq!(
            resolve_model(spec, MODEL_FILES, &HubOptions::default()).unwrap(),
            dir.path()
        );
    }

    #[test]
    fn a_repo_id_resolves_to_its_cached_snapshot() {
        let cache = fake_cache(&["config.json", "tokenizer.json", "model.safetensors"]);
        let dir = resolve_model("org/tiny", MODEL_FILES, &offline(cache.path())).unwrap();
        assert!(
            dir.ends_with("models--org--tiny/snapshots/0123abcd"),
            "{}",
            dir.display()
        );
    }

    #[test]
    fn sharded_weights_must_all_be_cached() {
        let files = [
            "config.json",
            "tokenizer.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
        ];
        let cache = fake_cache(&files);
        let err = resolve_model("org/tiny", MODEL_FILES, &offline(cache.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not (completely) in the Hugging Face cache"),
            "{err}"
        );
        assert!(err.contains("huggingface-cli download org/tiny"), "{err}");
        std::fs::write(
            cache
                .path()
                .join("models--org--tiny/snapshots/0123abcd/model-00002-of-00002.safetensors"),
            "",
        )
        .unwrap();
        assert!(resolve_model("org/tiny", MODEL_FILES, &offline(cache.path())).is_ok());
    }

    #[test]
    fn nonsense_specs_are_named() {
        let err = resolve_model("no/such/thing", MODEL_FILES, &HubOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("neither a folder nor a Hugging Face repo id"),
            "{err}"
        );
    }
}

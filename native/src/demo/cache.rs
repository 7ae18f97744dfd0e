//! The demo's cache of trained weights: stages whose weights are the same every run (the CLIP,
//! the SFT model) are kept in `<out>/cache/<stage>-<key>/`, keyed by everything they depend on,
//! and reused by the next demo into the same folder. `--from-scratch` trains them again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dama_core::hash::fnv1a;

/// Bumped when a stage's code changes what it produces, so that old weights are not reused.
const VERSION: &str = "dama-demo-cache-1";

/// The folder of a stage's result: `<root>/<stage>-<hash of what it depends on>`.
pub fn entry(root: &Path, stage: &str, depends_on: &str) -> PathBuf {
    let key = fnv1a(&format!("{VERSION}\n{stage}\n{depends_on}"));
    root.join(format!("{stage}-{key:016x}"))
}

/// Whether `dir` holds a finished result (written by [`finish`]).
pub fn is_done(dir: &Path) -> bool {
    dir.join(".done").is_file()
}

/// A fresh folder to build a result in, beside where it will live.
pub fn scratch(dir: &Path) -> Result<PathBuf> {
    let tmp = PathBuf::from(format!("{}.tmp", dir.display()));
    for d in [&tmp, &dir.to_path_buf()] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
        }
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(tmp)
}

/// Moves a result built in `tmp` (from [`scratch`]) to `dir` and marks it done.
pub fn finish(tmp: &Path, dir: &Path) -> Result<()> {
    std::fs::write(tmp.join(".done"), "")?;
    std::fs::rename(tmp, dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))
}

//! The browser explorer's bundled demo, made by the demo itself so that its hardness is real:
//! the sampled preference pairs (one JSONL with the images inline, unscored: the browser scores
//! them) and the CLIP trained on the world, in `<out>/web/`. `scripts/make-web-demo.sh` copies
//! them into `web/demo/`, which the explorer's "Demo set" and "Demo model" open.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dama_data::RunInfo;
use dama_world::{SampledPair, write_inline};

/// The folder under the demo's `--out`.
pub const WEB_DIR: &str = "web";
/// The dataset's file name in it (the explorer's export is then `demo.curated.jsonl`).
pub const DATASET: &str = "demo.jsonl";
/// The CLIP's folder in it, and the files a browser loads from a model folder.
pub const CLIP_DIR: &str = "clip";
pub const CLIP_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "preprocessor_config.json",
];

/// Writes `<out>/web/demo.jsonl` from `pairs` and copies the CLIP of `clip_dir` into
/// `<out>/web/clip/`; returns the folder.
pub fn write_bundle(out: &Path, pairs: &[SampledPair], clip_dir: &Path) -> Result<PathBuf> {
    let dir = out.join(WEB_DIR);
    write_inline(
        &dir.join(DATASET),
        pairs.iter().map(|p| &p.pair),
        // no sub-sentences, scores or model yet: the browser splits and scores them
        &RunInfo::default(),
    )?;
    let clip = dir.join(CLIP_DIR);
    std::fs::create_dir_all(&clip).with_context(|| format!("creating {}", clip.display()))?;
    for f in CLIP_FILES {
        std::fs::copy(clip_dir.join(f), clip.join(f))
            .with_context(|| format!("copying {} into {}", f, clip.display()))?;
    }
    Ok(dir)
}

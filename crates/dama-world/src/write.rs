//! Writing pairs as a dataset the rest of dama reads: annotated-schema JSONL with the images in
//! a folder beside it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dama_data::annotated::FolderSink;
use dama_data::{AnnotatedJsonlWriter, DataError, ImageOut, PreferencePair, RunInfo};

/// Writes `<dir>/<name>.jsonl` and the images into `<dir>/<name>_images/`; returns the JSONL's
/// path. δ̄ in the header and α_D on each pair are those of these pairs' scores, where they
/// have scores (unscored pairs are a plain dataset `score` can annotate).
pub fn write_dataset<'a>(
    dir: &Path,
    name: &str,
    pairs: impl IntoIterator<Item = &'a PreferencePair>,
    run: &RunInfo,
) -> Result<PathBuf, DataError> {
    let mut records: Vec<PreferencePair> = pairs.into_iter().cloned().collect();
    let header = dama_data::annotate(&mut records, run)?;
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir.display().to_string(), e))?;
    let folder = format!("{name}_images");
    let mut sink = FolderSink::new(dir.join(&folder))?;
    let path = dir.join(format!("{name}.jsonl"));
    let label = path.display().to_string();
    let file = File::create(&path).map_err(|e| DataError::io(&label, e))?;
    let images = ImageOut::Sink {
        folder,
        sink: &mut sink,
    };
    let mut writer = AnnotatedJsonlWriter::new(&label, BufWriter::new(file), header, images)?;
    for record in &records {
        writer.write(record)?;
    }
    writer
        .finish()?
        .flush()
        .map_err(|e| DataError::io(&label, e))?;
    Ok(path)
}

/// Writes `path` as one self-contained annotated JSONL: the images inline (`image_b64`), so
/// that a browser opens it as one file. Header and α_D as [`write_dataset`]'s.
pub fn write_inline<'a>(
    path: &Path,
    pairs: impl IntoIterator<Item = &'a PreferencePair>,
    run: &RunInfo,
) -> Result<(), DataError> {
    let mut records: Vec<PreferencePair> = pairs.into_iter().cloned().collect();
    let header = dama_data::annotate(&mut records, run)?;
    let label = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(&label, e))?;
    }
    let file = File::create(path).map_err(|e| DataError::io(&label, e))?;
    let mut writer =
        AnnotatedJsonlWriter::new(&label, BufWriter::new(file), header, ImageOut::Inline)?;
    for record in &records {
        writer.write(record)?;
    }
    writer
        .finish()?
        .flush()
        .map_err(|e| DataError::io(&label, e))
}

//! Writing pairs as a dataset the rest of dama reads: annotated-schema JSONL with the images in
//! a folder beside it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dama_data::annotated::FolderSink;
use dama_data::{AnnotatedJsonlWriter, DataError, Header, ImageOut, PreferencePair, RunInfo};

/// Writes `<dir>/<name>.jsonl` and the images into `<dir>/<name>_images/`; returns the JSONL's
/// path. δ̄ in the header and α_D on each pair are those of these pairs' scores, where they
/// have scores (unscored pairs are a plain dataset `score` can annotate).
pub fn write_dataset<'a>(
    dir: &Path,
    name: &str,
    pairs: impl IntoIterator<Item = &'a PreferencePair>,
    run: &RunInfo,
) -> Result<PathBuf, DataError> {
    let (records, header) = annotated(pairs, run)?;
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir.display().to_string(), e))?;
    let folder = format!("{name}_images");
    let mut sink = FolderSink::new(dir.join(&folder))?;
    let path = dir.join(format!("{name}.jsonl"));
    let images = ImageOut::Sink {
        folder,
        sink: &mut sink,
    };
    write_annotated(&path, &records, header, images)?;
    Ok(path)
}

/// Writes `path` as one self-contained annotated JSONL: the images inline (`image_b64`), so
/// that a browser opens it as one file. Header and α_D as [`write_dataset`]'s.
pub fn write_inline<'a>(
    path: &Path,
    pairs: impl IntoIterator<Item = &'a PreferencePair>,
    run: &RunInfo,
) -> Result<(), DataError> {
    let (records, header) = annotated(pairs, run)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(path.display().to_string(), e))?;
    }
    write_annotated(path, &records, header, ImageOut::Inline)
}

/// Copies of the pairs with α_D set, and their header.
fn annotated<'a>(
    pairs: impl IntoIterator<Item = &'a PreferencePair>,
    run: &RunInfo,
) -> Result<(Vec<PreferencePair>, Header), DataError> {
    let mut records: Vec<PreferencePair> = pairs.into_iter().cloned().collect();
    let header = dama_data::annotate(&mut records, run)?;
    Ok((records, header))
}

/// `records` under `header` as JSONL at `path`, with their images as `images` says.
fn write_annotated(
    path: &Path,
    records: &[PreferencePair],
    header: Header,
    images: ImageOut<'_>,
) -> Result<(), DataError> {
    let label = path.display().to_string();
    let file = File::create(path).map_err(|e| DataError::io(&label, e))?;
    let mut writer = AnnotatedJsonlWriter::new(&label, BufWriter::new(file), header, images)?;
    for record in records {
        writer.write(record)?;
    }
    writer
        .finish()?
        .flush()
        .map_err(|e| DataError::io(&label, e))
}

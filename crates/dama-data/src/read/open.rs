//! Opening a dataset from disk, whatever its format (native only; the browser reads bytes).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{ReadOptions, Records, json_list, jsonl, parquet_rows};
use crate::error::{DataError, Location};
use crate::image::{ImageFolder, ImageSource};

/// Opens a dataset file, or a folder of parquet shards (read in name order, as one dataset).
///
/// The format is recognised from the content: parquet by its magic bytes (annotated parquet by
/// its metadata), the authors' JSON list by its opening `[`, JSONL otherwise (annotated JSONL by
/// its header line). Image names resolve in `images` when given, else in the annotated header's
/// folder, else in the dataset's own folder.
pub fn open_dataset(
    path: &Path,
    images: Option<&Path>,
    options: ReadOptions,
) -> Result<Records<'static>, DataError> {
    let label = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(&label, e))?;
    let home = if meta.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let folder = |header_images: Option<&str>| -> Box<dyn ImageSource + Send> {
        let root = match (images, header_images) {
            (Some(dir), _) => dir.to_path_buf(),
            (None, Some(rel)) => home.join(rel),
            (None, None) => home.clone(),
        };
        Box::new(ImageFolder::new(root).allowing_absolute(options.absolute_images))
    };
    if meta.is_dir() {
        let shards = parquet_shards(path)?;
        let mut parts: Vec<super::parquet_rows::Rows> = Vec::new();
        for shard in &shards {
            let label = shard.display().to_string();
            let file = File::open(shard).map_err(|e| DataError::io(&label, e))?;
            let (header, rows) = parquet_rows::parquet_rows(&label, file)?;
            if header.is_some() {
                return Err(DataError::Format {
                    at: Location::file(label),
                    what:
                        "is annotated: open an annotated file on its own, not in a folder of shards"
                            .into(),
                });
            }
            parts.push(rows);
        }
        return Ok(Records::new(
            Box::new(parts.into_iter().flatten()),
            folder(None),
            options,
            None,
        ));
    }
    let mut file = File::open(path).map_err(|e| DataError::io(&label, e))?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head).map_err(|e| DataError::io(&label, e))?;
    let file = File::open(path).map_err(|e| DataError::io(&label, e))?;
    if head[..n] == *b"PAR1" {
        let (header, rows) = parquet_rows::parquet_rows(&label, file)?;
        let images = folder(header.as_ref().and_then(|h| h.images.as_deref()));
        return Ok(Records::new(rows, images, options, header));
    }
    let mut reader = BufReader::new(file);
    if starts_with_bracket(&mut reader).map_err(|e| DataError::io(&label, e))? {
        return Ok(json_list::read_authors(
            &label,
            reader,
            folder(None),
            options,
        ));
    }
    jsonl::read_jsonl_with(
        &label,
        reader,
        |h| folder(h.and_then(|h| h.images.as_deref())),
        options,
    )
}

fn parquet_shards(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let label = dir.display().to_string();
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(&label, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(DataError::Format {
            at: Location::file(label),
            what: "is a folder with no .parquet files".into(),
        });
    }
    Ok(shards)
}

/// Whether the first non-blank character (after a byte-order mark) is `[`, without consuming.
fn starts_with_bracket(reader: &mut BufReader<File>) -> std::io::Result<bool> {
    use std::io::BufRead;
    let buf = reader.fill_buf()?;
    let buf = buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(buf);
    Ok(buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'['))
}

//! Reading datasets. Each format has a parser that turns the file into located records; one
//! validator ([`Records`]) then loads and decodes images, rejects empty answers, applies the
//! strict or lenient policy and counts what it skipped, the same way for every format.

pub(crate) mod columns;
mod fields;
pub(crate) mod json_list;
pub(crate) mod jsonl;
pub(crate) mod lines;
pub(crate) mod parquet_rows;
pub(crate) mod rlaifv;

#[cfg(not(target_arch = "wasm32"))]
mod open;

#[cfg(not(target_arch = "wasm32"))]
pub use open::open_dataset;
pub use parquet_rows::BATCH_ROWS as PARQUET_BATCH_ROWS;

use std::collections::HashMap;

use crate::annotated::Header;
use crate::error::{DataError, Location, Problem};
use crate::image::{ImageSource, MAX_IMAGE_SIDE, decode_rgb, image_dimensions};
use crate::record::PreferencePair;
use crate::summary::ReadSummary;

/// What the first bad record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Stop: the bad record's error is the iterator's last item.
    Strict,
    /// Skip it, count it in the summary (keeping its error) and go on.
    #[default]
    Lenient,
}

/// How far the reader goes with each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageCheck {
    /// Load and decode to RGB (`image.decoded`): what the scorer and the trainer need, and the
    /// only way to find undecodable images before they are used.
    #[default]
    Decode,
    /// Load the encoded bytes only (a browser shows them; a writer copies them).
    Load,
    /// Leave images alone: text-only work such as splitting or listing ids.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    pub mode: ReadMode,
    pub images: ImageCheck,
    /// Also hand out pairs that a person marked `drop` (the browser reopening a curation).
    pub include_dropped: bool,
    /// Read absolute image paths where they point (`--allow-absolute-images`); otherwise every
    /// image must be inside the image folder ([`crate::ImageFolder`]).
    pub absolute_images: bool,
}

impl ReadOptions {
    pub fn strict() -> Self {
        Self {
            mode: ReadMode::Strict,
            ..Self::default()
        }
    }

    pub fn with_images(self, images: ImageCheck) -> Self {
        Self { images, ..self }
    }
}

/// A record as a format parser produced it, with where it was found.
pub(crate) type Parsed = Result<(Location, PreferencePair), DataError>;

/// The records of a dataset, validated. An iterator: a lenient read yields only good records and
/// fails only on file-level errors (I/O, a file that is not of its format); a strict read also
/// stops at the first bad record. [`Records::summary`] counts what was read and skipped.
/// `Send`, so that a reader thread can feed workers.
pub struct Records<'a> {
    inner: Box<dyn Iterator<Item = Parsed> + Send + 'a>,
    images: Box<dyn ImageSource + Send + 'a>,
    options: ReadOptions,
    header: Option<Header>,
    summary: ReadSummary,
    /// Where each id was first seen: a second record with the same id is a bad record.
    seen: HashMap<String, Location>,
    /// Where the record last handed out was.
    last: Option<Location>,
    finished: bool,
}

impl<'a> Records<'a> {
    pub(crate) fn new(
        inner: Box<dyn Iterator<Item = Parsed> + Send + 'a>,
        images: Box<dyn ImageSource + Send + 'a>,
        options: ReadOptions,
        header: Option<Header>,
    ) -> Self {
        Self {
            inner,
            images,
            options,
            header,
            summary: ReadSummary::default(),
            seen: HashMap::new(),
            last: None,
            finished: false,
        }
    }

    /// The header of an annotated dataset (δ̄, CLIP model, splitter…); `None` for plain ones.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Where the record the iterator last handed out was found.
    pub fn last_location(&self) -> Option<&Location> {
        self.last.as_ref()
    }

    /// Counts a record the caller found bad after reading it (a trainer's tokenisation, say),
    /// in the same summary and report as the reader's own.
    pub fn skip_record(&mut self, error: DataError) {
        if let Some(reason) = error.skip_reason() {
            self.summary.read = self.summary.read.saturating_sub(1);
            self.summary.skip(reason, error);
        }
    }

    pub fn summary(&self) -> &ReadSummary {
        &self.summary
    }

    pub fn into_summary(self) -> ReadSummary {
        self.summary
    }

    /// Every record and the summary; in strict mode the first bad record is the error.
    pub fn read_all(mut self) -> Result<(Vec<PreferencePair>, ReadSummary), DataError> {
        let pairs = self.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok((pairs, self.summary))
    }

    /// The one decision whether a record is usable, for every format and every command:
    /// ids unique, answers not empty, a scored file's α_D present, and (as far as
    /// [`ReadOptions::images`] goes) an image that loads from inside the image folder, within
    /// [`MAX_IMAGE_SIDE`], and decodes. `Ok(None)`: a pair marked drop, left out by choice.
    fn validate(
        &mut self,
        at: Location,
        mut pair: PreferencePair,
    ) -> Result<Option<PreferencePair>, DataError> {
        let fail = |field, problem| {
            DataError::record(at.clone(), Some(pair.id.clone()), Some(field), problem)
        };
        // Every record holds its id, dropped ones too: an id names one pair of the file.
        if let Some(first) = self.seen.get(&pair.id) {
            let first = first.clone();
            return Err(fail("id", Problem::DuplicateId { first }));
        }
        self.seen.insert(pair.id.clone(), at.clone());
        if !self.options.include_dropped && !pair.is_kept() {
            return Ok(None);
        }
        // An empty question is allowed (the image alone is the prompt); an empty answer is not.
        for (field, text) in [("chosen", &pair.chosen), ("rejected", &pair.rejected)] {
            if text.trim().is_empty() {
                return Err(fail(field, Problem::Empty));
            }
        }
        // A scored file promises α_D for every kept pair; silently training such a pair with
        // α_D = 1 would hide a broken export.
        if self.header.as_ref().is_some_and(|h| h.delta_mean.is_some())
            && pair.is_kept()
            && pair.alpha_d.is_none()
        {
            return Err(fail("alpha_d", Problem::Missing));
        }
        if self.options.images == ImageCheck::Skip {
            return Ok(Some(pair));
        }
        if pair.image.bytes.is_none() {
            let Some(name) = pair.image.name.as_deref() else {
                return Err(fail("image", Problem::NoImage));
            };
            let bytes = self.images.load(name).map_err(|p| fail("image", p))?;
            pair.image.bytes = Some(bytes);
        }
        if self.options.images == ImageCheck::Decode && pair.image.decoded.is_none() {
            let bytes = pair.image.bytes.as_deref().unwrap_or_default();
            let (width, height) =
                image_dimensions(bytes).map_err(|e| fail("image", Problem::Undecodable(e)))?;
            if width.max(height) > MAX_IMAGE_SIDE {
                return Err(fail(
                    "image",
                    Problem::ImageTooLarge {
                        width,
                        height,
                        limit: MAX_IMAGE_SIDE,
                    },
                ));
            }
            let decoded = decode_rgb(bytes).map_err(|e| fail("image", Problem::Undecodable(e)))?;
            pair.image.decoded = Some(decoded);
        }
        Ok(Some(pair))
    }
}

impl Iterator for Records<'_> {
    type Item = Result<PreferencePair, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            let checked = match self.inner.next()? {
                Ok((at, pair)) => {
                    self.last = Some(at.clone());
                    self.validate(at, pair)
                }
                Err(e) => Err(e),
            };
            match checked {
                Ok(Some(pair)) => {
                    self.summary.read += 1;
                    return Some(Ok(pair));
                }
                Ok(None) => self.summary.dropped += 1,
                Err(e) => match (e.skip_reason(), self.options.mode) {
                    (Some(reason), ReadMode::Lenient) => self.summary.skip(reason, e),
                    _ => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                },
            }
        }
        None
    }
}

/// The name of a file without folder and extension, the prefix of derived record ids.
pub(crate) fn stem(file: &str) -> &str {
    let name = file.rsplit(['/', '\\']).next().unwrap_or(file);
    match name.rfind('.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    }
}

/// Reads parquet (RLAIF-V-style, or annotated when its metadata says so) from any parquet
/// source: a `File`, `bytes::Bytes`, or a reader of the caller's (e.g. object storage). Rows
/// are fetched a small batch at a time.
pub fn read_parquet<'a, R: parquet::file::reader::ChunkReader + Send + 'static>(
    name: &str,
    reader: R,
    images: impl ImageSource + Send + 'a,
    options: ReadOptions,
) -> Result<Records<'a>, DataError> {
    let (header, rows) = parquet_rows::parquet_rows(name, reader)?;
    Ok(Records::new(rows, Box::new(images), options, header))
}

/// Reads a dataset held in memory (a file picked in the browser): RLAIF-V or annotated parquet
/// (recognised by its magic bytes), annotated JSONL (recognised by its header line), the authors'
/// JSON list (a file that starts with `[`) or plain JSONL. `name` labels errors and derived ids;
/// `images` resolves image names (use [`crate::NoImages`] when they are all embedded).
pub fn read_bytes<'a>(
    name: &str,
    bytes: impl Into<bytes::Bytes>,
    images: impl ImageSource + Send + 'a,
    options: ReadOptions,
) -> Result<Records<'a>, DataError> {
    let bytes: bytes::Bytes = bytes.into();
    if bytes.starts_with(b"PAR1") {
        return read_parquet(name, bytes, images, options);
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Ok(json_list::read_authors(
            name,
            std::io::Cursor::new(bytes),
            Box::new(images),
            options,
        ));
    }
    jsonl::read_jsonl(name, std::io::Cursor::new(bytes), Box::new(images), options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_and_records_move_between_threads() {
        // A scorer reads in one thread and decodes or scores in others.
        fn is_send<T: Send>() {}
        is_send::<Records<'static>>();
        is_send::<PreferencePair>();
        is_send::<DataError>();
    }

    #[test]
    fn stems() {
        assert_eq!(stem("data/train-00001.parquet"), "train-00001");
        assert_eq!(stem("C:\\x\\a.b.jsonl"), "a.b");
        assert_eq!(stem(".hidden"), ".hidden");
        assert_eq!(stem("plain"), "plain");
    }
}

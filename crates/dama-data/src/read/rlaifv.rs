//! RLAIF-V parquet (openbmb/RLAIF-V-Dataset): columns `ds_name`, `image` {bytes, path},
//! `question`, `chosen`, `rejected`, `origin_dataset`, `origin_split`, `idx`, `image_path`, with
//! the images embedded. The dataset has no id column: a pair's id is `<file stem>:<row>`.

use arrow_array::RecordBatch;

use super::Parsed;
use super::columns::{Binary, Columns, Text, int_at};
use super::parquet_rows::BatchCtx;
use crate::error::{DataError, Problem};
use crate::record::{ImageRef, PreferencePair, Source};

pub(crate) const COLUMNS: &[&str] = &[
    "ds_name",
    "image",
    "question",
    "chosen",
    "rejected",
    "origin_dataset",
    "origin_split",
    "idx",
    "image_path",
];

/// The `image` column: HF datasets' struct {bytes, path}, or plain binary.
pub(crate) struct ImageColumn<'a> {
    bytes: Option<Binary<'a>>,
    path: Option<Text<'a>>,
}

impl<'a> ImageColumn<'a> {
    pub(crate) fn of(cols: &Columns<'a>, name: &str) -> Result<Self, DataError> {
        let is_struct = cols
            .get(name)
            .is_some_and(|a| matches!(a.data_type(), arrow_schema::DataType::Struct(_)));
        if is_struct && let Some((children, _)) = cols.opt_struct(name)? {
            return Ok(Self {
                bytes: children.opt_bytes("bytes")?,
                path: children.opt_text("path")?,
            });
        }
        match cols.opt_bytes(name)? {
            Some(bytes) => Ok(Self {
                bytes: Some(bytes),
                path: None,
            }),
            None => Err(cols.schema(name, "is missing".to_owned())),
        }
    }

    /// Bytes win over the path; a path that is not UTF-8 is ignored (the bytes are what count).
    pub(crate) fn get(&self, i: usize) -> ImageRef {
        let name = self
            .path
            .as_ref()
            .and_then(|p| p.get(i))
            .and_then(Result::ok)
            .map(str::to_owned);
        match self.bytes.as_ref().and_then(|b| b.get(i)) {
            Some(bytes) => ImageRef::embedded(name, bytes.to_vec()),
            None => ImageRef {
                name,
                ..ImageRef::default()
            },
        }
    }
}

/// Row `i` of a text column as an owned string; null and invalid UTF-8 are errors of `field`.
pub(crate) fn text_at(
    ctx: &BatchCtx<'_>,
    id: &str,
    col: &Text<'_>,
    field: &'static str,
    i: usize,
) -> Result<String, DataError> {
    match col.get(i) {
        Some(Ok(s)) => Ok(s.to_owned()),
        Some(Err(e)) => Err(DataError::record(
            ctx.at(i),
            Some(id.to_owned()),
            Some(field),
            Problem::NotUtf8 {
                valid_up_to: e.valid_up_to(),
            },
        )),
        None => Err(DataError::record(
            ctx.at(i),
            Some(id.to_owned()),
            Some(field),
            Problem::Null,
        )),
    }
}

/// Row `i` of an optional text column; null (or absent) is `None`.
pub(crate) fn opt_text_at(
    ctx: &BatchCtx<'_>,
    id: &str,
    col: Option<&Text<'_>>,
    field: &'static str,
    i: usize,
) -> Result<Option<String>, DataError> {
    match col.and_then(|c| c.get(i)) {
        None => Ok(None),
        Some(_) => text_at(ctx, id, col.expect("present"), field, i).map(Some),
    }
}

pub(crate) fn convert(ctx: &BatchCtx<'_>, batch: &RecordBatch) -> Result<Vec<Parsed>, DataError> {
    let cols = Columns::of_batch(batch, ctx.file);
    let (question, chosen, rejected) = (
        cols.text("question")?,
        cols.text("chosen")?,
        cols.text("rejected")?,
    );
    let image = ImageColumn::of(&cols, "image")?;
    let ds_name = cols.opt_text("ds_name")?;
    let origin_dataset = cols.opt_text("origin_dataset")?;
    let origin_split = cols.opt_text("origin_split")?;
    let image_path = cols.opt_text("image_path")?;
    let idx = cols.opt_int("idx")?;
    let row = |i: usize| -> Parsed {
        let id = ctx.derived_id(i);
        let pair = PreferencePair {
            image: image.get(i),
            question: text_at(ctx, &id, &question, "question", i)?,
            chosen: text_at(ctx, &id, &chosen, "chosen", i)?,
            rejected: text_at(ctx, &id, &rejected, "rejected", i)?,
            source: Source {
                ds_name: opt_text_at(ctx, &id, ds_name.as_ref(), "ds_name", i)?,
                origin_dataset: opt_text_at(
                    ctx,
                    &id,
                    origin_dataset.as_ref(),
                    "origin_dataset",
                    i,
                )?,
                origin_split: opt_text_at(ctx, &id, origin_split.as_ref(), "origin_split", i)?,
                idx: idx.and_then(|a| int_at(a, i)),
                image_path: opt_text_at(ctx, &id, image_path.as_ref(), "image_path", i)?,
                file: Some(ctx.file.to_owned()),
                row: Some(ctx.first_row + i as u64),
            },
            id,
            ..PreferencePair::default()
        };
        Ok((ctx.at(i), pair))
    };
    Ok((0..batch.num_rows()).map(row).collect())
}

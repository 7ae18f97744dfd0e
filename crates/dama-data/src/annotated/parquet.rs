//! Annotated parquet: the columns of the JSONL records, images embedded in an RLAIF-V-style
//! `image` {bytes, path} struct, the header in the key-value metadata under `dama_annotated`.
//! Nested fields are arrow structs and lists, so pandas and pyarrow read them as they are.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::types::Float64Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, GenericListArray, Int64Array,
    ListArray, RecordBatch, StringArray, StructArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use dama_core::DeltaEdge;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::jsonl::check_consistent;
use super::{HEADER_KEY, Header};
use crate::error::{DataError, Location, Problem};
use crate::read::Parsed;
use crate::read::columns::{Columns, float_at, int_at};
use crate::read::parquet_rows::BatchCtx;
use crate::read::rlaifv::{ImageColumn, opt_text_at, text_at};
use crate::record::{Annotation, ImageRef, PreferencePair, Scores, Source, Status, SubSentences};

pub(crate) const COLUMNS: &[&str] = &[
    "id",
    "image",
    "question",
    "chosen",
    "rejected",
    "sub_sentences",
    "scores",
    "delta",
    "delta_edge",
    "alpha_d",
    "annotation",
    "source",
    "logps",
];

/// Rows per row group when writing: ~25 MB of images at ~100 KB each.
const ROWS_PER_GROUP: usize = 256;
/// Rows buffered before they are handed to the parquet writer.
const ROWS_PER_BATCH: usize = 64;

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(t, true)))
}

fn struct_fields(fields: &[(&str, DataType)]) -> Fields {
    fields
        .iter()
        .map(|(name, t)| Field::new(*name, t.clone(), true))
        .collect()
}

fn image_fields() -> Fields {
    struct_fields(&[("bytes", DataType::Binary), ("path", DataType::Utf8)])
}

fn pair_fields(item: DataType) -> Fields {
    struct_fields(&[
        ("chosen", list_of(item.clone())),
        ("rejected", list_of(item)),
    ])
}

fn annotation_fields() -> Fields {
    struct_fields(&[
        ("status", DataType::Utf8),
        ("swapped", DataType::Boolean),
        ("tags", list_of(DataType::Utf8)),
        ("note", DataType::Utf8),
        ("edited", DataType::Boolean),
        ("reviewed", DataType::Boolean),
    ])
}

fn source_fields() -> Fields {
    struct_fields(&[
        ("ds_name", DataType::Utf8),
        ("origin_dataset", DataType::Utf8),
        ("origin_split", DataType::Utf8),
        ("idx", DataType::Int64),
        ("image_path", DataType::Utf8),
        ("file", DataType::Utf8),
        ("row", DataType::UInt64),
    ])
}

/// The arrow schema of annotated parquet (documented in README.md).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("image", DataType::Struct(image_fields()), false),
        Field::new("question", DataType::Utf8, false),
        Field::new("chosen", DataType::Utf8, false),
        Field::new("rejected", DataType::Utf8, false),
        Field::new(
            "sub_sentences",
            DataType::Struct(pair_fields(DataType::Utf8)),
            true,
        ),
        Field::new(
            "scores",
            DataType::Struct(pair_fields(DataType::Float64)),
            true,
        ),
        Field::new("delta", DataType::Float64, true),
        Field::new("delta_edge", DataType::Utf8, true),
        Field::new("alpha_d", DataType::Float64, true),
        Field::new("annotation", DataType::Struct(annotation_fields()), false),
        Field::new("source", DataType::Struct(source_fields()), false),
        Field::new("logps", DataType::Utf8, true),
    ]))
}

fn edge_name(edge: DeltaEdge) -> String {
    serde_json::to_value(edge)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Keep => "keep",
        Status::Drop => "drop",
    }
}

fn list_utf8<'a>(items: impl Iterator<Item = Option<&'a Vec<String>>>) -> ListArray {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for item in items {
        if let Some(texts) = item {
            for t in texts {
                builder.values().append_value(t);
            }
        }
        builder.append(item.is_some());
    }
    builder.finish()
}

fn list_f64<'a>(items: impl Iterator<Item = Option<&'a Vec<f64>>>) -> ListArray {
    ListArray::from_iter_primitive::<Float64Type, _, _>(
        items.map(|o| o.map(|v| v.iter().map(|x| Some(*x)))),
    )
}

fn structure(fields: Fields, columns: Vec<ArrayRef>, valid: Option<Vec<bool>>) -> ArrayRef {
    Arc::new(StructArray::new(fields, columns, valid.map(Into::into)))
}

/// The rows of `pairs` as one batch of the annotated schema.
fn to_batch(
    pairs: &[PreferencePair],
    schema: SchemaRef,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let text = |f: &dyn Fn(&PreferencePair) -> Option<&str>| -> ArrayRef {
        Arc::new(pairs.iter().map(f).collect::<StringArray>())
    };
    let image = structure(
        image_fields(),
        vec![
            Arc::new(
                pairs
                    .iter()
                    .map(|p| p.image.bytes.as_deref())
                    .collect::<BinaryArray>(),
            ),
            text(&|p| p.image.name.as_deref()),
        ],
        None,
    );
    let subs = pairs.iter().map(|p| p.sub_sentences.as_ref());
    let sub_sentences = structure(
        pair_fields(DataType::Utf8),
        vec![
            Arc::new(list_utf8(subs.clone().map(|s| s.map(|s| &s.chosen)))),
            Arc::new(list_utf8(subs.clone().map(|s| s.map(|s| &s.rejected)))),
        ],
        Some(subs.map(|s| s.is_some()).collect()),
    );
    let scores = pairs.iter().map(|p| p.scores.as_ref());
    let scores = structure(
        pair_fields(DataType::Float64),
        vec![
            Arc::new(list_f64(scores.clone().map(|s| s.map(|s| &s.chosen)))),
            Arc::new(list_f64(scores.clone().map(|s| s.map(|s| &s.rejected)))),
        ],
        Some(scores.map(|s| s.is_some()).collect()),
    );
    let annotation = structure(
        annotation_fields(),
        vec![
            text(&|p| Some(status_name(p.annotation.status))),
            Arc::new(
                pairs
                    .iter()
                    .map(|p| Some(p.annotation.swapped))
                    .collect::<BooleanArray>(),
            ),
            Arc::new(list_utf8(pairs.iter().map(|p| Some(&p.annotation.tags)))),
            text(&|p| Some(p.annotation.note.as_str())),
            Arc::new(
                pairs
                    .iter()
                    .map(|p| Some(p.annotation.edited))
                    .collect::<BooleanArray>(),
            ),
            Arc::new(
                pairs
                    .iter()
                    .map(|p| Some(p.annotation.reviewed))
                    .collect::<BooleanArray>(),
            ),
        ],
        None,
    );
    let source = structure(
        source_fields(),
        vec![
            text(&|p| p.source.ds_name.as_deref()),
            text(&|p| p.source.origin_dataset.as_deref()),
            text(&|p| p.source.origin_split.as_deref()),
            Arc::new(pairs.iter().map(|p| p.source.idx).collect::<Int64Array>()),
            text(&|p| p.source.image_path.as_deref()),
            text(&|p| p.source.file.as_deref()),
            Arc::new(pairs.iter().map(|p| p.source.row).collect::<UInt64Array>()),
        ],
        None,
    );
    let floats = |f: &dyn Fn(&PreferencePair) -> Option<f64>| -> ArrayRef {
        Arc::new(pairs.iter().map(f).collect::<Float64Array>())
    };
    let edges: StringArray = pairs.iter().map(|p| p.delta_edge.map(edge_name)).collect();
    let logps: StringArray = pairs
        .iter()
        .map(|p| p.logps.as_ref().map(|v| v.to_string()))
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            text(&|p| Some(p.id.as_str())),
            image,
            text(&|p| Some(p.question.as_str())),
            text(&|p| Some(p.chosen.as_str())),
            text(&|p| Some(p.rejected.as_str())),
            sub_sentences,
            scores,
            floats(&|p| p.delta),
            Arc::new(edges),
            floats(&|p| p.alpha_d),
            annotation,
            source,
            Arc::new(logps),
        ],
    )
}

/// Writes annotated parquet, a row group per 256 pairs, never more than a batch
/// of pairs in memory. Images are embedded: every pair must have its bytes loaded.
pub struct AnnotatedParquetWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    /// [`schema`] with the header in its metadata.
    schema: SchemaRef,
    pending: Vec<PreferencePair>,
    file: String,
    promised: usize,
    written: usize,
}

impl<W: Write + Send> AnnotatedParquetWriter<W> {
    /// `file` names the output in errors. The header's `images` is cleared: images are embedded.
    pub fn new(file: &str, out: W, mut header: Header) -> Result<Self, DataError> {
        header.images = None;
        // The header goes into the file's key-value metadata (what this crate reads) and into
        // the arrow schema's metadata (what pyarrow shows as `table.schema.metadata`).
        let json = header.to_json();
        let metadata = std::collections::HashMap::from([(HEADER_KEY.to_owned(), json.clone())]);
        let schema = Arc::new(schema().as_ref().clone().with_metadata(metadata));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
            .set_key_value_metadata(Some(vec![KeyValue::new(HEADER_KEY.to_owned(), json)]))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|error| {
            DataError::Parquet {
                file: file.to_owned(),
                error,
            }
        })?;
        Ok(Self {
            writer,
            schema,
            pending: Vec::new(),
            file: file.to_owned(),
            promised: header.count,
            written: 0,
        })
    }

    pub fn write(&mut self, pair: &PreferencePair) -> Result<(), DataError> {
        if pair.image.bytes.is_none() {
            return Err(DataError::Format {
                at: Location::file(&self.file),
                what: format!(
                    "pair `{}` has no image bytes loaded; parquet embeds images",
                    pair.id
                ),
            });
        }
        // The decoded pixels are not written; leave them out of the buffer.
        let image = ImageRef {
            name: pair.image.name.clone(),
            bytes: pair.image.bytes.clone(),
            decoded: None,
        };
        self.pending.push(PreferencePair {
            image,
            ..without_image(pair)
        });
        self.written += 1;
        if self.pending.len() >= ROWS_PER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch =
            to_batch(&self.pending, self.schema.clone()).map_err(|e| DataError::Format {
                at: Location::file(&self.file),
                what: format!("cannot build a batch: {e}"),
            })?;
        self.pending.clear();
        self.writer
            .write(&batch)
            .map_err(|error| DataError::Parquet {
                file: self.file.clone(),
                error,
            })
    }

    /// Writes the last rows and the footer, after checking that the header's count was kept.
    pub fn finish(mut self) -> Result<W, DataError> {
        self.flush()?;
        if self.written != self.promised {
            return Err(DataError::Format {
                at: Location::file(&self.file),
                what: format!(
                    "the header promises {} records, {} were written",
                    self.promised, self.written
                ),
            });
        }
        let file = self.file;
        self.writer
            .into_inner()
            .map_err(|error| DataError::Parquet { file, error })
    }
}

fn without_image(pair: &PreferencePair) -> PreferencePair {
    PreferencePair {
        id: pair.id.clone(),
        image: ImageRef::default(),
        question: pair.question.clone(),
        chosen: pair.chosen.clone(),
        rejected: pair.rejected.clone(),
        sub_sentences: pair.sub_sentences.clone(),
        scores: pair.scores.clone(),
        delta: pair.delta,
        delta_edge: pair.delta_edge,
        alpha_d: pair.alpha_d,
        annotation: pair.annotation.clone(),
        source: pair.source.clone(),
        logps: pair.logps.clone(),
    }
}

fn strings(list: &GenericListArray<i32>, i: usize) -> Option<Result<Vec<String>, String>> {
    if list.is_null(i) {
        return None;
    }
    let values = list.value(i);
    let Some(text) = crate::read::columns::Text::of(values.as_ref()) else {
        return Some(Err(format!(
            "expected a list of text, found {}",
            list.data_type()
        )));
    };
    Some(
        (0..values.len())
            .map(|j| {
                text.get(j)
                    .and_then(Result::ok)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("item {j} is null or not UTF-8"))
            })
            .collect(),
    )
}

fn numbers(list: &GenericListArray<i32>, i: usize) -> Option<Result<Vec<f64>, String>> {
    if list.is_null(i) {
        return None;
    }
    let values = list.value(i);
    Some(
        (0..values.len())
            .map(|j| {
                float_at(values.as_ref(), j)
                    .ok_or_else(|| format!("item {j} is null or not a float"))
            })
            .collect(),
    )
}

/// Reads row `i` of a list column; `None` for null.
type ListGetter<T> = fn(&GenericListArray<i32>, usize) -> Option<Result<Vec<T>, String>>;

/// Reads the two-sided (`chosen`, `rejected`) list struct of row `i`.
fn sides<T>(
    cols: &Option<(Columns<'_>, &StructArray)>,
    i: usize,
    get: ListGetter<T>,
) -> Result<Option<[Vec<T>; 2]>, String> {
    let Some((children, array)) = cols else {
        return Ok(None);
    };
    if array.is_null(i) {
        return Ok(None);
    }
    let side = |name: &str| -> Result<Vec<T>, String> {
        let list = children
            .opt_list(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("has no `{name}`"))?;
        get(list, i)
            .unwrap_or(Ok(Vec::new()))
            .map_err(|e| format!("`{name}`: {e}"))
    };
    Ok(Some([side("chosen")?, side("rejected")?]))
}

pub(crate) fn convert(ctx: &BatchCtx<'_>, batch: &RecordBatch) -> Result<Vec<Parsed>, DataError> {
    let cols = Columns::of_batch(batch, ctx.file);
    let id = cols.text("id")?;
    let (question, chosen, rejected) = (
        cols.text("question")?,
        cols.text("chosen")?,
        cols.text("rejected")?,
    );
    let image = ImageColumn::of(&cols, "image")?;
    let subs = cols.opt_struct("sub_sentences")?;
    let scores = cols.opt_struct("scores")?;
    let (delta, alpha) = (cols.opt_float("delta")?, cols.opt_float("alpha_d")?);
    let edge = cols.opt_text("delta_edge")?;
    let logps = cols.opt_text("logps")?;
    let annotation = cols.opt_struct("annotation")?;
    let ann = match &annotation {
        Some((c, _)) => Some((
            c.opt_text("status")?,
            c.opt_bool("swapped")?,
            c.opt_list("tags")?,
            c.opt_text("note")?,
            c.opt_bool("edited")?,
            c.opt_bool("reviewed")?,
        )),
        None => None,
    };
    let source = cols.opt_struct("source")?;
    let src = match &source {
        Some((c, _)) => Some((
            [
                c.opt_text("ds_name")?,
                c.opt_text("origin_dataset")?,
                c.opt_text("origin_split")?,
                c.opt_text("image_path")?,
                c.opt_text("file")?,
            ],
            c.opt_int("idx")?,
            c.opt_int("row")?,
        )),
        None => None,
    };
    let row = |i: usize| -> Parsed {
        let at = ctx.at(i);
        let id = text_at(ctx, "", &id, "id", i)
            .map_err(|_| DataError::record(at.clone(), None, Some("id"), Problem::Null))?;
        let fail = |field, why: String| {
            DataError::record(
                at.clone(),
                Some(id.clone()),
                Some(field),
                Problem::Invalid(why),
            )
        };
        let mut pair = PreferencePair {
            image: image.get(i),
            question: text_at(ctx, &id, &question, "question", i)?,
            chosen: text_at(ctx, &id, &chosen, "chosen", i)?,
            rejected: text_at(ctx, &id, &rejected, "rejected", i)?,
            sub_sentences: sides(&subs, i, strings)
                .map_err(|e| fail("sub_sentences", e))?
                .map(|[chosen, rejected]| SubSentences { chosen, rejected }),
            scores: sides(&scores, i, numbers)
                .map_err(|e| fail("scores", e))?
                .map(|[chosen, rejected]| Scores { chosen, rejected }),
            delta: delta.and_then(|a| float_at(a, i)),
            alpha_d: alpha.and_then(|a| float_at(a, i)),
            ..PreferencePair::default()
        };
        if let Some(name) = opt_text_at(ctx, &id, edge.as_ref(), "delta_edge", i)? {
            let edge = serde_json::from_value(serde_json::Value::String(name.clone()));
            pair.delta_edge =
                Some(edge.map_err(|_| fail("delta_edge", format!("unknown edge case `{name}`")))?);
        }
        if let Some(json) = opt_text_at(ctx, &id, logps.as_ref(), "logps", i)? {
            pair.logps = Some(
                serde_json::from_str(&json)
                    .map_err(|e| fail("logps", format!("is not JSON: {e}")))?,
            );
        }
        if let Some((status, swapped, tags, note, edited, reviewed)) = &ann {
            let status = match opt_text_at(ctx, &id, status.as_ref(), "annotation", i)?.as_deref() {
                None | Some("keep") => Status::Keep,
                Some("drop") => Status::Drop,
                Some(other) => return Err(fail("annotation", format!("unknown status `{other}`"))),
            };
            let flag = |b: &Option<&BooleanArray>| b.is_some_and(|b| b.is_valid(i) && b.value(i));
            let tags = tags
                .and_then(|t| strings(t, i))
                .transpose()
                .map_err(|e| fail("annotation", format!("tags: {e}")))?;
            pair.annotation = Annotation {
                status,
                swapped: flag(swapped),
                tags: tags.unwrap_or_default(),
                note: opt_text_at(ctx, &id, note.as_ref(), "annotation", i)?.unwrap_or_default(),
                edited: flag(edited),
                reviewed: flag(reviewed),
            };
        }
        if let Some((texts, idx, file_row)) = &src {
            let t = |k: usize| opt_text_at(ctx, &id, texts[k].as_ref(), "source", i);
            pair.source = Source {
                ds_name: t(0)?,
                origin_dataset: t(1)?,
                origin_split: t(2)?,
                image_path: t(3)?,
                file: t(4)?,
                idx: idx.and_then(|a| int_at(a, i)),
                row: file_row
                    .and_then(|a| int_at(a, i))
                    .and_then(|r| u64::try_from(r).ok()),
            };
        }
        pair.id = id.clone();
        check_consistent(&pair).map_err(|(field, why)| fail(field, why))?;
        Ok((at, pair))
    };
    Ok((0..batch.num_rows()).map(row).collect())
}

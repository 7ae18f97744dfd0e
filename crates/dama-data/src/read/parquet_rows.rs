//! Parquet, streamed: a small batch of rows at a time, so that a 1 GB shard of embedded images is
//! never held in memory; only the columns the format needs are read. Each row is located by row
//! group and row, which is how pyarrow users find it again.

use arrow_array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::ChunkReader;

use super::{Parsed, rlaifv, stem};
use crate::annotated::{self, Header};
use crate::error::{DataError, Location, Pos};

/// The parsed rows of a parquet file, streamed.
pub(crate) type Rows = Box<dyn Iterator<Item = Parsed> + Send>;

/// Rows per batch: with embedded images of ~100 KB, a few MB at a time.
pub const BATCH_ROWS: usize = 16;

/// Turns one batch into records (one per row, each `Err` a bad row); `Err` for a schema problem,
/// which stops the read.
pub(crate) type Convert = fn(&BatchCtx<'_>, &RecordBatch) -> Result<Vec<Parsed>, DataError>;

/// Where a batch sits in its file.
pub(crate) struct BatchCtx<'a> {
    pub file: &'a str,
    /// Prefix of derived ids: `<prefix>:<row of the file>`.
    pub prefix: &'a str,
    pub first_row: u64,
    group_starts: &'a [u64],
}

impl BatchCtx<'_> {
    pub(crate) fn at(&self, i: usize) -> Location {
        let file_row = self.first_row + i as u64;
        let group = self
            .group_starts
            .partition_point(|&start| start <= file_row)
            .saturating_sub(1);
        let row = (file_row - self.group_starts.get(group).copied().unwrap_or(0)) as usize;
        Location {
            file: self.file.to_owned(),
            pos: Pos::Row {
                group,
                row,
                file_row,
            },
        }
    }

    pub(crate) fn derived_id(&self, i: usize) -> String {
        format!("{}:{}", self.prefix, self.first_row + i as u64)
    }
}

struct ParquetRows {
    file: String,
    prefix: String,
    reader: ParquetRecordBatchReader,
    group_starts: Vec<u64>,
    next_row: u64,
    pending: std::vec::IntoIter<Parsed>,
    convert: Convert,
    failed: bool,
}

impl Iterator for ParquetRows {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            if let Some(parsed) = self.pending.next() {
                return Some(parsed);
            }
            if self.failed {
                return None;
            }
            let ctx = BatchCtx {
                file: &self.file,
                prefix: &self.prefix,
                first_row: self.next_row,
                group_starts: &self.group_starts,
            };
            let converted = match self.reader.next()? {
                Ok(batch) => {
                    let parsed = (self.convert)(&ctx, &batch);
                    self.next_row += batch.num_rows() as u64;
                    parsed
                }
                Err(e) => Err(DataError::Format {
                    at: ctx.at(0),
                    what: format!("cannot decode the rows from here on: {e}"),
                }),
            };
            match converted {
                Ok(rows) => self.pending = rows.into_iter(),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Opens RLAIF-V-style parquet, or annotated parquet when its key-value metadata carries our
/// header (returned). `reader` is a `File` natively or `bytes::Bytes` in the browser.
pub(crate) fn parquet_rows<R: ChunkReader + Send + 'static>(
    file: &str,
    reader: R,
) -> Result<(Option<Header>, Rows), DataError> {
    let parquet_err = |error| DataError::Parquet {
        file: file.to_owned(),
        error,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(parquet_err)?;
    let metadata = builder.metadata().clone();
    let header_json = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == annotated::HEADER_KEY))
        .map(|k| k.value.clone().unwrap_or_default());
    let header = match header_json {
        Some(json) => Some(Header::from_json_line(
            &Location::file(file),
            json.as_bytes(),
        )?),
        None => None,
    };
    let (columns, convert): (&[&str], Convert) = match header {
        Some(_) => (annotated::parquet::COLUMNS, annotated::parquet::convert),
        None => (rlaifv::COLUMNS, rlaifv::convert),
    };
    let schema = builder.schema().clone();
    let roots = columns.iter().filter_map(|c| schema.index_of(c).ok());
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_err)?;
    let mut group_starts = Vec::with_capacity(metadata.num_row_groups());
    let mut start = 0u64;
    for group in metadata.row_groups() {
        group_starts.push(start);
        start += group.num_rows() as u64;
    }
    let rows = ParquetRows {
        file: file.to_owned(),
        prefix: stem(file).to_owned(),
        reader,
        group_starts,
        next_row: 0,
        pending: Vec::new().into_iter(),
        convert,
        failed: false,
    };
    Ok((header, Box::new(rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_located_by_row_group() {
        let starts = [0, 4, 8];
        let ctx = BatchCtx {
            file: "f.parquet",
            prefix: "f",
            first_row: 3,
            group_starts: &starts,
        };
        assert_eq!(
            ctx.at(0).pos,
            Pos::Row {
                group: 0,
                row: 3,
                file_row: 3
            }
        );
        assert_eq!(
            ctx.at(1).pos,
            Pos::Row {
                group: 1,
                row: 0,
                file_row: 4
            }
        );
        assert_eq!(
            ctx.at(6).pos,
            Pos::Row {
                group: 2,
                row: 1,
                file_row: 9
            }
        );
        assert_eq!(ctx.derived_id(6), "f:9");
    }
}

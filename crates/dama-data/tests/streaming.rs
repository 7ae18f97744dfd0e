//! A large parquet shard is read a batch at a time: the bytes fetched from the file grow with
//! the rows read, so a 1 GB shard never sits in memory whole. Checked by counting what the
//! reader asks of the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use bytes::Bytes;
use dama_data::read::PARQUET_BATCH_ROWS;
use dama_data::{ImageCheck, NoImages, ReadOptions, read_parquet};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};

/// A file that counts the bytes handed to the parquet reader.
struct Counted {
    file: File,
    served: Arc<AtomicU64>,
}

struct CountedRead {
    inner: std::io::Take<File>,
    served: Arc<AtomicU64>,
}

impl Read for CountedRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.served.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Length for Counted {
    fn len(&self) -> u64 {
        self.file.metadata().unwrap().len()
    }
}

impl ChunkReader for Counted {
    type T = CountedRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<CountedRead> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(start))?;
        Ok(CountedRead {
            inner: f.take(u64::MAX),
            served: Arc::clone(&self.served),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0; length];
        f.read_exact(&mut buf)?;
        self.served.fetch_add(length as u64, Ordering::Relaxed);
        Ok(buf.into())
    }
}

const IMAGE_BYTES: usize = 64 * 1024;

/// An RLAIF-V-shaped shard of incompressible "images" (the test reads them without decoding).
fn write_shard(path: &std::path::Path, groups: usize, rows_per_group: usize) {
    let image_fields: Fields = vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]
    .into();
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::Struct(image_fields.clone()), true),
        Field::new("question", DataType::Utf8, true),
        Field::new("chosen", DataType::Utf8, true),
        Field::new("rejected", DataType::Utf8, true),
    ]));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), schema.clone(), Some(props)).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..groups {
        let blobs: Vec<Vec<u8>> = (0..rows_per_group)
            .map(|_| {
                (0..IMAGE_BYTES)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect()
            })
            .collect();
        let bytes: ArrayRef = Arc::new(
            blobs
                .iter()
                .map(|b| Some(b.as_slice()))
                .collect::<BinaryArray>(),
        );
        let paths: ArrayRef = Arc::new(StringArray::from(vec![Some("x.png"); rows_per_group]));
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("A cat sits on a mat.");
            rows_per_group
        ]));
        let image: ArrayRef = Arc::new(StructArray::new(
            image_fields.clone(),
            vec![bytes, paths],
            None,
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![image, text.clone(), text.clone(), text],
        )
        .unwrap();
        writer.write(&batch).unwrap();
    }
    writer.close().unwrap();
}

/// Reads the shard, checking after each row that the bytes fetched so far stay within
/// `bound(rows read, group size)`.
fn read_counting(groups: usize, rows_per_group: usize, bound: impl Fn(usize, u64) -> u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.parquet");
    write_shard(&path, groups, rows_per_group);
    let size = std::fs::metadata(&path).unwrap().len();
    let group_size = size / groups as u64;
    let served = Arc::new(AtomicU64::new(0));
    let file = Counted {
        file: File::open(&path).unwrap(),
        served: Arc::clone(&served),
    };
    let options = ReadOptions::default().with_images(ImageCheck::Load);
    let mut rows = 0usize;
    for pair in read_parquet("big.parquet", file, NoImages, options).unwrap() {
        assert_eq!(pair.unwrap().image.bytes.unwrap().len(), IMAGE_BYTES);
        rows += 1;
        let (now, limit) = (served.load(Ordering::Relaxed), bound(rows, group_size));
        assert!(
            now <= limit,
            "after {rows} rows: {now} bytes fetched of {size}, bound {limit}"
        );
    }
    assert_eq!(rows, groups * rows_per_group);
    assert!(
        served.load(Ordering::Relaxed) >= size - size / 10,
        "everything is read by the end"
    );
}

/// Slack for the footer and page headers.
const FOOTER: u64 = 64 * 1024;

#[test]
fn small_row_groups_are_fetched_as_the_rows_are_read() {
    // 48 row groups of 4 rows (~260 KB each): a batch spans 4 of them.
    let per_group = 4;
    read_counting(48, per_group, |rows, group_size| {
        let batched = rows.div_ceil(PARQUET_BATCH_ROWS) * PARQUET_BATCH_ROWS;
        (batched.div_ceil(per_group) as u64 + 1) * group_size + FOOTER
    });
}

#[test]
fn a_large_row_group_is_not_fetched_whole() {
    // 2 row groups of 96 rows (~6 MB each): rows come a batch of pages at a time.
    read_counting(2, 96, |rows, group_size| {
        let batched = rows.div_ceil(PARQUET_BATCH_ROWS) * PARQUET_BATCH_ROWS;
        let per_row = group_size / 96;
        (batched as u64 + 2 * PARQUET_BATCH_ROWS as u64) * per_row + FOOTER
    });
}

//! Every reader on fixture files of its format (scripts/fixtures/data.py), broken records
//! included: the good records come out intact, each bad one is skipped with an error naming the
//! file, the position, the record and the field, and the summary counts them.

mod common;

use std::collections::BTreeMap;

use common::{check_bad, check_good, expected, fixtures};
use dama_data::split::estimate_clip_tokens;
use dama_data::{
    ImageCheck, ImageMap, NoImages, ReadMode, ReadOptions, Records, SkipReason, open_dataset,
    read_bytes,
};
use serde_json::Value;

/// Reads everything leniently and checks it against expected.json's entry.
fn check_dataset(records: Records<'_>, want: &Value) {
    let (pairs, summary) = records.read_all().unwrap();
    let goods = want["good"].as_array().unwrap();
    let bads = want["bad"].as_array().unwrap();
    assert_eq!(pairs.len(), goods.len(), "{summary}");
    for (pair, good) in pairs.iter().zip(goods) {
        check_good(pair, good);
    }
    assert_eq!(summary.read, goods.len());
    assert_eq!(summary.errors.len(), bads.len(), "{:#?}", summary.errors);
    for (error, bad) in summary.errors.iter().zip(bads) {
        check_bad(error, bad);
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for bad in bads {
        *counts
            .entry(bad["reason"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let name = |r: &SkipReason| {
        serde_json::to_value(r)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    };
    let got: BTreeMap<String, usize> = summary.skipped.iter().map(|(r, n)| (name(r), *n)).collect();
    assert_eq!(got, counts);
}

#[test]
fn rlaifv_parquet_from_a_file_and_from_bytes() {
    let want = expected("rlaifv");
    let path = fixtures().join(want["file"].as_str().unwrap());
    check_dataset(
        open_dataset(&path, None, ReadOptions::default()).unwrap(),
        &want,
    );
    let bytes = std::fs::read(&path).unwrap();
    check_dataset(
        read_bytes(
            "train-00000-of-00001.parquet",
            bytes,
            NoImages,
            ReadOptions::default(),
        )
        .unwrap(),
        &want,
    );
    let metadata = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap(),
    )
    .clone();
    assert_eq!(
        metadata.num_row_groups() as u64,
        want["row_groups"].as_u64().unwrap()
    );
}

#[test]
fn rlaifv_origin_fields_are_carried() {
    let path = fixtures().join("rlaifv/train-00000-of-00001.parquet");
    let first = open_dataset(&path, None, ReadOptions::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.source.ds_name.as_deref(), Some("vqav2"));
    assert_eq!(first.source.origin_dataset.as_deref(), Some("fixture"));
    assert!(
        first
            .source
            .origin_split
            .as_deref()
            .unwrap()
            .contains("llava15_7b")
    );
    assert_eq!(first.source.image_path.as_deref(), Some("images/00000.png"));
    assert_eq!(first.image.name.as_deref(), Some("00000.png"));
    assert_eq!(
        (first.source.file.as_deref(), first.source.row),
        (Some(path.display().to_string().as_str()), Some(0))
    );
}

#[test]
fn large_string_and_binary_columns() {
    let want = expected("rlaifv_large_types");
    let path = fixtures().join(want["file"].as_str().unwrap());
    check_dataset(
        open_dataset(&path, None, ReadOptions::default()).unwrap(),
        &want,
    );
}

#[test]
fn a_folder_of_shards_reads_as_one_dataset() {
    let want = expected("rlaifv");
    check_dataset(
        open_dataset(&fixtures().join("rlaifv"), None, ReadOptions::default()).unwrap(),
        &want,
    );
}

#[test]
fn strict_mode_stops_at_the_first_bad_record() {
    let path = fixtures().join("rlaifv/train-00000-of-00001.parquet");
    let mut records = open_dataset(&path, None, ReadOptions::strict()).unwrap();
    let first_bad = &expected("rlaifv")["bad"][0];
    let goods_before = first_bad["file_row"].as_u64().unwrap() as usize;
    for _ in 0..goods_before {
        records.next().unwrap().unwrap();
    }
    let err = records.next().unwrap().unwrap_err();
    check_bad(&err, first_bad);
    assert!(err.to_string().contains("row group 0, row 2 (row 2 of the file) (record `train-00000-of-00001:2`): field `image` holds an image that cannot be decoded"), "{err}");
    assert!(records.next().is_none());
    assert_eq!(records.summary().read, goods_before);
}

#[test]
fn jsonl_with_an_image_folder_from_files_and_from_bytes() {
    let want = expected("jsonl");
    let path = fixtures().join(want["file"].as_str().unwrap());
    let images = fixtures().join("jsonl/images");
    check_dataset(
        open_dataset(&path, Some(&images), ReadOptions::default()).unwrap(),
        &want,
    );
    // The browser: the JSONL's bytes and the files a person picked, by file name.
    let picked: ImageMap = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    check_dataset(
        read_bytes(
            "pairs.jsonl",
            std::fs::read(&path).unwrap(),
            picked,
            ReadOptions::default(),
        )
        .unwrap(),
        &want,
    );
}

#[test]
fn authors_json_list() {
    let want = expected("authors");
    let path = fixtures().join(want["file"].as_str().unwrap());
    // Their absolute paths resolve by file name in the list's own folder.
    let records = open_dataset(&path, None, ReadOptions::default()).unwrap();
    let (pairs, _) = records.read_all().unwrap();
    for (pair, good) in pairs.iter().zip(want["good"].as_array().unwrap()) {
        assert_eq!(pair.delta, good["delta"].as_f64(), "{}", pair.id);
        assert_eq!(pair.logps.as_ref(), Some(&good["logps"]), "{}", pair.id);
        assert!(
            pair.source
                .image_path
                .as_deref()
                .unwrap()
                .starts_with("/mnt/data/users/authors/")
        );
    }
    check_dataset(
        open_dataset(&path, None, ReadOptions::default()).unwrap(),
        &want,
    );
}

#[test]
fn image_checks_can_be_relaxed() {
    let path = fixtures().join("rlaifv/train-00000-of-00001.parquet");
    let load = ReadOptions::default().with_images(ImageCheck::Load);
    let (pairs, summary) = open_dataset(&path, None, load).unwrap().read_all().unwrap();
    // Undecodable bytes pass a load-only read; decoding them later reports them.
    assert_eq!(summary.skipped.get(&SkipReason::UndecodableImage), None);
    let broken = pairs.iter().find(|p| p.id.ends_with(":2")).unwrap();
    assert!(broken.image.decoded.is_none() && broken.rgb_image().is_err());
    let skip = ReadOptions {
        mode: ReadMode::Lenient,
        images: ImageCheck::Skip,
        include_dropped: false,
        ..ReadOptions::default()
    };
    let (pairs, summary) = open_dataset(&path, None, skip).unwrap().read_all().unwrap();
    assert_eq!(
        summary.skipped_total(),
        2,
        "only the text problems remain: {summary}"
    );
    assert_eq!(pairs.len(), 10);
}

#[test]
fn the_default_token_estimate_never_undercounts_clip() {
    let text = std::fs::read_to_string(fixtures().join("clip_tokens.json")).unwrap();
    let counts: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(counts.len() >= 20);
    for c in &counts {
        let (text, real) = (
            c["text"].as_str().unwrap(),
            c["tokens"].as_u64().unwrap() as usize,
        );
        let estimate = estimate_clip_tokens(text);
        assert!(
            estimate >= real,
            "{text:?}: estimated {estimate}, CLIP counts {real}"
        );
        assert!(
            estimate <= 2 * real,
            "{text:?}: estimated {estimate}, CLIP counts {real}: too pessimistic"
        );
    }
}

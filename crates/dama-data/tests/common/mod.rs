//! Shared by the integration tests: the fixtures of scripts/fixtures/data.py and what they hold.

#![allow(dead_code)]

use std::path::PathBuf;

use dama_data::{DataError, Pos, PreferencePair};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// expected.json's entry for one dataset.
pub fn expected(dataset: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[dataset].clone()
}

/// Checks a pair against its expected record: texts, and the decoded image against PIL's RGB
/// (bit for bit for PNG, within 2 levels on average per channel for JPEG, whose decoders differ).
#[track_caller]
pub fn check_good(pair: &PreferencePair, want: &Value) {
    let id = want["id"].as_str().unwrap();
    assert_eq!(pair.id, id);
    for field in ["question", "chosen", "rejected"] {
        let got = match field {
            "question" => &pair.question,
            "chosen" => &pair.chosen,
            _ => &pair.rejected,
        };
        assert_eq!(got, want[field].as_str().unwrap(), "{id}: {field}");
    }
    let img = pair
        .image
        .decoded
        .as_ref()
        .unwrap_or_else(|| panic!("{id}: image not decoded"));
    let rgb = img.to_rgb8();
    let w = &want["image"];
    assert_eq!(
        (rgb.width() as u64, rgb.height() as u64),
        (w["width"].as_u64().unwrap(), w["height"].as_u64().unwrap()),
        "{id}"
    );
    if let Some(sha) = w["rgb_sha256"].as_str() {
        let got: String = Sha256::digest(rgb.as_raw())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, sha, "{id}: RGB pixels differ from PIL's");
    } else {
        let means = w["rgb_mean"].as_array().unwrap();
        for (c, want) in means.iter().enumerate() {
            let got = rgb.pixels().map(|p| f64::from(p[c])).sum::<f64>()
                / f64::from(rgb.width() * rgb.height());
            assert!(
                (got - want.as_f64().unwrap()).abs() < 2.0,
                "{id}: JPEG channel {c} mean {got} vs {want}"
            );
        }
    }
    if let Some(idx) = want["idx"].as_i64() {
        assert_eq!(pair.source.idx, Some(idx), "{id}");
    }
}

/// Checks a skipped record's error against its expected entry.
#[track_caller]
pub fn check_bad(error: &DataError, want: &Value) {
    let DataError::Record(e) = error else {
        panic!("not a record error: {error}")
    };
    let reason = serde_json::to_value(e.reason()).unwrap();
    assert_eq!(reason, want["reason"], "{error}");
    assert_eq!(e.id.as_deref(), want["id"].as_str(), "{error}");
    assert_eq!(e.field, want["field"].as_str(), "{error}");
    match e.at.pos {
        Pos::Row {
            group,
            row,
            file_row,
        } => {
            assert_eq!(
                (group as u64, row as u64, file_row),
                (
                    want["row_group"].as_u64().unwrap(),
                    want["row"].as_u64().unwrap(),
                    want["file_row"].as_u64().unwrap()
                )
            );
        }
        Pos::Line(line) => assert_eq!(line as u64, want["line"].as_u64().unwrap(), "{error}"),
        Pos::Item { index, .. } => {
            assert_eq!(index as u64, want["index"].as_u64().unwrap(), "{error}")
        }
        Pos::File => panic!("a record error must have a position: {error}"),
    }
    assert!(
        error.to_string().starts_with(&e.at.file),
        "the message names the file: {error}"
    );
}

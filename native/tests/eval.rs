//! `dama-native eval objhal|amber|judge` end to end, through the binary:
//!
//! - on dama-eval's fixtures, whose golden values come from the independent Python reference
//!   (`scripts/eval_reference/`): every summary number and every answer's details;
//! - on a small Object HalBench written here (COCO-style annotations, questions with embedded
//!   PNGs, answers in both answer-file styles), against counts worked out from the design;
//! - the judge against a local OpenAI-compatible server that only knows the reference's
//!   prompts: the golden summary, a rerun that asks nothing, the key in no output;
//! - bad input: a missing image, an id the annotations lack, an answers file of another
//!   benchmark, each named by file, line and field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dama-native"));
    for var in [
        "DAMA_LLM_BASE_URL",
        "DAMA_LLM_MODEL",
        "DAMA_LLM_API_KEY",
        "OPENAI_API_KEY",
    ] {
        c.env_remove(var);
    }
    c
}

fn eval(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = bin();
    c.arg("eval");
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: &Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "the command failed:\n{t}");
    t
}

/// The command failed, said `parts` and wrote no summary.
fn refused(o: &Output, out: &Path, parts: &[&str]) -> String {
    let t = text(o);
    assert!(!o.status.success(), "the command succeeded:\n{t}");
    for p in parts {
        assert!(t.contains(p), "no {p:?} in:\n{t}");
    }
    assert!(!out.join("summary.json").exists());
    t
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/dama-eval/tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Numbers equal to 1e-12, everything else exactly; every key of `expected` must be there.
fn assert_close(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-12, "{path}: {a} != {b}");
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: {actual} vs {expected}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, y) in b {
                let x = a.get(k).unwrap_or_else(|| panic!("{path}: no `{k}`"));
                assert_close(x, y, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

fn png_base64(shade: u8) -> String {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(6, 4, image::Rgb([shade, 90, 200]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[path = "eval/amber.rs"]
mod amber;
#[path = "eval/design.rs"]
mod design;
#[path = "eval/flags.rs"]
mod flags;
#[path = "eval/judge.rs"]
mod judge;
#[path = "eval/model.rs"]
mod model;
#[path = "eval/objhal.rs"]
mod objhal;
#[path = "eval/server.rs"]
mod server;

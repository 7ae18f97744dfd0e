//! `dama-native score` against transformers: a tiny random CLIP scores a small dataset whose
//! sub-sentences are given; δ, δ̄ and α_D must equal docs/SPEC.md's formulas applied to
//! transformers' `logits_per_image` (scripts/fixtures/score.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use dama_tests::read_pairs;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/score")
}

fn tiny_clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/dama-clip/tests/fixtures/tiny-clip")
}

fn score(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dama-native"))
        .args(["score", "--device", "cpu", "--offline", "--clip"])
        .arg(tiny_clip())
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg(fixtures().join("pairs.jsonl"))
        .output()
        .unwrap()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn delta_and_alpha_d_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scored.jsonl");
    let run = score(&out, &[]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    let lines = read_jsonl(&out);
    let header = &lines[0];
    let dbar = expected["delta_mean"].as_f64().unwrap();
    assert!(
        (header["delta_mean"].as_f64().unwrap() - dbar).abs() < 1e-5,
        "{header}"
    );
    assert_eq!(header["scored"], 7);
    // Every pair's sub-sentences came with the dataset: the header says so, not `rules-v1`.
    assert_eq!(header["splitter"], "input", "{header}");
    assert_eq!(
        header["edge_counts"],
        serde_json::json!({"no_subsentences": 1, "no_chosen": 1, "no_rejected": 1})
    );
    for (got, want) in lines[1..].iter().zip(expected["pairs"].as_array().unwrap()) {
        assert_eq!(got["id"], want["id"]);
        assert_eq!(got["delta_edge"], want["delta_edge"]);
        for side in ["chosen", "rejected"] {
            let g = got["scores"][side].as_array().unwrap();
            let w = want["scores"][side].as_array().unwrap();
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!(
                    (a - b).abs() < 1e-4 * b.abs().max(1.0),
                    "{}: {a} vs {b}",
                    want["id"]
                );
            }
        }
        for field in ["delta", "alpha_d"] {
            let (a, b) = (got[field].as_f64().unwrap(), want[field].as_f64().unwrap());
            assert!((a - b).abs() < 1e-5, "{} {field}: {a} vs {b}", want["id"]);
        }
        // The output references the fixture's images, which must resolve.
        let image = got["image"].as_str().unwrap();
        let folder = header["images"].as_str().unwrap();
        assert!(Path::new(folder).join(image).is_file(), "{folder}/{image}");
    }
    assert!(stdout.contains("δ̄ ="), "{stdout}");
    assert!(dir.path().join("scored.delta.png").is_file());

    // A second run resumes from the log: nothing left to score, the same file.
    let before = std::fs::read_to_string(&out).unwrap();
    let run = score(&out, &[]);
    assert!(run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("7 pairs already scored"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), before);

    // The log of one estimator is not reused for another.
    let run = score(&out, &["--estimator", "raw-ratio"]);
    assert!(!run.status.success());
}

/// A dataset whose images are embedded (`image_b64`, as the explorer's export and the demo's
/// browser bundle are) comes out with them embedded, every pair readable with its image; the
/// scores are those of the same pairs with their images in a folder.
#[test]
fn embedded_images_stay_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = read_pairs(&fixtures().join("pairs.jsonl"));
    let inline = dir.path().join("inline.jsonl");
    dama_world::write_inline(&inline, &pairs, &dama_data::RunInfo::default()).unwrap();
    let scored_inline = dir.path().join("inline.scored.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_dama-native"))
        .args(["score", "--device", "cpu", "--offline", "--clip"])
        .arg(tiny_clip())
        .arg("--out")
        .arg(&scored_inline)
        .arg(&inline)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let from_folder = dir.path().join("folder.scored.jsonl");
    assert!(score(&from_folder, &[]).status.success());
    let (got, want) = (read_pairs(&scored_inline), read_pairs(&from_folder));
    assert_eq!(got.len(), want.len());
    assert!(
        read_jsonl(&scored_inline)[1..]
            .iter()
            .all(|l| l["image_b64"].is_string())
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.image.bytes, w.image.bytes, "{}", w.id);
        assert_eq!((&g.id, g.delta), (&w.id, w.delta));
    }
}

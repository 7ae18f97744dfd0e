//! The demo, end to end, as a first-time user runs it, on a smaller world and fewer epochs (the
//! same stages: world, CLIP, SFT, sampled preference pairs, score, DPO and DAMA, held-out
//! pairs and CHAIR), with its numbers checked against what they must be.

use std::process::Command;

use dama_tests::read_pairs;
use serde_json::Value;

fn number(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {x}"))
}

#[test]
fn the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let run = Command::new(env!("CARGO_BIN_EXE_dama-native"))
        .args(["demo", "--device", "cpu", "--train-images", "256"])
        .args(["--clip-epochs", "2", "--sft-epochs", "12", "--epochs", "1"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for line in [
        "clip:",
        "sft:",
        "preference:",
        "held-out pairs",
        "held-out answers",
        "plots:",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    for f in [
        "plots/loss.png",
        "plots/beta_dama.png",
        "runs/dama/final/model.safetensors",
        "runs/dpo/final/model.safetensors",
        "data/sft.jsonl",
        "preference/pairs.jsonl",
        "preference/samples.jsonl",
        "eval/answers-sft.jsonl",
        "eval/answers-dama.jsonl",
        "eval/answers-dpo.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    // The CLIP learnt something: its loss fell and true sentences outscore their negatives.
    let clip_loss = summary["clip_loss"].as_array().unwrap();
    let (first, last) = (
        clip_loss[0].as_f64().unwrap(),
        clip_loss[1].as_f64().unwrap(),
    );
    assert!(last < first, "CLIP loss {first} → {last}");
    assert!(
        number(&summary, &["clip", "mean_true"]) > number(&summary, &["clip", "mean_negative"])
    );
    // SFT learnt the language: the held-out descriptions' loss fell by more than half.
    assert!(
        number(&summary, &["sft", "heldout_loss"])
            < 0.5 * number(&summary, &["sft", "heldout_loss_init"])
    );
    // Every sampled pair's chosen answer makes fewer errors than its rejected one, as the
    // answers file and the world's counter say.
    let pairs = number(&summary, &["preference_pairs"]) as usize;
    assert!(pairs > 0);
    assert_eq!(
        pairs + number(&summary, &["preference_dropped"]) as usize,
        256,
        "every preference image gives a pair or is dropped"
    );
    // CHAIR of three models on the 64 held-out questions, each a share.
    let chair = summary["chair"].as_array().unwrap();
    let names: Vec<&str> = chair.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(names, ["sft", "dama", "dpo"]);
    for row in chair {
        let c = &row[1];
        assert_eq!(c["answers"], 64);
        for k in [
            "chair_s_refine",
            "chair_s",
            "chair_i",
            "recall",
            "attr_resp",
            "attr_ment",
        ] {
            let x = number(c, &[k]);
            assert!((0.0..=1.0).contains(&x), "{k} = {x}");
        }
        // an answer with a wrong kind is wrong in the stricter count too
        assert!(number(c, &["attr_resp"]) + 1e-9 >= number(c, &["chair_s"]));
    }

    // The explorer's bundle: the sampled pairs in one file with their images inline and no
    // scores, and the demo's CLIP, which gives them the δ the demo trained on.
    let web = out.join("web");
    let bundled = read_pairs(&web.join("demo.jsonl"));
    assert_eq!(bundled.len(), pairs);
    assert!(
        bundled
            .iter()
            .all(|p| p.image.bytes.is_some() && p.scores.is_none())
    );
    assert!(
        std::fs::read_to_string(web.join("demo.jsonl"))
            .unwrap()
            .contains("\"image_b64\""),
        "images inline"
    );
    let rescored = dir.path().join("bundle.scored.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_dama-native"))
        // the demo's batch of 64: the same pairs in the same batches give the same floats
        .args([
            "score",
            "--device",
            "cpu",
            "--offline",
            "--batch",
            "64",
            "--clip",
        ])
        .arg(web.join("clip"))
        .arg("--out")
        .arg(&rescored)
        .arg(web.join("demo.jsonl"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let want = read_pairs(&out.join("data/pairs.scored.jsonl"));
    let got = read_pairs(&rescored);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (&g.id, g.delta),
            (&w.id, w.delta),
            "the bundle's CLIP is the demo's"
        );
    }

    // A second demo into the same folder replaces the first; a foreign folder is refused.
    let foreign = dir.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_dama-native"))
        .args(["demo", "--out"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("was not made by the demo"));
}

//! A training run killed with SIGKILL and resumed ends with exactly the weights (and metrics)
//! of a run that was never interrupted.

mod common;

use std::path::Path;
use std::process::Command;

use common::{dataset, tiny_model, weights};

fn train_cmd(model: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dama-native"));
    cmd.args([
        "train",
        "--device",
        "cpu",
        "--mode",
        "mdpo",
        "--batch-size",
        "4",
        "--epochs",
        "2",
    ])
    .args([
        "--lr",
        "1e-3",
        "--warmup-ratio",
        "0.2",
        "--save-every",
        "2",
        "--max-length",
        "512",
        "--seed",
        "3",
    ])
    .arg("--model")
    .arg(model)
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(out);
    cmd
}

/// metrics.jsonl without the timing fields, which differ from run to run.
fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut()
                .unwrap()
                .retain(|k, _| !k.starts_with("perf/"));
            v
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 9);
    let data = dataset(dir.path(), 12, |_, _| {});

    let whole = dir.path().join("whole");
    let status = train_cmd(&model, &data, &whole).status().unwrap();
    assert!(status.success());

    let killed = dir.path().join("killed");
    let status = train_cmd(&model, &data, &killed)
        .env("DAMA_KILL_AT_STEP", "4")
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the run should have been killed: {status:?}"
    );
    assert!(!killed.join("final").exists());
    assert_eq!(
        std::fs::read_to_string(killed.join("checkpoints/latest")).unwrap(),
        "step-000002"
    );
    assert_eq!(
        metrics(&killed).len(),
        3,
        "step 3 finished but was not checkpointed"
    );

    // Without --resume the folder is not silently overwritten.
    let out = train_cmd(&model, &data, &killed).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    let status = train_cmd(&model, &data, &killed)
        .arg("--resume")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        weights(&whole.join("final")),
        weights(&killed.join("final"))
    );
    assert_eq!(metrics(&whole), metrics(&killed));
    assert_eq!(metrics(&whole).len(), 6);

    // Resuming with other settings is refused.
    let out = train_cmd(&model, &data, &killed)
        .args(["--resume", "--beta", "0.2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("other settings"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_demo_runs_end_to_end() {
    // One epoch instead of twelve: the same pipeline, in seconds.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let run = Command::new(env!("CARGO_BIN_EXE_dama-native"))
        .args(["demo", "--device", "cpu", "--epochs", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for line in ["held-out pairs", "reference", "dama", "dpo", "plots:"] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    for f in [
        "plots/loss.png",
        "plots/beta_dama.png",
        "runs/dama/final/model.safetensors",
        "data/train.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f}");
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

//! The demo, end to end, as a first-time user runs it (one epoch instead of twelve).

use std::process::Command;

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

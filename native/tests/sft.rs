//! `dama-native sft` as a user runs it: a tiny random LLaVA (`init-tiny`) fine-tuned on a small
//! world's true descriptions; the run's files, its falling loss, and a second run into the same
//! folder refused.

use std::process::Command;

use dama_world::{World, WorldSpec, write_pairs};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dama-native"))
}

#[test]
fn sft_fine_tunes_and_writes_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let init = bin().arg("init-tiny").arg(&model).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let world = World::build(&WorldSpec {
        train: 32,
        preference: 0,
        heldout: 0,
        image_size: 32,
        seed: 4,
    });
    let data = write_pairs(dir.path(), "sft", &world.pairs(&world.train, "train")).unwrap();
    let out = dir.path().join("run");
    let run = |out: &std::path::Path| {
        bin()
            .args(["sft", "--offline", "--device", "cpu", "--epochs", "4"])
            .args(["--batch-size", "8", "--micro-batch", "4", "--lr", "3e-3"])
            .arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let first = run(&out);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("16 steps"), "{stdout}");
    for f in [
        "final/model.safetensors",
        "final/config.json",
        "metrics.jsonl",
        "plots/loss.png",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let losses: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 16);
    assert!(
        losses[15] < 0.5 * losses[0],
        "answer-token loss {} → {}",
        losses[0],
        losses[15]
    );
    let again = run(&out);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds a fine-tuned model"), "{err}");
}

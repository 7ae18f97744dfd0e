//! `dama-native train --plan`: the table, the verdict against --gpu-memory, the cheapest
//! settings that fit; refused on the CPU without --gpu-memory; a bad size names the flag.

use std::path::Path;
use std::process::Command;

fn config_7b() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/dama-train/src/plan/configs/llava-1.5-7b.json")
        .display()
        .to_string()
}

fn plan(extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dama-native"))
        .args([
            "train",
            "--plan",
            "--device",
            "cpu",
            "--model",
            &config_7b(),
        ])
        .args(extra)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn plan_prints_the_table_the_verdict_and_what_would_fit() {
    // the paper's defaults (16 pairs of 2048 tokens, fp32 master and moments) on 80 GB
    let (ok, text) = plan(&["--gpu-memory", "80GB"]);
    assert!(ok, "{text}");
    for word in [
        "weights",
        "gradients",
        "master",
        "moments",
        "activations",
        "workspace",
        "peak",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }
    assert!(text.contains("does not fit 74.51 GiB"), "{text}");
    assert!(text.contains("cheapest settings that fit"), "{text}");
    assert!(text.contains("--optim-state 8bit"), "{text}");
    // the lean layout at a typical length fits
    let (ok, text) = plan(&[
        "--gpu-memory",
        "80GB",
        "--optim-master",
        "bf16-sr",
        "--optim-state",
        "8bit",
        "--recompute-activations",
        "--plan-tokens",
        "832",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("fits 74.51 GiB"), "{text}");
}

#[test]
fn plan_on_the_cpu_needs_a_gpu_size() {
    let (ok, text) = plan(&[]);
    assert!(!ok);
    assert!(text.contains("--gpu-memory"), "{text}");
    let (ok, text) = plan(&["--gpu-memory", "80 furlongs"]);
    assert!(!ok);
    assert!(
        text.contains("--gpu-memory") && text.contains("furlongs"),
        "{text}"
    );
}

/// A data-parallel run is planned from its own flags: `--nproc` and `--zero` (the 7b, f32
/// master and moments, 832-token conversations, checkpointing, 80 GB: ZeRO-0 does not fit 4
/// GPUs, ZeRO-1 does, as in README's table).
#[test]
fn plan_of_a_data_parallel_run_reads_nproc_and_zero() {
    let base = [
        "--gpu-memory",
        "80GB",
        "--recompute-activations",
        "--plan-tokens",
        "832",
        "--nproc",
        "4",
    ];
    let (ok, text) = plan(&base);
    assert!(ok, "{text}");
    assert!(text.contains("4 GPUs"), "{text}");
    assert!(text.contains("does not fit"), "{text}");
    assert!(text.contains("--zero 1"), "the cheapest change: {text}");
    let (ok, text) = plan(&[&base[..], &["--zero", "1"]].concat());
    assert!(ok, "{text}");
    assert!(text.contains("sharded over 4 GPUs"), "{text}");
    assert!(text.contains("fits 74.51 GiB"), "{text}");
}

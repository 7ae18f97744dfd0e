//! A training run killed with SIGKILL from outside, at random moments (while it loads, steps,
//! writes a checkpoint or the final model), and resumed each time, ends with exactly the
//! weights and metrics of a run that was never interrupted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dama_core::Xoshiro256;
use dama_tests::{dataset, tiny_model, weights};

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
        "1",
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
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
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

fn run_to_end(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

#[test]
fn runs_killed_at_random_moments_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 9);
    let data = dataset(dir.path(), 12, |_, _| {});

    let whole = dir.path().join("whole");
    let duration = run_to_end(&mut train_cmd(&model, &data, &whole));
    let (want_weights, want_metrics) = (weights(&whole.join("final")), metrics(&whole));
    assert_eq!(want_metrics.len(), 6);

    // Kill moments drawn over the length of a whole run, so that kills land while the model
    // loads, in the reference pass, in steps and in checkpoint writes. The seed is printed: a
    // failure names the draw (the moments themselves also depend on the machine's speed).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill moments drawn with seed {seed}");
    let mut rng = Xoshiro256::seed_from(seed);
    const KILLS: usize = 20;
    let (mut kills, mut runs) = (0, 0);
    while kills < KILLS {
        runs += 1;
        let out = dir.path().join(format!("killed-{runs}"));
        // Kill it again and again until it finishes on its own (always under --resume, which
        // starts afresh while there is no checkpoint).
        loop {
            let mut child = train_cmd(&model, &data, &out)
                .arg("--resume")
                .spawn()
                .unwrap();
            let at = duration.mul_f64(rng.open01() * 1.2);
            let t = Instant::now();
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
                        .unwrap();
                    assert!(status.success(), "run {runs}: {err}");
                    break true;
                }
                if t.elapsed() >= at {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    kills += 1;
                    break false;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            if finished {
                break;
            }
        }
        assert_eq!(weights(&out.join("final")), want_weights, "run {runs}");
        assert_eq!(metrics(&out), want_metrics, "run {runs}");
    }
    eprintln!("{kills} kills over {runs} resumed runs, every one exact");
}

#[test]
fn resume_refuses_other_settings_and_a_fresh_run_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 9);
    let data = dataset(dir.path(), 8, |_, _| {});
    let out = dir.path().join("run");
    run_to_end(&mut train_cmd(&model, &data, &out));

    // Without --resume the folder is not silently overwritten.
    let run = train_cmd(&model, &data, &out).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--resume"));

    // Resuming with other settings is refused.
    let run = train_cmd(&model, &data, &out)
        .args(["--resume", "--beta", "0.2"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("other settings"), "{err}");
}

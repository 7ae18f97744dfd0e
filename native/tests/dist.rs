//! Data-parallel training over MPI on the CPU (`--features mpi`; `scripts/test.sh` installs
//! OpenMPI): several ranks give the one-rank run, ZeRO-1/2 give ZeRO-0, and a job whose rank is
//! killed stops naming it, then resumes on 1, 2 or 3 ranks to the uninterrupted run's weights.
//!
//! Where the numbers may differ: with several ranks each rank backpropagates its share and the
//! gradients are summed across ranks, so the f32 sums run in another order than one rank's
//! micro-batch accumulation; the tolerance is 1e-5 (weights and metrics, lr 1e-3 over 8 steps).
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dama_tests::{dataset, max_diff, tiny_model, weights};

const TOL: f32 = 1e-5;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

fn fixture(pairs: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = tiny_model(&root, 5);
    let data = dataset(&root, pairs, |_, _| {});
    Fixture {
        _dir: dir,
        root,
        model,
        data,
    }
}

/// MDPO (the model-aware half of DAMA: margins all-gathered, ḡ and β_C from every pair) with a
/// global batch of 6 in micro-batches of 3.
fn train_cmd(f: &Fixture, out: &Path, epochs: usize, extra: &[&str]) -> Command {
    train_cmd_micro(f, out, epochs, 3, extra)
}

fn train_cmd_micro(
    f: &Fixture,
    out: &Path,
    epochs: usize,
    micro_batch: usize,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dama-native"));
    cmd.args(["train", "--device", "cpu", "--mode", "mdpo"])
        .args([
            "--batch-size",
            "6",
            "--micro-batch",
            &micro_batch.to_string(),
        ])
        .args(["--epochs", &epochs.to_string(), "--lr", "1e-3"])
        .args(["--warmup-ratio", "0", "--max-length", "512", "--seed", "3"])
        .args(["--save-every", "2", "--dist-timeout", "20"])
        .arg("--model")
        .arg(&f.model)
        .arg("--data")
        .arg(&f.data)
        .arg("--images")
        .arg(&f.root)
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Per step: loss, margin, grad norm, chosen and rejected log-probs.
fn metrics(out: &Path) -> Vec<[f64; 5]> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {l}"));
            [
                f("loss"),
                f("rewards/margins"),
                f("grad_norm"),
                f("logps/chosen"),
                f("logps/rejected"),
            ]
        })
        .collect()
}

fn assert_close_metrics(a: &[[f64; 5]], b: &[[f64; 5]], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: steps");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        for (k, (p, q)) in x.iter().zip(y).enumerate() {
            let scale = p.abs().max(1.0);
            assert!(
                (p - q).abs() <= TOL as f64 * scale,
                "{what}: step {} metric {k}: {p} vs {q}",
                step + 1
            );
        }
    }
}

fn assert_close_weights(a: &BTreeMap<String, Vec<f32>>, b: &Path, what: &str) {
    let d = max_diff(a, &weights(b));
    assert!(d <= TOL, "{what}: max abs weight difference {d}");
}

#[test]
fn two_and_three_ranks_give_the_one_rank_run_and_zero_stages_give_zero0() {
    let f = fixture(12);
    let one = f.root.join("one");
    ok(train_cmd(&f, &one, 4, &[]).output().unwrap());
    let (want_w, want_m) = (weights(&one.join("final")), metrics(&one));
    assert_eq!(want_m.len(), 8);
    // the run moved the weights: the comparison below is not of two untouched models
    assert!(max_diff(&want_w, &weights(&f.model)) > 1e-3);
    for (n, zero) in [(2, "0"), (3, "0"), (2, "1"), (2, "2"), (3, "2")] {
        let out = f.root.join(format!("n{n}-zero{zero}"));
        let run = ok(
            train_cmd(&f, &out, 4, &["--nproc", &n.to_string(), "--zero", zero])
                .output()
                .unwrap(),
        );
        let what = format!("{n} ranks, ZeRO-{zero}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            err.contains(&format!("× {n} ranks (mpi, ZeRO-{zero})")),
            "{what}: {err}"
        );
        assert_close_weights(&want_w, &out.join("final"), &what);
        assert_close_metrics(&want_m, &metrics(&out), &what);
    }
}

/// Per step: the gradient-sum buckets and how many started inside the backward (`None` when
/// the step summed after the backward).
fn overlap_counts(out: &Path) -> Vec<Option<(u64, u64)>> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let all = v["dist/buckets"].as_u64()?;
            Some((all, v["dist/buckets_in_backward"].as_u64().unwrap()))
        })
        .collect()
}

/// The sum of the gradients over the ranks started inside the backward, bucket by bucket (the
/// default with ZeRO-0/1), gives exactly the weights of the sum after the backward: with
/// micro-batches of 3 (each rank's share is one pass, the scoring pass's graph) and of 1
/// (earlier passes accumulated, the last one overlapped; a rank whose pairs are all masked
/// runs no backward and joins the sums with zeros), with buckets cutting parameters apart.
#[test]
fn gradient_sums_started_inside_the_backward_equal_the_sums_after_it() {
    let f = fixture(12);
    for micro in [3, 1] {
        let run = |name: &str, extra: &[&str]| {
            let out = f.root.join(format!("{name}-micro{micro}"));
            let mut args = vec!["--nproc", "2", "--bucket-size", "3000"];
            args.extend_from_slice(extra);
            ok(train_cmd_micro(&f, &out, 2, micro, &args).output().unwrap());
            out
        };
        let (after, inside) = (run("after", &["--no-overlap-grads"]), run("inside", &[]));
        let what = format!("micro-batch {micro}");
        let d = max_diff(
            &weights(&after.join("final")),
            &weights(&inside.join("final")),
        );
        assert_eq!(d, 0.0, "{what}: max abs weight difference {d}");
        assert_eq!(metrics(&after), metrics(&inside), "{what}: metrics");
        assert!(overlap_counts(&after).iter().all(Option::is_none), "{what}");
        let counts = overlap_counts(&inside);
        assert_eq!(counts.len(), 4, "{what}");
        for c in &counts {
            let (all, _) = c.unwrap_or_else(|| panic!("{what}: a step summed after the backward"));
            assert!(all > 2, "{what}: {all} buckets; the test wants several");
        }
        let started: u64 = counts.iter().map(|c| c.unwrap().1).sum();
        assert!(
            started > 0,
            "{what}: no bucket started inside the backward: {counts:?}"
        );
    }
}

/// The pid of the process of rank `rank` of the job writing into `out`.
fn rank_pid(out: &Path, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    let out = out.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(cmdline), Ok(environ)) = (
            std::fs::read(entry.path().join("cmdline")),
            std::fs::read(entry.path().join("environ")),
        ) else {
            continue;
        };
        let has = |buf: &[u8], s: &str| buf.split(|&b| b == 0).any(|w| w == s.as_bytes());
        if has(&cmdline, &out) && has(&environ, &want) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_stops_the_job_naming_it_and_the_run_resumes_on_one_two_or_three_ranks() {
    let f = fixture(24);
    // 4 steps per epoch, a checkpoint every 2 steps
    let epochs = 8;
    let whole = f.root.join("whole");
    ok(train_cmd(&f, &whole, epochs, &["--nproc", "2"])
        .output()
        .unwrap());
    let (want_w, want_m) = (weights(&whole.join("final")), metrics(&whole));
    assert_eq!(want_m.len(), 32);

    let killed = f.root.join("killed");
    let mut job = train_cmd(&f, &killed, epochs, &["--nproc", "2"])
        .spawn()
        .unwrap();
    let t = Instant::now();
    // wait for the first checkpoint, then SIGKILL rank 1 alone
    let pid = loop {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            job.try_wait().unwrap().is_none(),
            "the job ended before the kill"
        );
        if killed.join("checkpoints/latest").exists()
            && let Some(pid) = rank_pid(&killed, 1)
        {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let killed_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = job.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the job went on without rank 1: {err}"
    );
    assert!(
        waited < Duration::from_secs(40),
        "the job took {waited:?} to stop: {err}"
    );
    assert!(err.contains("rank 1 died"), "rank 1 not named: {err}");
    assert!(
        !killed.join("final").exists(),
        "the run finished before the kill"
    );

    // the same checkpoint resumed on 2 ranks (as saved), on 1 and on 3 (re-sharded)
    for n in [2, 1, 3] {
        let out = f.root.join(format!("resumed-{n}"));
        copy_dir(&killed, &out);
        let mut extra = vec!["--resume".to_string()];
        if n > 1 {
            extra.extend(["--nproc".to_string(), n.to_string()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let run = ok(train_cmd(&f, &out, epochs, &extra).output().unwrap());
        let what = format!("killed on 2 ranks, resumed on {n}");
        assert!(
            String::from_utf8_lossy(&run.stderr).contains("resum"),
            "{what}"
        );
        assert_close_weights(&want_w, &out.join("final"), &what);
        assert_close_metrics(&want_m, &metrics(&out), &what);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

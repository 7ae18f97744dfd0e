//! Resumable scoring as `dama-native score` uses it: results appended to a log as they come, a
//! crash mid-write survived, the run resumed where it stopped, and a final pass that writes the
//! annotated dataset with δ̄ and α_D, identical to scoring everything in one go.

mod common;

use std::io::Write;
use std::path::Path;

use common::fixtures;
use dama_core::Estimator;
use dama_data::annotated::FolderSink;
use dama_data::score_log::{Output, ScoreLog, ScoredPair, finalize};
use dama_data::split::RuleSplitter;
use dama_data::{
    DataError, ImageCheck, ImageOut, PreferencePair, ReadOptions, Records, RunInfo, Scores,
    Splitter, annotate, open_dataset,
};

const SOURCE: &str = "rlaifv/train-00000-of-00001.parquet";

fn run() -> RunInfo {
    RunInfo {
        clip_model: Some("tiny-clip".into()),
        estimator: Some(Estimator::Probs),
        splitter: Some(RuleSplitter::NAME.into()),
    }
}

fn source(images: ImageCheck) -> Records<'static> {
    open_dataset(
        &fixtures().join(SOURCE),
        None,
        ReadOptions::default().with_images(images),
    )
    .unwrap()
}

/// What the scorer computes for one pair (CLIP replaced by a function of the text).
fn score(pair: &PreferencePair) -> ScoredPair {
    let subs = RuleSplitter::new().split_pair(pair).unwrap();
    let clip = |t: &[String]| {
        t.iter()
            .map(|s| 18.0 + (s.len() % 11) as f64 * 0.5)
            .collect()
    };
    let scores = Scores {
        chosen: clip(&subs.chosen),
        rejected: clip(&subs.rejected),
    };
    ScoredPair::new(pair, subs, scores, Estimator::Probs).unwrap()
}

/// Scores at most `limit` pairs not yet in the log; returns how many it scored.
fn score_some(log_path: &Path, limit: usize) -> usize {
    let mut log = ScoreLog::open(log_path, &run()).unwrap();
    let mut n = 0;
    for pair in source(ImageCheck::Decode) {
        let pair = pair.unwrap();
        if log.contains(&pair.id) || n == limit {
            continue;
        }
        log.append(&score(&pair)).unwrap();
        n += 1;
    }
    n
}

/// The same dataset scored in memory in one go.
fn reference() -> Vec<PreferencePair> {
    let (mut pairs, _) = source(ImageCheck::Decode).read_all().unwrap();
    for p in &mut pairs {
        let s = score(p);
        p.sub_sentences = Some(s.sub_sentences);
        p.set_scores(s.scores, Estimator::Probs).unwrap();
    }
    annotate(&mut pairs, &run()).unwrap();
    pairs
}

#[test]
fn a_crash_is_resumed_and_the_result_equals_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("scores.log.jsonl");
    assert_eq!(score_some(&log, 3), 3);
    // A crash in the middle of writing the fourth result.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(br#"{"id":"train-00000-of-00001:4","text_hash":"00"#)
        .unwrap();
    drop(f);
    let resumed = ScoreLog::open(&log, &run()).unwrap();
    assert_eq!(resumed.len(), 3);
    drop(resumed);
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains(r#""text_hash":"00"#),
        "the torn line is cut off"
    );
    let remaining = score_some(&log, usize::MAX);
    let want = reference();
    assert_eq!(3 + remaining, want.len());

    // JSONL with images written to a folder next to it.
    let out = dir.path().join("annotated.jsonl");
    let mut sink = FolderSink::new(dir.path().join("annotated_images")).unwrap();
    let images = ImageOut::Sink {
        folder: "annotated_images".into(),
        sink: &mut sink,
    };
    // The final pass reads the source with the scoring pass's options, so that it skips the same
    // bad records (here: decoding, which drops the undecodable image).
    let done = finalize(
        &log,
        source(ImageCheck::Decode),
        &out,
        Output::Jsonl(images),
    )
    .unwrap();
    assert_eq!(done.header.count, want.len());
    assert_eq!(
        done.summary.skipped_total(),
        5,
        "the fixture's bad rows are skipped again"
    );
    let (got, _) = open_dataset(&out, None, ReadOptions::strict())
        .unwrap()
        .read_all()
        .unwrap();
    let header_mean = done.header.delta_mean.unwrap();
    let want_mean = dama_data::dataset_stats(&want).unwrap().delta_mean.unwrap();
    assert_eq!(
        header_mean.to_bits(),
        want_mean.to_bits(),
        "δ̄ does not depend on the order of scoring"
    );
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (
                &g.id,
                &g.sub_sentences,
                &g.scores,
                g.delta,
                g.delta_edge,
                g.alpha_d
            ),
            (
                &w.id,
                &w.sub_sentences,
                &w.scores,
                w.delta,
                w.delta_edge,
                w.alpha_d
            )
        );
        assert_eq!(g.image.bytes, w.image.bytes);
    }

    // Parquet, images embedded.
    let out = dir.path().join("annotated.parquet");
    finalize(&log, source(ImageCheck::Decode), &out, Output::Parquet).unwrap();
    let (got, _) = open_dataset(&out, None, ReadOptions::strict())
        .unwrap()
        .read_all()
        .unwrap();
    assert!(
        got.iter()
            .zip(&want)
            .all(|(g, w)| g.alpha_d == w.alpha_d && g.image.bytes == w.image.bytes)
    );
}

#[test]
fn a_crash_while_the_header_was_written_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("scores.log.jsonl");
    std::fs::write(&log, br#"{"dama_score_log":1,"clip_mo"#).unwrap();
    let reopened = ScoreLog::open(&log, &run()).unwrap();
    assert!(reopened.is_empty());
    drop(reopened);
    assert_eq!(score_some(&log, 2), 2);
    assert_eq!(ScoreLog::open(&log, &run()).unwrap().len(), 2);
}

#[test]
fn a_log_of_another_run_or_another_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("scores.log.jsonl");
    score_some(&log, 2);
    let other = RunInfo {
        clip_model: Some("another-clip".into()),
        ..run()
    };
    let err = ScoreLog::open(&log, &other).err().unwrap();
    assert!(err.to_string().contains("another-clip"), "{err}");

    // Finalising an incomplete log: an error, and no output file.
    let out = dir.path().join("out.jsonl");
    let err = finalize(
        &log,
        source(ImageCheck::Decode),
        &out,
        Output::Jsonl(ImageOut::Inline),
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::Mismatch { .. })
            && err.to_string().contains("has not been scored"),
        "{err}"
    );
    assert!(!out.exists() && !dir.path().join("out.jsonl.partial").exists());

    // A source whose text changed since scoring.
    score_some(&log, usize::MAX);
    let (mut pairs, _) = source(ImageCheck::Decode).read_all().unwrap();
    pairs[0].chosen.push_str(" Edited.");
    let changed = dama_data::read_bytes(
        "changed.jsonl",
        to_jsonl(&pairs),
        dama_data::NoImages,
        ReadOptions::default().with_images(ImageCheck::Load),
    )
    .unwrap();
    let err = finalize(&log, changed, &out, Output::Jsonl(ImageOut::Inline)).unwrap_err();
    assert!(
        err.to_string()
            .contains("has changed in the source since it was scored"),
        "{err}"
    );
}

/// Pairs as plain JSONL with inline images (ids kept).
fn to_jsonl(pairs: &[PreferencePair]) -> Vec<u8> {
    use base64::Engine;
    let mut out = Vec::new();
    for p in pairs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(p.image.bytes.as_ref().unwrap());
        let line = serde_json::json!({"id": p.id, "image_b64": b64, "question": p.question, "chosen": p.chosen, "rejected": p.rejected});
        writeln!(out, "{line}").unwrap();
    }
    out
}

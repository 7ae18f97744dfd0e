//! The annotated schema end to end: scored and curated pairs written as JSONL (images inline,
//! in a sink, or referenced) and as parquet, read back unchanged, from files and from bytes.

mod common;

use common::fixtures;
use dama_core::{Estimator, alpha_d};
use dama_data::split::RuleSplitter;
use dama_data::{
    AnnotatedJsonlWriter, AnnotatedParquetWriter, DataError, Header, ImageCheck, ImageMap,
    ImageOut, NoImages, PreferencePair, ReadMode, ReadOptions, RunInfo, Scores, Status, annotate,
    open_dataset, read_bytes,
};

fn run() -> RunInfo {
    RunInfo {
        clip_model: Some("openai/clip-vit-large-patch14-336".into()),
        estimator: Some(Estimator::Probs),
        splitter: Some("rules-v1".into()),
    }
}

/// A stand-in for CLIP (this crate does not depend on dama-clip): a score per sub-sentence that
/// depends on its text, so that δ differs from pair to pair.
fn fake_clip(texts: &[String]) -> Vec<f64> {
    texts
        .iter()
        .map(|t| 20.0 + (t.len() % 13) as f64 * 0.37)
        .collect()
}

/// The RLAIF-V fixture's good pairs, split, scored, and curated a little.
fn curated() -> (Vec<PreferencePair>, Header) {
    let path = fixtures().join("rlaifv/train-00000-of-00001.parquet");
    let (mut pairs, _) = open_dataset(&path, None, ReadOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    let splitter = RuleSplitter::new();
    for p in &mut pairs {
        p.image.decoded = None; // not part of the schema: compared without it
        let subs = dama_data::Splitter::split_pair(&splitter, p).unwrap();
        let scores = Scores {
            chosen: fake_clip(&subs.chosen),
            rejected: fake_clip(&subs.rejected),
        };
        p.sub_sentences = Some(subs);
        p.set_scores(scores, Estimator::Probs).unwrap();
    }
    pairs[1].annotation.status = Status::Drop;
    pairs[2].swap(Estimator::Probs).unwrap();
    pairs[3].annotation.tags = vec!["hallucination".into(), "counting".into()];
    pairs[3].annotation.note = "the rejected answer invents a cat".into();
    pairs[3].annotation.reviewed = true;
    pairs[4].logps = Some(serde_json::json!([-10.5, -12.25]));
    let header = annotate(&mut pairs, &run()).unwrap();
    (pairs, header)
}

/// Equal in everything the schema carries (the decoded pixels are not part of it).
#[track_caller]
fn assert_same(got: &[PreferencePair], want: &[PreferencePair]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let mut g = g.clone();
        g.image.decoded = None;
        assert_eq!(&g, w, "{}", w.id);
    }
}

fn all(mode: ReadMode) -> ReadOptions {
    ReadOptions {
        mode,
        images: ImageCheck::Load,
        include_dropped: true,
        ..ReadOptions::default()
    }
}

#[test]
fn header_and_alpha_d() {
    let (pairs, header) = curated();
    assert_eq!(
        (header.count, header.kept, header.scored),
        (pairs.len(), pairs.len() - 1, pairs.len() - 1)
    );
    let kept: Vec<f64> = pairs
        .iter()
        .filter(|p| p.is_kept())
        .map(|p| p.delta.unwrap())
        .collect();
    let mean = header.delta_mean.unwrap();
    assert!((mean - kept.iter().sum::<f64>() / kept.len() as f64).abs() < 1e-15);
    for p in &pairs {
        match p.is_kept() {
            true => assert_eq!(p.alpha_d, Some(alpha_d(p.delta.unwrap(), mean)), "{}", p.id),
            false => assert_eq!(p.alpha_d, None),
        }
    }
    // Every δ, the swapped pair's included, is the one its stored scores give.
    assert!(pairs[2].annotation.swapped);
    for p in &pairs {
        let s = p.scores.as_ref().unwrap();
        assert_eq!(
            p.delta,
            Some(
                dama_core::delta(&s.chosen, &s.rejected, Estimator::Probs)
                    .unwrap()
                    .delta
            ),
            "{}",
            p.id
        );
    }
}

#[test]
fn jsonl_with_inline_images_round_trips_through_bytes() {
    let (pairs, header) = curated();
    let mut w = AnnotatedJsonlWriter::new(
        "curated.jsonl",
        Vec::new(),
        header.clone(),
        ImageOut::Inline,
    )
    .unwrap();
    for p in &pairs {
        w.write(p).unwrap();
    }
    let bytes = w.finish().unwrap();
    let records = read_bytes(
        "curated.jsonl",
        bytes.clone(),
        NoImages,
        all(ReadMode::Strict),
    )
    .unwrap();
    assert_eq!(records.header(), Some(&header));
    let (back, summary) = records.read_all().unwrap();
    assert_same(&back, &pairs);
    assert_eq!(summary.skipped_total(), 0);
    // The trainer's view: dropped pairs left out, images decoded, α_D on every pair.
    let (train, summary) = read_bytes("curated.jsonl", bytes, NoImages, ReadOptions::strict())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!((train.len(), summary.dropped), (pairs.len() - 1, 1));
    assert!(
        train
            .iter()
            .all(|p| p.alpha_d.is_some() && p.image.decoded.is_some())
    );
}

#[test]
fn jsonl_with_an_image_sink_and_a_folder_on_disk() {
    let (pairs, header) = curated();
    let mut picked = ImageMap::new();
    let mut w = AnnotatedJsonlWriter::new(
        "x.jsonl",
        Vec::new(),
        header.clone(),
        ImageOut::Sink {
            folder: "x_images".into(),
            sink: &mut picked,
        },
    )
    .unwrap();
    for p in &pairs {
        w.write(p).unwrap();
    }
    let bytes = w.finish().unwrap();
    assert_eq!(picked.len(), pairs.len());
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap();
    assert!(
        std::str::from_utf8(first_line)
            .unwrap()
            .contains(r#""images":"x_images""#)
    );
    let (back, _) = read_bytes(
        "x.jsonl",
        bytes.clone(),
        picked.clone(),
        all(ReadMode::Strict),
    )
    .unwrap()
    .read_all()
    .unwrap();
    for (b, p) in back.iter().zip(&pairs) {
        assert_eq!(b.image.bytes, p.image.bytes);
        assert_eq!(
            b.image.name.as_deref(),
            Some(
                format!(
                    "{}.{}",
                    p.id.replace(':', "_"),
                    dama_data::image::extension_of(p.image.bytes.as_ref().unwrap())
                )
                .as_str()
            )
        );
    }
    // The same on disk: the header's folder resolves next to the file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.jsonl"), &bytes).unwrap();
    let mut folder = dama_data::annotated::FolderSink::new(dir.path().join("x_images")).unwrap();
    for name in picked.names() {
        dama_data::ImageSink::put(&mut folder, name, picked.get(name).unwrap()).unwrap();
    }
    let (from_disk, _) = open_dataset(&dir.path().join("x.jsonl"), None, all(ReadMode::Strict))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(from_disk.len(), pairs.len());
    assert!(
        from_disk
            .iter()
            .zip(&pairs)
            .all(|(a, b)| a.image.bytes == b.image.bytes)
    );
}

#[test]
fn parquet_round_trips_and_keeps_row_groups_small() {
    let (pairs, header) = curated();
    let mut w = AnnotatedParquetWriter::new("curated.parquet", Vec::new(), header.clone()).unwrap();
    for p in &pairs {
        w.write(p).unwrap();
    }
    let bytes = w.finish().unwrap();
    let records = read_bytes(
        "curated.parquet",
        bytes.clone(),
        NoImages,
        all(ReadMode::Strict),
    )
    .unwrap();
    assert_eq!(records.header(), Some(&header));
    let (back, _) = records.read_all().unwrap();
    assert_same(&back, &pairs);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curated.parquet");
    std::fs::write(&path, &bytes).unwrap();
    let (from_disk, _) = open_dataset(&path, None, all(ReadMode::Strict))
        .unwrap()
        .read_all()
        .unwrap();
    assert_same(&from_disk, &pairs);
}

#[test]
fn referenced_images_stay_in_their_folder() {
    let path = fixtures().join("jsonl/pairs.jsonl");
    let images = fixtures().join("jsonl/images");
    let options = ReadOptions::default().with_images(ImageCheck::Skip);
    let (mut pairs, _) = open_dataset(&path, Some(&images), options)
        .unwrap()
        .read_all()
        .unwrap();
    let header = annotate(&mut pairs, &RunInfo::default()).unwrap();
    assert_eq!(
        header.delta_mean, None,
        "an unscored dataset is written plain"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain.jsonl");
    let folder = images.display().to_string(); // absolute: found from anywhere
    let mut w = AnnotatedJsonlWriter::new(
        "plain.jsonl",
        std::fs::File::create(&out).unwrap(),
        header,
        ImageOut::Reference { folder },
    )
    .unwrap();
    for p in &pairs {
        w.write(p).unwrap();
    }
    w.finish().unwrap();
    // The one pair whose image file never existed is still missing.
    let (back, summary) = open_dataset(&out, None, ReadOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!((back.len(), summary.skipped_total()), (pairs.len() - 1, 1));
    assert_eq!(
        summary.skipped.get(&dama_data::SkipReason::MissingImage),
        Some(&1)
    );
    assert!(
        back.iter()
            .all(|p| p.image.decoded.is_some() && p.alpha_d.is_none())
    );
}

#[test]
fn broken_annotated_files() {
    let (pairs, header) = curated();
    // A header that promises more than was written.
    let mut w =
        AnnotatedJsonlWriter::new("short.jsonl", Vec::new(), header.clone(), ImageOut::Inline)
            .unwrap();
    w.write(&pairs[0]).unwrap();
    let err = w.finish().unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the header promises {} records, 1 were written",
            pairs.len()
        )),
        "{err}"
    );
    // Parquet embeds images: a pair without bytes is refused.
    let mut w = AnnotatedParquetWriter::new("p.parquet", Vec::new(), header.clone()).unwrap();
    let mut bare = pairs[0].clone();
    bare.image.bytes = None;
    assert!(
        w.write(&bare)
            .unwrap_err()
            .to_string()
            .contains("has no image bytes loaded")
    );
    // A future schema version.
    let future = b"{\"dama_annotated\": 9, \"count\": 0}\n".to_vec();
    let err = read_bytes("future.jsonl", future, NoImages, ReadOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, DataError::UnsupportedVersion { found: 9, .. }),
        "{err}"
    );
    // A scored file whose kept pair lost its α_D.
    let mut w = AnnotatedJsonlWriter::new(
        "a.jsonl",
        Vec::new(),
        Header { count: 1, ..header },
        ImageOut::Inline,
    )
    .unwrap();
    let mut stale = pairs[0].clone();
    stale.alpha_d = None;
    w.write(&stale).unwrap();
    let bytes = w.finish().unwrap();
    let err = read_bytes("a.jsonl", bytes, NoImages, ReadOptions::strict())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "a.jsonl:2 (record `{}`): field `alpha_d` is missing",
            pairs[0].id
        )
    );
}

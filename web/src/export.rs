//! The curated set as annotated JSONL (schema v1, `crates/dama-data/README.md`), the format
//! `dama-native train` reads: `dama_data::annotate` recomputes δ̄ over the kept pairs and α_D of
//! each (dama-core), dropped pairs stay in the file marked `drop`, and images travel inline
//! (`image_b64`) so that the download is one self-contained file.

use dama_data::{AnnotatedJsonlWriter, ImageOut, RunInfo};

use crate::session::Session;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExportError {
    #[error("{0} kept pair(s) have no scores yet (edited or not scored): score them, or drop them")]
    Unscored(usize),
    #[error("no pair is kept")]
    NothingKept,
    #[error("{0}")]
    Data(String),
}

/// `<stem>.curated.jsonl` for `pairs.jsonl`, `train-00000.parquet`, …
pub fn file_name(dataset: &str) -> String {
    let name = dataset.rsplit(['/', '\\']).next().unwrap_or(dataset);
    let stem = name.strip_suffix(".curated.jsonl").unwrap_or(name);
    let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
    format!("{stem}.curated.jsonl")
}

/// The export's file name and bytes.
pub fn export_jsonl(session: &Session) -> Result<(String, Vec<u8>), ExportError> {
    let unscored = session
        .pairs
        .iter()
        .filter(|p| p.is_kept() && p.delta.is_none())
        .count();
    if unscored > 0 {
        return Err(ExportError::Unscored(unscored));
    }
    if !session.pairs.iter().any(|p| p.is_kept()) {
        return Err(ExportError::NothingKept);
    }
    let data = |e: dama_data::DataError| ExportError::Data(e.to_string());
    let mut pairs = session.pairs.clone();
    let run = RunInfo {
        clip_model: session.clip_model.clone(),
        estimator: Some(session.estimator),
        splitter: Some(session.splitter.clone()),
    };
    let header = dama_data::annotate(&mut pairs, &run).map_err(data)?;
    let name = file_name(&session.name);
    let mut writer =
        AnnotatedJsonlWriter::new(&name, Vec::new(), header, ImageOut::Inline).map_err(data)?;
    for p in &pairs {
        writer.write(p).map_err(data)?;
    }
    Ok((name, writer.finish().map_err(data)?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::load::demo_session;
    use crate::session::{Side, subs_key};
    use dama_data::{ImageCheck, NoImages, ReadOptions, Scores, Status};

    /// Deterministic stand-in scores (true facts high, the rest low), under the model name
    /// "synthetic scores", so that export tests need no CLIP.
    pub(crate) fn score_all(s: &mut Session) {
        for i in 0..s.len() {
            let p = &s.pairs[i];
            let subs = p.sub_sentences.clone().unwrap();
            let score = |v: &[String], base: f64| -> Vec<f64> {
                v.iter()
                    .enumerate()
                    .map(|(k, t)| base + (t.len() % 7) as f64 * 0.1 + k as f64 * 0.01)
                    .collect()
            };
            let scores = Scores {
                chosen: score(&subs.chosen, 25.0),
                rejected: score(&subs.rejected, 24.0),
            };
            let id = p.id.clone();
            s.apply_scores("synthetic scores", &id, subs_key(&subs), scores)
                .unwrap();
        }
    }

    #[test]
    fn names() {
        assert_eq!(file_name("data/pairs.jsonl"), "pairs.curated.jsonl");
        assert_eq!(
            file_name("train-00000.parquet"),
            "train-00000.curated.jsonl"
        );
        assert_eq!(file_name("pairs.curated.jsonl"), "pairs.curated.jsonl");
        assert_eq!(file_name("noext"), "noext.curated.jsonl");
    }

    #[test]
    fn unscored_kept_pairs_block_the_export() {
        let mut s = demo_session();
        assert_eq!(export_jsonl(&s), Err(ExportError::Unscored(48)));
        score_all(&mut s);
        s.edit_sub_sentence(0, Side::Chosen, 0, "A new sentence.");
        assert_eq!(export_jsonl(&s), Err(ExportError::Unscored(1)));
        s.set_status(0, Status::Drop);
        assert!(export_jsonl(&s).is_ok(), "a dropped pair needs no scores");
        for i in 0..s.len() {
            s.set_status(i, Status::Drop);
        }
        assert_eq!(export_jsonl(&s), Err(ExportError::NothingKept));
    }

    #[test]
    fn the_export_reads_back_with_delta_mean_over_the_kept_pairs() {
        let mut s = demo_session();
        score_all(&mut s);
        s.set_status(1, Status::Drop);
        s.swap(2).unwrap();
        s.set_tags(4, "odd");
        let (name, bytes) = export_jsonl(&s).unwrap();
        assert_eq!(name, "demo.curated.jsonl");
        let options = ReadOptions {
            include_dropped: true,
            ..ReadOptions::strict().with_images(ImageCheck::Load)
        };
        let records = dama_data::read_bytes(&name, bytes, NoImages, options).unwrap();
        let header = records.header().cloned().unwrap();
        let (pairs, _) = records.read_all().unwrap();
        let kept: Vec<f64> = s
            .pairs
            .iter()
            .filter(|p| p.is_kept())
            .map(|p| p.delta.unwrap())
            .collect();
        let mut sorted = kept.clone();
        sorted.sort_by(f64::total_cmp);
        let mean = dama_core::delta_mean(&sorted).unwrap();
        assert_eq!(header.delta_mean, Some(mean));
        assert_eq!((header.count, header.kept, header.scored), (48, 47, 47));
        assert_eq!(header.clip_model.as_deref(), Some("synthetic scores"));
        assert_eq!(pairs[1].annotation.status, Status::Drop);
        assert_eq!(pairs[1].alpha_d, None);
        assert!(pairs[2].annotation.swapped);
        assert_eq!(pairs[4].annotation.tags, ["odd"]);
        for (p, q) in pairs.iter().zip(&s.pairs) {
            assert_eq!(p.image.bytes, q.image.bytes, "images inline, unchanged");
            assert_eq!(p.delta, q.delta);
            if p.is_kept() {
                assert_eq!(p.alpha_d, Some(dama_core::alpha_d(p.delta.unwrap(), mean)));
            }
        }
    }
}

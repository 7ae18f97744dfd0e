//! The curated set as annotated JSONL (schema v1, `crates/dama-data/README.md`), the format
//! `dama-native train` reads: δ̄ recomputed over the kept pairs and α_D of each (dama-core),
//! dropped pairs kept in the file marked `drop`, images inline (`image_b64`) so that the download
//! is one self-contained file, and the answers as edited (what training reads).
//!
//! The file is produced a chunk at a time ([`Export::next_chunk`]), so the browser can stream it
//! to disk (or into a Blob built from parts) without ever holding it whole in wasm memory.
//!
//! Before exporting, [`plan`] names what stands in the way: kept pairs never scored while others
//! are (δ̄ would be over a part), and pairs edited after scoring. The person then chooses:
//! score them, export edited pairs with their old δ flagged ([`STALE_TAG`]), or export without
//! any scores (the curation alone).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

use dama_data::{AnnotatedJsonlWriter, DatasetStats, ImageOut, PreferencePair, RunInfo};

use crate::session::{ScoreState, Session};

/// The tag an export adds to a pair written with the δ it had before an edit.
pub const STALE_TAG: &str = "stale-delta";

/// How many ids a message names before "and N more".
const NAMED: usize = 5;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExportError {
    #[error(
        "{} kept pair(s) have no scores yet while the others have: {}. Score them, drop them, or export without scores",
        .0.len(), names(.0)
    )]
    Unscored(Vec<String>),
    #[error(
        "{} kept pair(s) were edited after scoring and wait for new scores: {}. Re-score them, or export them with their old δ flagged `{STALE_TAG}`",
        .0.len(), names(.0)
    )]
    Pending(Vec<String>),
    #[error("no pair is kept")]
    NothingKept,
    #[error("the pairs changed during the export (a curation or a score arrived); export again")]
    Changed,
    #[error("{0}")]
    Data(String),
}

/// "a, b, c, d, e and 3 more".
pub fn names(ids: &[String]) -> String {
    let shown = ids
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match ids.len().saturating_sub(NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// What the scores of the export are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every kept pair with its scores (or none scored at all).
    #[default]
    Scored,
    /// Pairs edited after scoring carry their old δ, tagged [`STALE_TAG`].
    OldScoresFlagged,
    /// No scores at all: the curation alone, to score later (`dama-native score`).
    WithoutScores,
}

/// What stands between the session and an export in [`Mode::Scored`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Kept pairs without δ while other kept pairs have one.
    pub unscored: Vec<usize>,
    /// Kept pairs edited after scoring, waiting for new scores.
    pub pending: Vec<usize>,
    pub kept: usize,
}

impl Plan {
    pub fn is_ready(&self) -> bool {
        self.unscored.is_empty() && self.pending.is_empty()
    }
}

pub fn plan(session: &Session) -> Plan {
    let mut unscored = Vec::new();
    let mut pending = Vec::new();
    let mut scored = 0;
    let mut kept = 0;
    for i in 0..session.len() {
        if !session.pairs[i].is_kept() {
            continue;
        }
        kept += 1;
        match session.score_state(i) {
            ScoreState::Scored => scored += 1,
            ScoreState::Pending { .. } => pending.push(i),
            ScoreState::Unscored => unscored.push(i),
        }
    }
    if scored == 0 && pending.is_empty() {
        // Nothing scored: a plain (unscored) annotated file.
        unscored.clear();
    }
    Plan {
        unscored,
        pending,
        kept,
    }
}

/// `<stem>.curated.jsonl` for `pairs.jsonl`, `train-00000.parquet`, …
pub fn file_name(dataset: &str) -> String {
    let name = dataset.rsplit(['/', '\\']).next().unwrap_or(dataset);
    let stem = name.strip_suffix(".curated.jsonl").unwrap_or(name);
    let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
    format!("{stem}.curated.jsonl")
}

/// The writer's output, shared so that chunks can be taken out between pairs.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An export under way.
pub struct Export {
    pub name: String,
    mode: Mode,
    revision: u64,
    stats: DatasetStats,
    /// Pairs written with their old δ ([`Mode::OldScoresFlagged`]).
    flagged: HashMap<usize, PreferencePair>,
    writer: Option<AnnotatedJsonlWriter<'static, Shared>>,
    out: Shared,
    next: usize,
    total: usize,
    pub bytes: u64,
}

fn data(e: dama_data::DataError) -> ExportError {
    ExportError::Data(e.to_string())
}

impl Export {
    /// Checks the session against `mode` and writes the header.
    pub fn start(session: &Session, mode: Mode) -> Result<Export, ExportError> {
        let p = plan(session);
        if p.kept == 0 {
            return Err(ExportError::NothingKept);
        }
        let ids = |v: &[usize]| v.iter().map(|&i| session.pairs[i].id.clone()).collect();
        if mode != Mode::WithoutScores && !p.unscored.is_empty() {
            return Err(ExportError::Unscored(ids(&p.unscored)));
        }
        if mode == Mode::Scored && !p.pending.is_empty() {
            return Err(ExportError::Pending(ids(&p.pending)));
        }
        let mut flagged = HashMap::new();
        if mode == Mode::OldScoresFlagged {
            for &i in &p.pending {
                let b = session
                    .before_edit(i)
                    .expect("pending pairs have old scores");
                let mut pair = session.pairs[i].clone();
                pair.scores = None;
                pair.delta = b.delta;
                pair.delta_edge = b.delta_edge;
                if !pair.annotation.tags.iter().any(|t| t == STALE_TAG) {
                    pair.annotation.tags.push(STALE_TAG.to_owned());
                }
                flagged.insert(i, pair);
            }
        }
        let stats = if mode == Mode::WithoutScores {
            DatasetStats {
                count: session.len(),
                kept: p.kept,
                scored: 0,
                delta_mean: None,
                edge_counts: Default::default(),
                bands: None,
            }
        } else {
            let view = (0..session.len()).map(|i| flagged.get(&i).unwrap_or(&session.pairs[i]));
            dama_data::dataset_stats(view).map_err(data)?
        };
        let run = RunInfo {
            clip_model: session
                .clip_model
                .clone()
                .filter(|_| mode != Mode::WithoutScores),
            estimator: Some(session.estimator),
            splitter: Some(session.splitter.clone()),
        };
        let name = file_name(&session.name);
        let out = Shared::default();
        let writer =
            AnnotatedJsonlWriter::new(&name, out.clone(), stats.header(&run), ImageOut::Inline)
                .map_err(data)?;
        Ok(Export {
            name,
            mode,
            revision: session.revision(),
            stats,
            flagged,
            writer: Some(writer),
            out,
            next: 0,
            total: session.len(),
            bytes: 0,
        })
    }

    /// Pairs written so far, of all.
    pub fn progress(&self) -> (usize, usize) {
        (self.next, self.total)
    }

    /// The next piece of the file, about `target` bytes (whole lines); `None` once all of it was
    /// handed out. Fails if the session changed since the export started.
    pub fn next_chunk(
        &mut self,
        session: &Session,
        target: usize,
    ) -> Result<Option<Vec<u8>>, ExportError> {
        if session.revision() != self.revision || session.len() != self.total {
            return Err(ExportError::Changed);
        }
        if let Some(writer) = &mut self.writer {
            while self.next < self.total && self.out.0.borrow().len() < target {
                let i = self.next;
                let mut pair = self.flagged.get(&i).unwrap_or(&session.pairs[i]).clone();
                if self.mode == Mode::WithoutScores {
                    pair.scores = None;
                    pair.delta = None;
                    pair.delta_edge = None;
                }
                pair.alpha_d = self.stats.alpha_d(pair.is_kept(), pair.delta);
                writer.write(&pair).map_err(data)?;
                self.next += 1;
            }
            if self.next == self.total {
                self.writer
                    .take()
                    .expect("present")
                    .finish()
                    .map_err(data)?;
            }
        }
        let chunk = std::mem::take(&mut *self.out.0.borrow_mut());
        self.bytes += chunk.len() as u64;
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

/// The whole export at once: its file name and bytes.
pub fn export_jsonl(session: &Session, mode: Mode) -> Result<(String, Vec<u8>), ExportError> {
    let mut export = Export::start(session, mode)?;
    let mut bytes = Vec::new();
    while let Some(chunk) = export.next_chunk(session, 1 << 20)? {
        bytes.extend(chunk);
    }
    Ok((export.name, bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::load::{DEMO_PAIRS, demo_session};
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
    fn unscored_kept_pairs_block_the_export_by_name() {
        let mut s = demo_session();
        let (_, bytes) = export_jsonl(&s, Mode::Scored).unwrap();
        let header = read(bytes).0;
        assert_eq!(
            (header.delta_mean, header.scored),
            (None, 0),
            "nothing scored: a plain export"
        );
        score_all(&mut s);
        let ids: Vec<String> = s.pairs[..7].iter().map(|p| p.id.clone()).collect();
        for i in 0..7 {
            s.pairs[i].scores = None;
            s.pairs[i].delta = None;
        }
        let err = export_jsonl(&s, Mode::Scored).unwrap_err();
        assert_eq!(err, ExportError::Unscored(ids.clone()));
        let text = err.to_string();
        assert!(
            text.starts_with("7 kept pair(s) have no scores yet"),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}, {}", ids[0], ids[1])) && text.contains("and 2 more"),
            "{text}"
        );
        for i in 0..7 {
            s.set_status(i, Status::Drop);
        }
        assert!(
            export_jsonl(&s, Mode::Scored).is_ok(),
            "a dropped pair needs no scores"
        );
        for i in 0..s.len() {
            s.set_status(i, Status::Drop);
        }
        assert_eq!(
            export_jsonl(&s, Mode::Scored),
            Err(ExportError::NothingKept)
        );
    }

    fn read(bytes: Vec<u8>) -> (dama_data::Header, Vec<dama_data::PreferencePair>) {
        let options = ReadOptions {
            include_dropped: true,
            ..ReadOptions::strict().with_images(ImageCheck::Load)
        };
        let records = dama_data::read_bytes("x.jsonl", bytes, NoImages, options).unwrap();
        let header = records.header().cloned().unwrap();
        (header, records.read_all().unwrap().0)
    }

    #[test]
    fn an_edit_after_scoring_is_named_and_can_go_out_flagged_or_unscored() {
        let mut s = demo_session();
        score_all(&mut s);
        let old = s.pairs[5].delta;
        s.edit_sub_sentence(5, Side::Chosen, 0, "A new sentence.");
        let id = s.pairs[5].id.clone();
        assert_eq!(
            export_jsonl(&s, Mode::Scored),
            Err(ExportError::Pending(vec![id.clone()]))
        );
        assert!(
            ExportError::Pending(vec![id.clone()])
                .to_string()
                .contains(STALE_TAG)
        );
        let (_, bytes) = export_jsonl(&s, Mode::OldScoresFlagged).unwrap();
        let (header, pairs) = read(bytes);
        assert_eq!((header.kept, header.scored), (DEMO_PAIRS, DEMO_PAIRS));
        let p = &pairs[5];
        assert_eq!((p.delta, p.scores.as_ref()), (old, None));
        assert_eq!(
            p.sub_sentences.as_ref().unwrap().chosen[0],
            "A new sentence."
        );
        assert!(p.annotation.tags.iter().any(|t| t == STALE_TAG));
        assert!(p.alpha_d.is_some());
        assert!(
            !s.pairs[5].annotation.tags.iter().any(|t| t == STALE_TAG),
            "the session is untouched"
        );
        let (_, bytes) = export_jsonl(&s, Mode::WithoutScores).unwrap();
        let (header, pairs) = read(bytes);
        assert_eq!(
            (header.delta_mean, header.scored, header.clip_model),
            (None, 0, None)
        );
        assert!(
            pairs
                .iter()
                .all(|p| p.delta.is_none() && p.scores.is_none() && p.alpha_d.is_none())
        );
        assert_eq!(
            pairs[5].sub_sentences.as_ref().unwrap().chosen[0],
            "A new sentence."
        );
    }

    #[test]
    fn an_edited_answer_reaches_the_export_and_chunks_make_the_whole_file() {
        let mut s = demo_session();
        score_all(&mut s);
        let text = "There is one big red square. Nothing else is there.";
        let r = s.edit_answer(2, Side::Chosen, text).unwrap();
        let subs = s.pairs[2].sub_sentences.clone().unwrap();
        let id = s.pairs[2].id.clone();
        let sc = Scores {
            chosen: vec![25.0; subs.chosen.len()],
            rejected: vec![20.0; subs.rejected.len()],
        };
        s.apply_scores("synthetic scores", &id, r.key, sc).unwrap();
        let (_, whole) = export_jsonl(&s, Mode::Scored).unwrap();
        let mut e = Export::start(&s, Mode::Scored).unwrap();
        let mut parts = Vec::new();
        while let Some(c) = e.next_chunk(&s, 2000).unwrap() {
            parts.push(c);
        }
        assert!(parts.len() > 5, "small chunks: {}", parts.len());
        assert_eq!(parts.concat(), whole);
        assert_eq!(e.bytes, whole.len() as u64);
        let (_, pairs) = read(whole);
        assert_eq!(pairs[2].chosen, text);
        assert_eq!(
            pairs[2].sub_sentences.as_ref().unwrap().chosen,
            ["There is one big red square.", "Nothing else is there."]
        );
        // A change during an export stops it.
        let mut e = Export::start(&s, Mode::Scored).unwrap();
        e.next_chunk(&s, 100).unwrap();
        s.set_note(0, "late");
        assert_eq!(e.next_chunk(&s, 100), Err(ExportError::Changed));
        assert_eq!(super::names(&["a".into(), "b".into()]), "a, b");
    }

    #[test]
    fn the_export_reads_back_with_delta_mean_over_the_kept_pairs() {
        let mut s = demo_session();
        score_all(&mut s);
        s.set_status(1, Status::Drop);
        s.swap(2).unwrap();
        s.set_tags(4, "odd");
        s.set_reviewed(3, true);
        let (name, bytes) = export_jsonl(&s, Mode::Scored).unwrap();
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
        assert_eq!(
            (header.count, header.kept, header.scored),
            (DEMO_PAIRS, DEMO_PAIRS - 1, DEMO_PAIRS - 1)
        );
        assert_eq!(header.clip_model.as_deref(), Some("synthetic scores"));
        assert_eq!(pairs[1].annotation.status, Status::Drop);
        assert_eq!(pairs[1].alpha_d, None);
        assert!(pairs[2].annotation.swapped);
        assert_eq!(pairs[4].annotation.tags, ["odd"]);
        let reviewed: Vec<usize> = (0..pairs.len())
            .filter(|&i| pairs[i].annotation.reviewed)
            .collect();
        assert_eq!(reviewed, [3], "the reviewed flag travels with the export");
        for (p, q) in pairs.iter().zip(&s.pairs) {
            assert_eq!(p.image.bytes, q.image.bytes, "images inline, unchanged");
            assert_eq!(p.delta, q.delta);
            if p.is_kept() {
                assert_eq!(p.alpha_d, Some(dama_core::alpha_d(p.delta.unwrap(), mean)));
            }
        }
    }
}

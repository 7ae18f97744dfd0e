//! Resumable scoring. The scorer appends each pair's result to a log as soon as it has it, so a
//! crash loses at most the pair in flight; on restart the log lists the pairs already done. δ̄
//! is only known once every pair is scored, so a final pass ([`finalize`]) reads the log,
//! computes δ̄, and writes the annotated dataset with α_D, reading the source again for the
//! text and images.
//!
//! The log is JSONL: a header `{"dama_score_log": 1, "clip_model", "estimator", "splitter"}`
//! that must match the resuming run, then one [`ScoredPair`] per line.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use dama_core::{DeltaEdge, Estimator};
use serde::{Deserialize, Serialize};

use crate::annotated::stats::StatsBuilder;
use crate::annotated::{AnnotatedJsonlWriter, AnnotatedParquetWriter, Header, ImageOut, RunInfo};
use crate::error::{DataError, Location};
use crate::read::Records;
use crate::record::{PreferencePair, Scores, SubSentences};
use crate::summary::ReadSummary;

const LOG_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct LogHeader {
    dama_score_log: u32,
    #[serde(flatten)]
    run: RunInfo,
}

/// One scored pair, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredPair {
    pub id: String,
    /// A fingerprint of the pair's question and answers: finalising against a source whose text
    /// changed since scoring is an error, not a silent mismatch.
    pub text_hash: String,
    pub sub_sentences: SubSentences,
    pub scores: Scores,
    pub delta: f64,
    pub delta_edge: DeltaEdge,
}

impl ScoredPair {
    /// The result for `pair`, with δ from `dama_core::delta`.
    pub fn new(
        pair: &PreferencePair,
        sub_sentences: SubSentences,
        scores: Scores,
        estimator: Estimator,
    ) -> Result<Self, DataError> {
        let mut scored = PreferencePair {
            sub_sentences: Some(sub_sentences),
            ..PreferencePair::new(&pair.id, Default::default(), "", "", "")
        };
        scored.set_scores(scores, estimator)?;
        Ok(Self {
            id: pair.id.clone(),
            text_hash: text_hash(pair),
            sub_sentences: scored.sub_sentences.expect("set above"),
            scores: scored.scores.expect("set by set_scores"),
            delta: scored.delta.expect("set by set_scores"),
            delta_edge: scored.delta_edge.expect("set by set_scores"),
        })
    }
}

/// FNV-1a (64-bit) of question, chosen and rejected, as hex: a change detector, not security.
fn text_hash(pair: &PreferencePair) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&pair.question, &pair.chosen, &pair.rejected] {
        for b in part.bytes().chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The log, open for appending.
pub struct ScoreLog {
    path: PathBuf,
    out: BufWriter<File>,
    done: HashSet<String>,
}

impl ScoreLog {
    /// Creates the log, or reopens it to resume: the header must match `run`, an incomplete
    /// last line (a crash mid-write) is cut off, and the ids already scored are listed.
    pub fn open(path: &Path, run: &RunInfo) -> Result<Self, DataError> {
        let label = path.display().to_string();
        let io = |e| DataError::io(&label, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut done = HashSet::new();
        // No complete line yet (new, or a crash while the header was written): start afresh.
        let mut head = Vec::new();
        BufReader::new(&mut file)
            .read_until(b'\n', &mut head)
            .map_err(io)?;
        if head.last() != Some(&b'\n') {
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            let header = LogHeader {
                dama_score_log: LOG_VERSION,
                run: run.clone(),
            };
            writeln!(
                file,
                "{}",
                serde_json::to_string(&header).expect("serialisable")
            )
            .map_err(io)?;
        } else {
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            let (found, entries, complete_len) = read_log(&label, BufReader::new(&mut file))?;
            if found != *run {
                return Err(DataError::Mismatch {
                    file: label,
                    what: format!(
                        "was scored with {found:?}, this run is {run:?}: finish it with the same settings, or start a new log"
                    ),
                });
            }
            done.extend(entries.into_iter().map(|e| e.id));
            file.set_len(complete_len).map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            done,
        })
    }

    pub fn contains(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// Pairs scored so far.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Appends one result and flushes it to the operating system.
    pub fn append(&mut self, scored: &ScoredPair) -> Result<(), DataError> {
        let line = serde_json::to_string(scored).map_err(|e| DataError::Format {
            at: Location::file(self.path.display().to_string()),
            what: format!("pair `{}` cannot be logged: {e}", scored.id),
        })?;
        let io = |e| DataError::io(self.path.display().to_string(), e);
        writeln!(self.out, "{line}").map_err(io)?;
        self.out.flush().map_err(io)?;
        self.done.insert(scored.id.clone());
        Ok(())
    }
}

/// The run, the entries (a later entry for an id replaces an earlier one, in place) and the
/// length of the complete lines.
fn read_log(
    label: &str,
    mut reader: impl BufRead,
) -> Result<(RunInfo, Vec<ScoredPair>, u64), DataError> {
    let mut complete_len = 0u64;
    let mut header: Option<RunInfo> = None;
    let mut entries: Vec<ScoredPair> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut line_no = 0;
    loop {
        let mut buf = Vec::new();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(label, e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break; // end, or a line cut short by a crash: ignored (and truncated by `open`)
        }
        line_no += 1;
        let at = Location::line(label, line_no);
        let bad = |what: String| DataError::Format {
            at: at.clone(),
            what,
        };
        match &header {
            None => {
                let h: LogHeader = serde_json::from_slice(&buf)
                    .map_err(|e| bad(format!("not a dama score log header: {e}")))?;
                if h.dama_score_log > LOG_VERSION {
                    return Err(bad(format!(
                        "score log version {} is newer than this build reads ({LOG_VERSION})",
                        h.dama_score_log
                    )));
                }
                header = Some(h.run);
            }
            Some(_) => {
                let entry: ScoredPair =
                    serde_json::from_slice(&buf).map_err(|e| bad(format!("corrupt entry: {e}")))?;
                match index.get(&entry.id) {
                    Some(&i) => entries[i] = entry,
                    None => {
                        index.insert(entry.id.clone(), entries.len());
                        entries.push(entry);
                    }
                }
            }
        }
        complete_len += n as u64;
    }
    let run = header.ok_or_else(|| DataError::Format {
        at: Location::file(label),
        what: "an empty score log".into(),
    })?;
    Ok((run, entries, complete_len))
}

/// What the final file is.
pub enum Output<'s> {
    Jsonl(ImageOut<'s>),
    /// Images embedded; the source must be read with images loaded.
    Parquet,
}

enum Writer<'s> {
    Jsonl(AnnotatedJsonlWriter<'s, BufWriter<File>>),
    Parquet(Box<AnnotatedParquetWriter<BufWriter<File>>>),
}

impl Writer<'_> {
    fn write(&mut self, pair: &PreferencePair) -> Result<(), DataError> {
        match self {
            Writer::Jsonl(w) => w.write(pair),
            Writer::Parquet(w) => w.write(pair),
        }
    }

    fn finish(self) -> Result<BufWriter<File>, DataError> {
        match self {
            Writer::Jsonl(w) => w.finish(),
            Writer::Parquet(w) => w.finish(),
        }
    }
}

/// What [`finalize`] wrote.
#[derive(Debug)]
pub struct Finalized {
    pub header: Header,
    /// The second read of the source.
    pub summary: ReadSummary,
}

/// Writes the annotated dataset from a complete log: δ̄ over every logged pair, α_D of each,
/// records in source order. `source` must yield the pairs of the scoring pass (same file, same
/// read options; image bytes loaded unless the output only references them by name). The file
/// appears at `out` only when complete: it is written to `<out>.partial` and renamed.
pub fn finalize(
    log: &Path,
    source: Records<'_>,
    out: &Path,
    output: Output<'_>,
) -> Result<Finalized, DataError> {
    let tmp = PathBuf::from(format!("{}.partial", out.display()));
    let result = write_final(log, source, out, &tmp, output);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp); // best effort: never leave a half file behind
    }
    result
}

fn write_final(
    log: &Path,
    mut source: Records<'_>,
    out: &Path,
    tmp: &Path,
    output: Output<'_>,
) -> Result<Finalized, DataError> {
    let label = log.display().to_string();
    let file = File::open(log).map_err(|e| DataError::io(&label, e))?;
    let (run, entries, _) = read_log(&label, BufReader::new(file))?;
    let mut stats = StatsBuilder::default();
    for e in &entries {
        stats.add(&e.id, true, Some(e.delta), Some(e.delta_edge));
    }
    let stats = stats.finish()?;
    let header = stats.header(&run);
    let scored = entries.len();
    let mut pending: HashMap<String, ScoredPair> =
        entries.into_iter().map(|e| (e.id.clone(), e)).collect();

    let out_label = out.display().to_string();
    let tmp_label = tmp.display().to_string();
    let file = BufWriter::new(File::create(tmp).map_err(|e| DataError::io(&tmp_label, e))?);
    let mut writer = match output {
        Output::Jsonl(images) => Writer::Jsonl(AnnotatedJsonlWriter::new(
            &out_label,
            file,
            header.clone(),
            images,
        )?),
        Output::Parquet => Writer::Parquet(Box::new(AnnotatedParquetWriter::new(
            &out_label,
            file,
            header.clone(),
        )?)),
    };
    let mismatch = |what: String| DataError::Mismatch {
        file: label.clone(),
        what,
    };
    let mut written = HashSet::new();
    for pair in source.by_ref() {
        let mut pair = pair?;
        if !written.insert(pair.id.clone()) {
            return Err(mismatch(format!(
                "pair `{}` appears twice in the source; ids must be unique",
                pair.id
            )));
        }
        let Some(entry) = pending.remove(&pair.id) else {
            return Err(mismatch(format!(
                "pair `{}` of the source has not been scored ({scored} pairs are): run the scoring again to finish it",
                pair.id
            )));
        };
        if entry.text_hash != text_hash(&pair) {
            return Err(mismatch(format!(
                "pair `{}` has changed in the source since it was scored",
                pair.id
            )));
        }
        pair.alpha_d = stats.alpha_d(true, Some(entry.delta));
        pair.sub_sentences = Some(entry.sub_sentences);
        pair.scores = Some(entry.scores);
        pair.delta = Some(entry.delta);
        pair.delta_edge = Some(entry.delta_edge);
        writer.write(&pair)?;
    }
    if let Some(id) = pending.keys().min() {
        return Err(mismatch(format!(
            "{} scored pairs are not in the source (e.g. `{id}`): is it the same dataset?",
            pending.len()
        )));
    }
    let file = writer.finish()?;
    let file = file
        .into_inner()
        .map_err(|e| DataError::io(&tmp_label, e.into_error()))?;
    file.sync_all().map_err(|e| DataError::io(&tmp_label, e))?;
    std::fs::rename(tmp, out).map_err(|e| DataError::io(&out_label, e))?;
    Ok(Finalized {
        header,
        summary: source.into_summary(),
    })
}

//! Resumable scoring. The scorer appends each pair's result to a log as soon as it has it, so a
//! crash loses at most the pair in flight; on restart the log lists the pairs already done. δ̄
//! is only known once every pair is scored, so a final pass ([`finalize`]) reads the log,
//! computes δ̄, and writes the annotated dataset with α_D, reading the source again for the
//! text and images.
//!
//! The log is JSONL: a header `{"dama_score_log": 1, "clip_model", "estimator", "splitter"}`
//! that must match the resuming run, then one [`ScoredPair`] per line, or
//! `{"skipped": {"id", "reason", "message"}}` for a pair the scoring pass found bad in a way
//! only decoding its image shows: the final pass reads the source again without decoding, and
//! must leave out exactly the pairs the scoring pass left out.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use dama_core::{DeltaEdge, Estimator};
use serde::{Deserialize, Serialize};

use crate::annotated::stats::StatsBuilder;
use crate::annotated::{AnnotatedJsonlWriter, AnnotatedParquetWriter, Header, ImageOut, RunInfo};
use crate::error::{DataError, Location, SkipReason};
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
    /// What produced the sub-sentences: `input` (the dataset had them), the splitter's name, or
    /// the fallback's when the LLM failed on an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_by: Option<String>,
}

/// A pair the scoring pass left out for a reason only decoding shows (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedPair {
    pub id: String,
    pub reason: SkipReason,
    pub message: String,
}

/// One line of the log after the header.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    Skipped { skipped: SkippedPair },
    Scored(ScoredPair),
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
            split_by: None,
        })
    }

    /// Records what produced the sub-sentences.
    pub fn split_by(self, origin: impl Into<String>) -> Self {
        Self {
            split_by: Some(origin.into()),
            ..self
        }
    }
}

/// The splitter an annotated header names, from what really produced each pair's
/// sub-sentences: `rules-v1` when it split them all, `input` when the dataset had them all,
/// otherwise each origin with its count ("llm:m (12 pairs), rules-v1 after an LLM failure
/// (2 pairs)"). `configured` names pairs logged before origins were recorded.
fn describe_splitters(entries: &[ScoredPair], configured: Option<&str>) -> Option<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for e in entries {
        let origin = e
            .split_by
            .clone()
            .or_else(|| configured.map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        match counts.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, n)) => *n += 1,
            None => counts.push((origin, 1)),
        }
    }
    match counts.as_slice() {
        [] => configured.map(str::to_owned),
        [(only, _)] => Some(only.clone()),
        many => Some(
            many.iter()
                .map(|(o, n)| format!("{o} ({n} pairs)"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

/// FNV-1a (64-bit) of question, chosen and rejected, as hex: a change detector, not security.
fn text_hash(pair: &PreferencePair) -> String {
    let h = dama_core::hash::Fnv1a::new()
        .field(&pair.question)
        .field(&pair.chosen)
        .field(&pair.rejected);
    format!("{:016x}", h.finish())
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
            let LogContents {
                run: found,
                scored: entries,
                complete_len,
                ..
            } = read_log(&label, BufReader::new(&mut file))?;
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
        self.write(&Entry::Scored(scored.clone()), &scored.id)?;
        self.done.insert(scored.id.clone());
        Ok(())
    }

    /// Logs the pairs of a read that were skipped for a reason only decoding finds
    /// ([`SkipReason::found_by_decoding`]), so that [`finalize`] leaves them out too.
    pub fn append_skipped(&mut self, summary: &ReadSummary) -> Result<(), DataError> {
        for e in &summary.errors {
            let DataError::Record(r) = e else { continue };
            let (Some(id), true) = (&r.id, r.reason().found_by_decoding()) else {
                continue;
            };
            let skipped = SkippedPair {
                id: id.clone(),
                reason: r.reason(),
                message: e.to_string(),
            };
            self.write(&Entry::Skipped { skipped }, id)?;
        }
        Ok(())
    }

    fn write(&mut self, entry: &Entry, id: &str) -> Result<(), DataError> {
        let line = serde_json::to_string(entry).map_err(|e| DataError::Format {
            at: Location::file(self.path.display().to_string()),
            what: format!("pair `{id}` cannot be logged: {e}"),
        })?;
        let io = |e| DataError::io(self.path.display().to_string(), e);
        writeln!(self.out, "{line}").map_err(io)?;
        self.out.flush().map_err(io)
    }
}

/// A log as read back.
struct LogContents {
    run: RunInfo,
    scored: Vec<ScoredPair>,
    skipped: HashMap<String, SkippedPair>,
    /// Bytes of the complete lines (a torn last line is cut off there).
    complete_len: u64,
}

/// The run, the scored entries and the skipped ones (a later line for an id replaces an earlier
/// one: a scored entry in place, a skip removes it, a score removes a skip), and the length of
/// the complete lines.
fn read_log(label: &str, mut reader: impl BufRead) -> Result<LogContents, DataError> {
    let mut complete_len = 0u64;
    let mut header: Option<RunInfo> = None;
    let mut entries: Vec<Option<ScoredPair>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut skipped: HashMap<String, SkippedPair> = HashMap::new();
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
                let entry: Entry =
                    serde_json::from_slice(&buf).map_err(|e| bad(format!("corrupt entry: {e}")))?;
                match entry {
                    Entry::Scored(e) => {
                        skipped.remove(&e.id);
                        match index.get(&e.id) {
                            Some(&i) => entries[i] = Some(e),
                            None => {
                                index.insert(e.id.clone(), entries.len());
                                entries.push(Some(e));
                            }
                        }
                    }
                    Entry::Skipped { skipped: s } => {
                        if let Some(i) = index.remove(&s.id) {
                            entries[i] = None;
                        }
                        skipped.insert(s.id.clone(), s);
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
    Ok(LogContents {
        run,
        scored: entries.into_iter().flatten().collect(),
        skipped,
        complete_len,
    })
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
    let LogContents {
        run,
        scored: entries,
        skipped,
        ..
    } = read_log(&label, BufReader::new(file))?;
    if entries.is_empty() {
        return Err(DataError::Format {
            at: Location::file(&label),
            what: "no pair has been scored: there is nothing to write".into(),
        });
    }
    let mut stats = StatsBuilder::default();
    for e in &entries {
        stats.add(&e.id, true, Some(e.delta), Some(e.delta_edge));
    }
    let stats = stats.finish()?;
    let described = RunInfo {
        splitter: describe_splitters(&entries, run.splitter.as_deref()),
        ..run.clone()
    };
    let header = stats.header(&described);
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
    for pair in source.by_ref() {
        let mut pair = pair?;
        if skipped.contains_key(&pair.id) {
            continue; // left out by the scoring pass; its report names it
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

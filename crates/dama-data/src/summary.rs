//! What a read did: how many records came out, and every record it skipped with why. One
//! report of the skipped records for every command ([`ReadSummary::report`] on the terminal,
//! [`ReadSummary::write_skipped`] for the whole list), so that `score`, `ref-logps`, `train`
//! and the commands after them name bad records the same way.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::error::{DataError, Pos, SkipReason};

/// How many skipped records a terminal report names; the rest are counted, and listed in the
/// `*.skipped.jsonl` file beside the output.
pub const SHOWN_SKIPPED: usize = 20;

#[derive(Debug, Default)]
pub struct ReadSummary {
    /// Records handed to the caller.
    pub read: usize,
    /// Records skipped because they are bad, by reason (lenient reads only).
    pub skipped: BTreeMap<SkipReason, usize>,
    /// Records left out because a person marked them `drop` (not an error).
    pub dropped: usize,
    /// Every error behind `skipped`, in file order.
    pub errors: Vec<DataError>,
}

/// One skipped record as `*.skipped.jsonl` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedRecord {
    pub file: String,
    /// 1-based line of JSONL and of the authors' JSON list; absent for parquet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Row of the file (parquet, 0-based), item of the JSON list (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    pub reason: SkipReason,
    pub message: String,
}

impl SkippedRecord {
    /// `None` for an error that is not about one record.
    pub fn of(error: &DataError) -> Option<Self> {
        let DataError::Record(e) = error else {
            return None;
        };
        let (line, row) = match e.at.pos {
            Pos::File => (None, None),
            Pos::Line(line) => (Some(line), None),
            Pos::Item { index, line } => (Some(line), Some(index as u64)),
            Pos::Row { file_row, .. } => (None, Some(file_row)),
        };
        Some(Self {
            file: e.at.file.clone(),
            line,
            row,
            id: e.id.clone(),
            field: e.field,
            reason: e.reason(),
            message: e.to_string(),
        })
    }
}

impl ReadSummary {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// Counts `error` under `reason` and keeps it for the report.
    pub fn skip(&mut self, reason: SkipReason, error: DataError) {
        *self.skipped.entry(reason).or_default() += 1;
        self.errors.push(error);
    }

    /// Adds another file's summary (a folder of parquet shards).
    pub fn merge(&mut self, other: ReadSummary) {
        self.read += other.read;
        self.dropped += other.dropped;
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
        self.errors.extend(other.errors);
    }

    /// The skipped records, for a file.
    pub fn skipped_records(&self) -> Vec<SkippedRecord> {
        self.errors.iter().filter_map(SkippedRecord::of).collect()
    }

    /// The terminal report of the skipped records: a line with the counts by reason, then each
    /// record, at most `shown` of them, then "… and N more" naming `full_list` (the
    /// `*.skipped.jsonl` that [`ReadSummary::write_skipped`] wrote). Empty when nothing was
    /// skipped.
    pub fn report(&self, shown: usize, full_list: Option<&str>) -> String {
        let total = self.skipped_total();
        if total == 0 {
            return String::new();
        }
        let mut out = format!("skipped {total} bad record(s): {}\n", self.reasons());
        for e in self.errors.iter().take(shown) {
            out.push_str(&format!("  {e}\n"));
        }
        let more = self.errors.len().saturating_sub(shown);
        match full_list {
            Some(path) if more > 0 => {
                out.push_str(&format!("  … and {more} more: every one is in {path}\n"))
            }
            Some(path) => out.push_str(&format!("  (also listed in {path})\n")),
            None if more > 0 => out.push_str(&format!("  … and {more} more\n")),
            None => {}
        }
        out
    }

    /// "3 malformed, 2 missing image"
    fn reasons(&self) -> String {
        self.skipped
            .iter()
            .map(|(r, n)| format!("{n} {}", r.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Writes every skipped record, one JSON object a line ([`SkippedRecord`]), to `path`;
    /// removes a stale list when nothing was skipped.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn write_skipped(&self, path: &std::path::Path) -> Result<(), DataError> {
        let label = path.display().to_string();
        if self.errors.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataError::io(&label, e)),
                _ => Ok(()),
            };
        }
        let mut text = String::new();
        for record in self.skipped_records() {
            text.push_str(&serde_json::to_string(&record).expect("a record serialises"));
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| DataError::io(&label, e))
    }
}

impl fmt::Display for ReadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read {} records", self.read)?;
        if self.dropped > 0 {
            write!(f, ", left out {} marked drop", self.dropped)?;
        }
        let skipped = self.skipped_total();
        if skipped > 0 {
            write!(f, ", skipped {skipped} bad ({})", self.reasons())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Location, Problem};

    fn bad(line: usize) -> DataError {
        DataError::record(
            Location::line("f.jsonl", line),
            Some(format!("p{line}")),
            Some("chosen"),
            Problem::Empty,
        )
    }

    #[test]
    fn counts_and_prints() {
        let mut s = ReadSummary {
            read: 7,
            ..Default::default()
        };
        for _ in 0..2 {
            let e = DataError::record(
                Location::line("f", 1),
                None,
                Some("image"),
                Problem::NoImage,
            );
            s.skip(e.skip_reason().unwrap(), e);
        }
        let e = DataError::record(Location::line("f", 2), None, Some("chosen"), Problem::Empty);
        s.skip(SkipReason::EmptyText, e);
        assert_eq!(s.skipped_total(), 3);
        assert_eq!(
            s.to_string(),
            "read 7 records, skipped 3 bad (1 empty text, 2 missing image)"
        );
        let mut total = ReadSummary::default();
        total.merge(s);
        total.merge(ReadSummary {
            read: 1,
            dropped: 2,
            ..Default::default()
        });
        assert_eq!(
            (
                total.read,
                total.dropped,
                total.skipped_total(),
                total.errors.len()
            ),
            (8, 2, 3, 3)
        );
    }

    #[test]
    fn the_report_names_the_first_records_and_counts_the_rest() {
        let mut s = ReadSummary::default();
        for line in 1..=25 {
            s.skip(SkipReason::EmptyText, bad(line));
        }
        let report = s.report(SHOWN_SKIPPED, Some("out.skipped.jsonl"));
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], "skipped 25 bad record(s): 25 empty text");
        assert_eq!(
            lines[1],
            "  f.jsonl:1 (record `p1`): field `chosen` is empty"
        );
        assert_eq!(lines.len(), 1 + 20 + 1);
        assert_eq!(
            lines[21],
            "  … and 5 more: every one is in out.skipped.jsonl"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.skipped.jsonl");
        s.write_skipped(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 25);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["line"], 1);
        assert_eq!(first["id"], "p1");
        assert_eq!(first["reason"], "empty_text");
        // Nothing skipped: no report, and a stale list is removed.
        ReadSummary::default().write_skipped(&path).unwrap();
        assert!(!path.exists());
        assert_eq!(ReadSummary::default().report(20, None), "");
    }
}

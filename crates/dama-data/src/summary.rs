//! What a read did: how many records came out, how many were skipped and why, with the first
//! errors kept for the report.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{DataError, SkipReason};

/// How many skipped records keep their full error in [`ReadSummary::errors`]; the counts are
/// always complete.
pub const MAX_KEPT_ERRORS: usize = 100;

#[derive(Debug, Default)]
pub struct ReadSummary {
    /// Records handed to the caller.
    pub read: usize,
    /// Records skipped because they are bad, by reason (lenient reads only).
    pub skipped: BTreeMap<SkipReason, usize>,
    /// Records left out because a person marked them `drop` (not an error).
    pub dropped: usize,
    /// The first [`MAX_KEPT_ERRORS`] errors behind `skipped`, in file order.
    pub errors: Vec<DataError>,
}

impl ReadSummary {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    pub(crate) fn skip(&mut self, reason: SkipReason, error: DataError) {
        *self.skipped.entry(reason).or_default() += 1;
        if self.errors.len() < MAX_KEPT_ERRORS {
            self.errors.push(error);
        }
    }

    /// Adds another file's summary (a folder of parquet shards).
    pub fn merge(&mut self, other: ReadSummary) {
        self.read += other.read;
        self.dropped += other.dropped;
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
        let room = MAX_KEPT_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
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
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(r, n)| format!("{n} {}", r.describe()))
                .collect();
            write!(f, ", skipped {skipped} bad ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Location, Problem};

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
}

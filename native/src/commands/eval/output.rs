//! What every benchmark writes: `summary.json` (the benchmark's numbers under the reference's
//! names, plus the run's warnings), `details.jsonl` (one line per answer), and a table on the
//! terminal.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// `summary.json`: the summary's fields at the top level, the warnings beside them.
#[derive(Serialize)]
struct SummaryFile<'a, S: Serialize> {
    benchmark: &'a str,
    #[serde(flatten)]
    summary: &'a S,
    /// The answers file read (or written by --model).
    answers: String,
    warnings: &'a [String],
}

/// Writes `out/summary.json` and `out/details.jsonl`; returns their paths.
pub fn write(
    out: &Path,
    benchmark: &str,
    answers: &Path,
    summary: &impl Serialize,
    details: &[impl Serialize],
    warnings: &[String],
) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let summary_path = out.join("summary.json");
    let file = SummaryFile {
        benchmark,
        summary,
        answers: answers.display().to_string(),
        warnings,
    };
    let text = serde_json::to_string_pretty(&file)?;
    std::fs::write(&summary_path, format!("{text}\n"))
        .with_context(|| summary_path.display().to_string())?;
    let details_path = out.join("details.jsonl");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&details_path).with_context(|| details_path.display().to_string())?,
    );
    for d in details {
        serde_json::to_writer(&mut w, d)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| details_path.display().to_string())?;
    Ok((summary_path, details_path))
}

/// Each warning on stderr.
pub fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// A plain text table: the first row is the header; a column whose cells (past the header)
/// are all numbers is right-aligned, any other is left-aligned.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |c: usize| {
        rows.iter()
            .filter_map(|r| r.get(c))
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
    };
    let numeric = |c: usize| {
        rows.iter()
            .skip(1)
            .filter_map(|r| r.get(c))
            .all(|s| s == "n/a" || s.parse::<f64>().is_ok())
    };
    let layout: Vec<(usize, bool)> = (0..columns).map(|c| (width(c), numeric(c))).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let (width, right) = layout[c];
            let pad = " ".repeat(width - cell.chars().count());
            if c > 0 {
                line.push_str("  ");
            }
            if right {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A ratio in percent with two decimals, `n/a` when undefined.
pub fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |x| format!("{:.2}", 100.0 * x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            vec!["metric".to_owned(), "value".to_owned()],
            vec!["CHAIRs".to_owned(), "6.5".to_owned()],
            vec!["x".to_owned(), "100.25".to_owned()],
        ];
        assert_eq!(
            table(&rows),
            "metric   value\nCHAIRs     6.5\nx       100.25\n"
        );
        let rows = vec![
            vec!["a".to_owned(), "%".to_owned(), "counts".to_owned()],
            vec!["b".to_owned(), "n/a".to_owned(), "1 / 2 x".to_owned()],
        ];
        assert_eq!(table(&rows), "a    %  counts\nb  n/a  1 / 2 x\n");
        assert_eq!(percent(Some(0.63)), "63.00");
        assert_eq!(percent(None), "n/a");
    }
}

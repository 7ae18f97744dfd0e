//! Explains DAMA batches: one JSON object per line on stdin, one per line on stdout.
//!
//! ```text
//! cargo run -p dama-core --example explain < batch.jsonl
//! ```
//!
//! The input and output fields are listed in README.md ("Checking our numbers"). A line that
//! cannot be parsed or computed is answered with `{"line": n, "error": "..."}` naming the line
//! and the field; the other lines are still answered, and the exit status is 1.

use std::io::{self, BufRead, Write};

use dama_core::explain::{Request, explain};
use serde_json::json;

/// Answers one input line (`line_no` counts from 1). `None` for a blank line.
fn answer_line(line_no: usize, line: &str) -> Option<Result<String, String>> {
    if line.trim().is_empty() {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let parsed: Result<Request, _> = serde_path_to_error::deserialize(&mut de);
    let answer = match parsed {
        Err(e) => {
            let path = e.path().to_string();
            let place = if path == "." {
                String::new()
            } else {
                format!("field `{path}`: ")
            };
            Err(format!("line {line_no}: {place}{}", e.into_inner()))
        }
        Ok(req) => match explain(&req) {
            Ok(resp) => Ok(serde_json::to_string(&resp).expect("a response always serialises")),
            Err(e) => Err(format!("line {line_no}: {e}")),
        },
    };
    Some(answer.map_err(|error| json!({ "line": line_no, "error": error }).to_string()))
}

fn main() {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("line {}: cannot read stdin: {e}", i + 1);
                std::process::exit(2);
            }
        };
        match answer_line(i + 1, &line) {
            None => {}
            Some(Ok(json)) => writeln!(out, "{json}").expect("stdout"),
            Some(Err(json)) => {
                failed += 1;
                writeln!(out, "{json}").expect("stdout");
                eprintln!("{json}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} line(s) could not be explained");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod golden;

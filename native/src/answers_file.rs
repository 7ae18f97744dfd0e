//! The answers file `generate` writes: one JSON object a line, appended as answers come, so
//! that a killed run resumes where it stopped. Beside it, `<file>.settings.json` records what
//! decided the answers (model, preprocessing, decoding); a resume with other settings is
//! refused rather than mixing two runs' answers in one file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::generator::Answer;

pub struct AnswersFile {
    path: PathBuf,
    file: File,
    /// Answers already in the file: id → (question, answer).
    done: HashMap<String, (String, String)>,
    /// A cut last line was dropped (a run killed while writing it).
    dropped_torn_line: Option<usize>,
}

/// Where the settings of `path` are kept.
pub fn settings_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.settings.json", path.display()))
}

impl AnswersFile {
    /// Opens `path` for appending, reading the answers it holds. `settings` must equal those
    /// recorded beside it (written when the file is new or empty).
    pub fn open(path: &Path, settings: &Value) -> Result<Self> {
        let sidecar = settings_path(path);
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let (done, keep, dropped_torn_line) = parse(path, &text)?;
        if !done.is_empty() {
            let recorded = std::fs::read_to_string(&sidecar).with_context(|| {
                format!(
                    "{} holds answers but no {} saying how they were generated: choose another --out, or remove the file to start again",
                    path.display(),
                    sidecar.display()
                )
            })?;
            let recorded: Value = serde_json::from_str(&recorded)
                .with_context(|| format!("reading {}", sidecar.display()))?;
            if &recorded != settings {
                bail!(
                    "{} was generated with other settings ({}): choose another --out, or remove it (and {}) to start again",
                    path.display(),
                    differences(&recorded, settings, "").join(", "),
                    sidecar.display()
                );
            }
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut s = serde_json::to_string_pretty(settings)?;
            s.push('\n');
            std::fs::write(&sidecar, s)
                .with_context(|| format!("writing {}", sidecar.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if keep < text.len() {
            // a torn last line: cut it off and write that answer again
            file.set_len(keep as u64)
                .with_context(|| format!("truncating {}", path.display()))?;
        } else if text.last().is_some_and(|&b| b != b'\n') {
            // a whole last line whose newline was not written: end it before appending
            (&file)
                .write_all(b"\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            done,
            dropped_torn_line,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The answers already there, by id: (question, answer).
    pub fn done(&self) -> &HashMap<String, (String, String)> {
        &self.done
    }

    /// The line number of a cut last line that was dropped, if there was one.
    pub fn dropped_torn_line(&self) -> Option<usize> {
        self.dropped_torn_line
    }

    /// Appends one answer as one write of one line.
    pub fn append(&mut self, a: &Answer) -> Result<()> {
        let mut line = a.to_line();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.done
            .insert(a.id.clone(), (a.question.clone(), a.answer.clone()));
        Ok(())
    }
}

/// `key: recorded → now` for every setting that differs (nested objects by dotted key).
fn differences(recorded: &Value, now: &Value, prefix: &str) -> Vec<String> {
    match (recorded, now) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    let null = Value::Null;
                    let (x, y) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
                    differences(x, y, &format!("{prefix}{k}."))
                })
                .collect()
        }
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!(
            "{}: {a} then, {b} now",
            prefix.trim_end_matches('.')
        )],
    }
}

/// The answers of an existing file, how many of its bytes to keep, and the line number of a
/// dropped torn last line. Only the last line may be cut (no newline after it); any other bad
/// line is an error naming it.
type Parsed = (HashMap<String, (String, String)>, usize, Option<usize>);

fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let mut done = HashMap::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut offset = 0;
    let mut number = 0;
    while offset < bytes.len() {
        number += 1;
        let end = bytes[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| offset + i);
        let line = &bytes[offset..end.unwrap_or(bytes.len())];
        let at = |why: String| anyhow::anyhow!("{}:{number}: {why}", path.display());
        let record = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str::<Value>(s).map_err(|e| e.to_string()));
        match (record, end) {
            (Ok(v), _) => {
                let field = |name: &str| -> Result<String> {
                    match v.get(name) {
                        Some(Value::String(s)) => Ok(s.clone()),
                        Some(other) => {
                            Err(at(format!("field `{name}` is {other}, expected a string")))
                        }
                        None => Err(at(format!("field `{name}` is missing"))),
                    }
                };
                let id = field("id")?;
                let entry = (field("question")?, field("answer")?);
                if let Some(first) = first_line.insert(id.clone(), number) {
                    return Err(at(format!("id `{id}` repeats line {first}")));
                }
                done.insert(id, entry);
            }
            (Err(_), None) if line.iter().all(|b| b.is_ascii_whitespace()) => {}
            // the last line, cut short by a killed run: dropped and written again
            (Err(_), None) => return Ok((done, offset, Some(number))),
            (Err(_), Some(_)) if line.iter().all(|b| b.is_ascii_whitespace()) => {}
            (Err(why), Some(_)) => return Err(at(format!("not an answer line: {why}"))),
        }
        offset = end.map_or(bytes.len(), |e| e + 1);
    }
    Ok((done, bytes.len(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str) -> Answer {
        Answer {
            id: id.into(),
            question: "Q?".into(),
            answer: format!("answer {id}"),
            tokens: vec![5, 2],
            finish: "eos",
            batch_ms: 1.0,
            batch_tokens_per_s: 2.0,
            batch_size: 1,
        }
    }

    #[test]
    fn resumes_drops_a_torn_last_line_and_refuses_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let s = serde_json::json!({"num_beams": 3});
        let mut f = AnswersFile::open(&path, &s).unwrap();
        f.append(&answer("x")).unwrap();
        f.append(&answer("y")).unwrap();
        drop(f);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"id\": \"z\", \"quest");
        std::fs::write(&path, &text).unwrap();
        let f = AnswersFile::open(&path, &s).unwrap();
        assert_eq!(f.dropped_torn_line(), Some(3));
        let mut ids: Vec<_> = f.done().keys().cloned().collect();
        ids.sort();
        assert_eq!(ids, ["x", "y"]);
        drop(f);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let e = AnswersFile::open(&path, &serde_json::json!({"num_beams": 1}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("other settings"), "{e}");
        // a bad line that is not the last is an error naming it
        std::fs::write(
            &path,
            "not json\n{\"id\":\"a\",\"question\":\"\",\"answer\":\"\"}\n",
        )
        .unwrap();
        let e = AnswersFile::open(&path, &s).err().unwrap().to_string();
        assert!(e.contains("a.jsonl:1: not an answer line"), "{e}");
        std::fs::write(&path, "{\"id\":\"a\",\"question\":\"\"}\n").unwrap();
        let e = AnswersFile::open(&path, &s).err().unwrap().to_string();
        assert!(e.contains(":1: field `answer` is missing"), "{e}");
    }
}

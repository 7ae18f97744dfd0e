//! The reference model's log-probs, computed once per dataset and cached in a JSONL sidecar.
//!
//! The cache is keyed by what the numbers depend on: the reference weights, the tokenizer and
//! conversation template, the image preprocessing and the dtype. A cache whose key does not
//! match this run is an error that says which part differs: reusing log-probs of another model
//! would silently train against the wrong reference. Each pair's entry also carries a hash of
//! the pair's content, so an edited record is never matched with a stale entry.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::files::write_atomic;
use crate::observer::Observer;

/// What the cached numbers depend on; the first line of the cache file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Format version of the cache file.
    pub dama_ref_logps: u32,
    /// [`model_identity`] of the reference weights.
    pub model: String,
    /// Hash of the tokenizer and the conversation template.
    pub template: String,
    /// Hash of the image preprocessing (processor config, aspect mode, max length).
    pub preprocessing: String,
    /// dtype the reference model ran in.
    pub dtype: String,
    /// Where the model was read from (informative; not compared).
    #[serde(default)]
    pub model_path: String,
}

impl CacheKey {
    pub const VERSION: u32 = 1;

    /// The first component that differs, as a sentence for the user.
    fn mismatch(&self, other: &CacheKey) -> Option<String> {
        let parts = [
            (
                "format version",
                self.dama_ref_logps.to_string(),
                other.dama_ref_logps.to_string(),
            ),
            (
                "reference model weights",
                self.model.clone(),
                other.model.clone(),
            ),
            (
                "tokenizer / conversation template",
                self.template.clone(),
                other.template.clone(),
            ),
            (
                "image preprocessing",
                self.preprocessing.clone(),
                other.preprocessing.clone(),
            ),
            ("dtype", self.dtype.clone(), other.dtype.clone()),
        ];
        parts
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(what, cached, now)| {
                format!("the {what} differ (cache: {cached}, this run: {now})")
            })
    }
}

/// One pair's reference log-probs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefEntry {
    pub id: String,
    /// [`content_hash`] of the pair as it was scored.
    pub content: String,
    /// Sum of the answer tokens' log-probs (incl. `</s>`), chosen and rejected.
    pub chosen: f64,
    pub rejected: f64,
    pub chosen_avg: f64,
    pub rejected_avg: f64,
    pub chosen_tokens: usize,
    pub rejected_tokens: usize,
}

/// Hex SHA-256 of the parts, each length-prefixed so that ("ab","c") ≠ ("a","bc").
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity of a pair's content: question, answers and image bytes.
pub fn content_hash(question: &str, chosen: &str, rejected: &str, image: &[u8]) -> String {
    hash_parts([
        question.as_bytes(),
        chosen.as_bytes(),
        rejected.as_bytes(),
        image,
    ])
}

/// A cheap but strong identity of the safetensors weights in `dir`: for every `*.safetensors`
/// file (sorted by name) its name, length, JSON header, and 16 evenly spaced 64 KiB samples of
/// its data. Two different checkpoints of the same architecture differ in the samples; hashing
/// all 14 GB of a 7B model on every run would not be cheap.
pub fn model_identity(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(TrainError::io("reading model folder", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TrainError::Dataset(format!(
            "no *.safetensors file in {}",
            dir.display()
        )));
    }
    let mut h = Sha256::new();
    for path in &files {
        let io = |what| TrainError::io(what, path);
        let mut f = File::open(path).map_err(io("opening"))?;
        let len = f.metadata().map_err(io("reading"))?.len();
        h.update(path.file_name().unwrap().as_encoded_bytes());
        h.update(len.to_le_bytes());
        let mut header_len = [0u8; 8];
        f.read_exact(&mut header_len)
            .map_err(io("reading the safetensors header of"))?;
        let header_len = u64::from_le_bytes(header_len).min(len.saturating_sub(8));
        let mut header = vec![0u8; header_len as usize];
        f.read_exact(&mut header)
            .map_err(io("reading the safetensors header of"))?;
        h.update(&header);
        let data_start = 8 + header_len;
        let data_len = len - data_start;
        let mut chunk = vec![0u8; 64 * 1024];
        for i in 0..16u64 {
            let at = data_start + data_len.saturating_sub(chunk.len() as u64) * i / 15;
            f.seek(SeekFrom::Start(at)).map_err(io("reading"))?;
            let n = f.read(&mut chunk).map_err(io("reading"))?;
            h.update(&chunk[..n]);
        }
    }
    Ok(hex(&h.finalize()))
}

/// The lowest mean log-probability per scored token that a reference log-prob may have:
/// −1000 nats, e^−1000 ≈ 10^−434 per token. A model whose softmax has run in f32 cannot
/// produce less at any realistic logit scale (a uniform guess over a 32k vocabulary is −10.4),
/// so a lower value is a broken number (an overflow, a hand edit), not a hard pair.
pub const MIN_LOGP_PER_TOKEN: f64 = -1000.0;

/// Why a log-prob sum over `tokens` answer tokens is one no model can produce, if it is:
/// not finite, above 0 (beyond rounding), or below [`MIN_LOGP_PER_TOKEN`] per token.
pub fn impossible_logp(sum: f64, tokens: usize) -> Option<String> {
    let tokens = tokens.max(1) as f64;
    if !sum.is_finite() {
        Some(format!("{sum} is not a finite number"))
    } else if sum > 1e-3 * tokens {
        Some(format!("{sum} is positive: a log-probability is at most 0"))
    } else if sum < MIN_LOGP_PER_TOKEN * tokens {
        Some(format!(
            "{sum} is below {MIN_LOGP_PER_TOKEN} nats per token over {tokens} tokens"
        ))
    } else {
        None
    }
}

/// One entry line, with a reason a person can act on when it is unusable.
fn parse_entry(text: &str) -> std::result::Result<RefEntry, String> {
    let e: RefEntry = serde_json::from_str(text).map_err(|e| {
        let trimmed = text.trim();
        if ["NaN", "Infinity", "inf"]
            .iter()
            .any(|w| trimmed.contains(w))
        {
            "holds a non-finite log-prob (NaN or infinity is not a valid value)".to_owned()
        } else {
            // serde's position is inside this one line; the line number is what names it
            let message = e.to_string();
            let message = message
                .rfind(" at line ")
                .map_or(&*message, |i| &message[..i]);
            format!("is not a reference-cache entry ({message})")
        }
    })?;
    for (side, sum, tokens) in [
        ("chosen", e.chosen, e.chosen_tokens),
        ("rejected", e.rejected, e.rejected_tokens),
    ] {
        if let Some(why) = impossible_logp(sum, tokens) {
            return Err(format!("pair `{}`: the {side} log-prob {why}", e.id));
        }
    }
    Ok(e)
}

/// An open cache: entries read so far, new ones appended as they are computed (so a killed
/// `ref-logps` run resumes where it stopped).
pub struct RefCache {
    path: PathBuf,
    entries: HashMap<String, RefEntry>,
    out: BufWriter<File>,
}

impl RefCache {
    /// Opens the cache at `path` for `key`, or starts it. An existing cache with another key is
    /// an error naming the differing part; a torn last line (a killed run) is dropped.
    pub fn open(path: &Path, key: &CacheKey, observer: &dyn Observer) -> Result<Self> {
        let io = |what| TrainError::io(what, path);
        let bad = |what: String| TrainError::RefCache {
            path: path.to_path_buf(),
            what,
        };
        let mut entries = HashMap::new();
        let mut fresh = !path.exists();
        if !fresh {
            let file = File::open(path).map_err(io("opening reference cache"))?;
            let mut reader = BufReader::new(file);
            let mut good_bytes = 0u64;
            let mut number = 0usize;
            loop {
                let mut line = Vec::new();
                let n = reader.read_until(b'\n', &mut line).map_err(io("reading"))?;
                if n == 0 {
                    break;
                }
                number += 1;
                if line.last() != Some(&b'\n') {
                    // Only a kill while a line was written leaves one without its end.
                    observer.notice(&format!(
                        "{}: line {number}: dropping an entry cut short by a killed run; it will be computed again",
                        path.display()
                    ));
                    break;
                }
                let text = String::from_utf8_lossy(&line);
                if number == 1 {
                    let cached: CacheKey = serde_json::from_str(&text).map_err(|e| {
                        bad(format!("line 1 is not a reference-cache header ({e})"))
                    })?;
                    if let Some(why) = cached.mismatch(key) {
                        return Err(bad(format!(
                            "does not belong to this run: {why}. Delete it or choose another --ref-cache path; it is never reused silently"
                        )));
                    }
                } else {
                    let entry = parse_entry(&text).map_err(|why| {
                        bad(format!(
                            "line {number}: {why}; delete that line (it is computed again) or the whole cache"
                        ))
                    })?;
                    entries.insert(entry.id.clone(), entry);
                }
                good_bytes += n as u64;
            }
            if good_bytes == 0 {
                // No whole header line, so no entry either (they follow it): only a run killed
                // as it created the cache leaves that (caches written since are created whole).
                observer.notice(&format!(
                    "{}: no complete header line (a run was killed as it created it); starting it afresh",
                    path.display()
                ));
                fresh = true;
            } else {
                // Cut a torn tail so that appends start on a fresh line.
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(good_bytes))
                    .map_err(io("truncating"))?;
            }
        }
        if fresh {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(TrainError::io("creating", parent))?;
            }
            // Written beside it and renamed: the cache never exists without its header.
            let header = serde_json::to_string(key).expect("a cache key serialises");
            write_atomic(path, format!("{header}\n").as_bytes())?;
        }
        let out = BufWriter::new(
            OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io("opening reference cache"))?,
        );
        Ok(Self {
            path: path.to_owned(),
            entries,
            out,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for pair `id`, if cached for this very content. A cached pair whose content
    /// changed since is an error (the dataset was edited under the cache).
    pub fn get(&self, id: &str, content: &str) -> Result<Option<&RefEntry>> {
        match self.entries.get(id) {
            Some(e) if e.content != content => Err(TrainError::RefCache {
                path: self.path.clone(),
                what: format!(
                    "pair `{id}` changed since its log-probs were cached (question, answers or image differ); delete the cache to recompute"
                ),
            }),
            other => Ok(other),
        }
    }

    /// Appends an entry and flushes it to disk.
    pub fn insert(&mut self, entry: RefEntry) -> Result<()> {
        let line = serde_json::to_string(&entry).expect("an entry serialises");
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(TrainError::io("writing", &self.path))?;
        self.entries.insert(entry.id.clone(), entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::Silent;

    fn key(model: &str) -> CacheKey {
        CacheKey {
            dama_ref_logps: CacheKey::VERSION,
            model: model.into(),
            template: "t".into(),
            preprocessing: "p".into(),
            dtype: "f32".into(),
            model_path: "/models/x".into(),
        }
    }

    fn entry(id: &str, content: &str) -> RefEntry {
        RefEntry {
            id: id.into(),
            content: content.into(),
            chosen: -12.5,
            rejected: -20.25,
            chosen_avg: -1.25,
            rejected_avg: -2.025,
            chosen_tokens: 10,
            rejected_tokens: 10,
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.jsonl");
        {
            let mut c = RefCache::open(&path, &key("m"), &Silent).unwrap();
            c.insert(entry("a", "h1")).unwrap();
            c.insert(entry("b", "h2")).unwrap();
        }
        // A kill in the middle of writing the next line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\":\"c\",\"cont")
            .unwrap();
        let mut c = RefCache::open(&path, &key("m"), &Silent).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", "h1").unwrap(), Some(&entry("a", "h1")));
        assert_eq!(c.get("c", "h3").unwrap(), None);
        c.insert(entry("c", "h3")).unwrap();
        drop(c);
        let c = RefCache::open(&path, &key("m"), &Silent).unwrap();
        assert_eq!(c.len(), 3);
    }

    /// A kill as the cache was created left an empty file or half its header (before the
    /// header was written beside it and renamed): the cache starts afresh, with no error.
    #[test]
    fn a_cache_killed_as_it_was_created_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        for (i, left) in [&b""[..], &b"{\"dama_ref_logps\":1,\"mod"[..]]
            .iter()
            .enumerate()
        {
            let path = dir.path().join(format!("ref-{i}.jsonl"));
            std::fs::write(&path, left).unwrap();
            let mut c = RefCache::open(&path, &key("m"), &Silent).unwrap();
            assert!(c.is_empty());
            c.insert(entry("a", "h1")).unwrap();
            drop(c);
            let c = RefCache::open(&path, &key("m"), &Silent).unwrap();
            assert_eq!(c.get("a", "h1").unwrap(), Some(&entry("a", "h1")));
            assert!(!dir.path().join(format!("ref-{i}.jsonl.tmp")).exists());
        }
    }

    #[test]
    fn impossible_values_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.jsonl");
        RefCache::open(&path, &key("m"), &Silent)
            .unwrap()
            .insert(entry("a", "h1"))
            .unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let line = serde_json::to_string(&entry("b", "h2")).unwrap();
        for (bad, says) in [
            (line.replace("-12.5", "NaN"), "non-finite"),
            (line.replace("-12.5", "-1e38"), "below -1000 nats per token"),
            (line.replace("-12.5", "3.5"), "is positive"),
            ("{\"id\": \"c\"}".to_owned(), "not a reference-cache entry"),
        ] {
            std::fs::write(&path, format!("{good}{bad}\n")).unwrap();
            let err = RefCache::open(&path, &key("m"), &Silent)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("line 3") && err.contains(says), "{err}");
            assert!(
                !err.contains("column"),
                "no position inside the line: {err}"
            );
        }
        assert_eq!(impossible_logp(-50.0, 10), None);
        assert!(impossible_logp(f64::NEG_INFINITY, 10).is_some());
    }

    #[test]
    fn a_cache_of_another_model_is_an_error_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.jsonl");
        RefCache::open(&path, &key("m1"), &Silent).unwrap();
        let err = RefCache::open(&path, &key("m2"), &Silent)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("reference model weights differ"), "{err}");
        assert!(err.contains("never reused silently"), "{err}");
        let other_dtype = CacheKey {
            dtype: "bf16".into(),
            ..key("m1")
        };
        let err = RefCache::open(&path, &other_dtype, &Silent)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("dtype differ"), "{err}");
    }

    #[test]
    fn an_edited_pair_is_not_matched_with_its_stale_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = RefCache::open(&dir.path().join("r.jsonl"), &key("m"), &Silent).unwrap();
        c.insert(entry("a", &content_hash("q", "yes", "no", b"img")))
            .unwrap();
        assert!(
            c.get("a", &content_hash("q", "yes", "no", b"img"))
                .unwrap()
                .is_some()
        );
        let err = c
            .get("a", &content_hash("q", "yes!", "no", b"img"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pair `a` changed"), "{err}");
    }

    #[test]
    fn model_identity_sees_a_changed_weight() {
        let dir = tempfile::tempdir().unwrap();
        let write = |v: f32| {
            let t = candle_core::Tensor::full(v, (256, 256), &candle_core::Device::Cpu).unwrap();
            candle_core::safetensors::save(
                &HashMap::from([("w".to_string(), t)]),
                dir.path().join("model.safetensors"),
            )
            .unwrap();
        };
        write(1.0);
        let a = model_identity(dir.path()).unwrap();
        assert_eq!(a, model_identity(dir.path()).unwrap());
        write(2.0);
        assert_ne!(a, model_identity(dir.path()).unwrap());
        let empty = tempfile::tempdir().unwrap();
        assert!(
            model_identity(empty.path())
                .unwrap_err()
                .to_string()
                .contains("no *.safetensors")
        );
    }
}

//! The authors' JSON list: one JSON array of objects with `question`, `chosen`, `rejected`,
//! `image_path`, `idx`, `logps`, `chosen_logits`, `rejected_logits`. The array is cut into
//! items by a small scanner and each item parsed on its own, so that a file of any size streams
//! and one bad item is one bad record.

use std::io::BufRead;

use super::fields::{Fields, id_of};
use super::{Parsed, ReadOptions, Records, stem};
use crate::error::{DataError, Location, Pos};
use crate::image::ImageSource;
use crate::record::{ImageRef, PreferencePair, Source};

pub(crate) fn read_authors<'a, R: BufRead + Send + 'a>(
    file: &str,
    reader: R,
    images: Box<dyn ImageSource + Send + 'a>,
    options: ReadOptions,
) -> Records<'a> {
    let prefix = stem(file).to_owned();
    let items = JsonItems::new(file, reader);
    let name = file.to_owned();
    let inner = items.map(move |item| {
        let (index, line, bytes) = item?;
        parse_authors(&name, &prefix, index, line, &bytes)
    });
    Records::new(Box::new(inner), images, options, None)
}

/// One item of the authors' list. Their `chosen_logits` and `rejected_logits` are the summed
/// CLIP probabilities ΣP_w and ΣP_l of Eq. 4, so δ (Eq. 5) is their difference; that is what their
/// trainer feeds into σ(δ)/σ(δ̄).
fn parse_authors(file: &str, prefix: &str, index: usize, line: usize, bytes: &[u8]) -> Parsed {
    let at = Location {
        file: file.to_owned(),
        pos: Pos::Item { index, line },
    };
    let map = Fields::parse(bytes, &at)?;
    let id = id_of(&map, "idx").unwrap_or_else(|| format!("{prefix}:{index}"));
    let f = Fields {
        map: &map,
        at: &at,
        id: Some(id.clone()),
    };
    let delta = match (f.opt_f64("chosen_logits")?, f.opt_f64("rejected_logits")?) {
        (Some(w), Some(l)) => Some(w - l),
        (None, None) => None,
        (Some(_), None) => return Err(f.err("rejected_logits", crate::Problem::Missing)),
        (None, Some(_)) => return Err(f.err("chosen_logits", crate::Problem::Missing)),
    };
    let image_path = f.opt_text("image_path")?;
    let pair = PreferencePair {
        id,
        image: image_path.clone().map(ImageRef::named).unwrap_or_default(),
        question: f.text("question")?,
        chosen: f.text("chosen")?,
        rejected: f.text("rejected")?,
        delta,
        source: Source {
            idx: f.opt_i64("idx")?,
            image_path,
            file: Some(file.to_owned()),
            row: Some(index as u64),
            ..Source::default()
        },
        logps: map.get("logps").filter(|v| !v.is_null()).cloned(),
        ..PreferencePair::default()
    };
    Ok((at, pair))
}

/// The items of a top-level JSON array, as raw bytes with their index and starting line.
pub(crate) struct JsonItems<R> {
    reader: R,
    file: String,
    line: usize,
    index: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Items,
    Done,
}

impl<R: BufRead> JsonItems<R> {
    pub(crate) fn new(file: &str, reader: R) -> Self {
        Self {
            reader,
            file: file.to_owned(),
            line: 1,
            index: 0,
            state: State::Start,
        }
    }

    fn fail(&mut self, what: String) -> DataError {
        self.state = State::Done;
        DataError::Format {
            at: Location::line(&self.file, self.line),
            what,
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, DataError> {
        match self.reader.fill_buf() {
            Ok(buf) => Ok(buf.first().copied()),
            Err(e) => {
                self.state = State::Done;
                Err(DataError::io(&self.file, e))
            }
        }
    }

    fn bump(&mut self, b: u8) {
        self.reader.consume(1);
        if b == b'\n' {
            self.line += 1;
        }
    }

    /// Skips whitespace (and a byte-order mark) and returns the next byte without consuming it.
    fn skip_space(&mut self) -> Result<Option<u8>, DataError> {
        while let Some(b) = self.peek()? {
            if b.is_ascii_whitespace()
                || (self.state == State::Start && matches!(b, 0xEF | 0xBB | 0xBF))
            {
                self.bump(b);
            } else {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// The bytes of one item, up to (not including) the `,` or `]` that ends it at depth 0.
    fn item(&mut self) -> Result<Vec<u8>, DataError> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek()? else {
                return Err(self.fail(format!(
                    "the file ends inside item {} (truncated?)",
                    self.index
                )));
            };
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' | b']' if depth == 0 => break,
                    _ => {}
                }
            }
            out.push(b);
            self.bump(b);
        }
        while out.last().is_some_and(u8::is_ascii_whitespace) {
            out.pop();
        }
        Ok(out)
    }
}

impl<R: BufRead> Iterator for JsonItems<R> {
    type Item = Result<(usize, usize, Vec<u8>), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let result = (|| {
            if self.state == State::Start {
                match self.skip_space()? {
                    Some(b'[') => self.bump(b'['),
                    _ => {
                        return Err(self.fail(
                            "not a JSON array (the authors' format is a list of objects)".into(),
                        ));
                    }
                }
                self.state = State::Items;
                if self.skip_space()? == Some(b']') {
                    self.bump(b']');
                    self.state = State::Done;
                }
            }
            if self.state == State::Done {
                return Ok(None);
            }
            self.skip_space()?;
            let (index, line) = (self.index, self.line);
            let bytes = self.item()?;
            match self.peek()? {
                Some(b',') => self.bump(b','),
                _ => {
                    self.bump(b']');
                    self.state = State::Done;
                    if self.skip_space()?.is_some() {
                        return Err(self.fail("text after the end of the JSON array".into()));
                    }
                }
            }
            self.index += 1;
            Ok(Some((index, line, bytes)))
        })();
        result.transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<Result<(usize, usize, String), String>> {
        JsonItems::new("f.json", text.as_bytes())
            .map(|r| {
                r.map(|(i, l, b)| (i, l, String::from_utf8(b).unwrap()))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn cuts_items_respecting_strings_and_nesting() {
        let text = "[\n {\"a\": \"x,]}\\\"\", \"b\": [1, {\"c\": 2}]},\n {\"d\": 3} , 4 ]\n";
        let got = items(text);
        assert_eq!(
            got,
            vec![
                Ok((
                    0,
                    2,
                    "{\"a\": \"x,]}\\\"\", \"b\": [1, {\"c\": 2}]}".to_owned()
                )),
                Ok((1, 3, "{\"d\": 3}".to_owned())),
                Ok((2, 3, "4".to_owned())),
            ]
        );
        assert_eq!(items(" [ ] "), vec![]);
    }

    #[test]
    fn structural_errors_are_fatal_and_located() {
        assert_eq!(
            items("{\"a\": 1}"),
            vec![Err(
                "f.json:1: not a JSON array (the authors' format is a list of objects)".to_owned()
            )]
        );
        let got = items("[{\"a\": 1},\n{\"b\": ");
        assert_eq!(got[0], Ok((0, 1, "{\"a\": 1}".to_owned())));
        assert_eq!(
            got[1],
            Err("f.json:2: the file ends inside item 1 (truncated?)".to_owned())
        );
        assert_eq!(got.len(), 2);
        let got = items("[1] x");
        assert_eq!(
            got[0],
            Err("f.json:1: text after the end of the JSON array".to_owned())
        );
    }

    #[test]
    fn authors_delta_is_the_difference_of_their_probability_sums() {
        let text = r#"[{"question": "Q", "chosen": "A", "rejected": "B", "image_path": "/their/disk/x.jpg",
            "idx": 12, "logps": [-1.5, -2.5], "chosen_logits": 0.75, "rejected_logits": 0.25},
            {"question": "Q", "chosen": "A", "rejected": "B", "image_path": "y.jpg", "chosen_logits": 0.5}]"#;
        let options = ReadOptions {
            images: super::super::ImageCheck::Skip,
            ..Default::default()
        };
        let (pairs, summary) = read_authors(
            "a.json",
            text.as_bytes(),
            Box::new(crate::NoImages),
            options,
        )
        .read_all()
        .unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].id, "12");
        assert_eq!(pairs[0].delta, Some(0.5));
        assert_eq!(pairs[0].logps, Some(serde_json::json!([-1.5, -2.5])));
        assert_eq!(pairs[0].image.name.as_deref(), Some("/their/disk/x.jpg"));
        assert_eq!(
            summary.errors[0].to_string(),
            "a.json: item 1 (line 3) (record `a:1`): field `rejected_logits` is missing"
        );
    }
}

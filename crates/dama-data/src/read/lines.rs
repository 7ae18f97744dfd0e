//! Lines of a JSONL file as raw bytes with their 1-based numbers, so that one line that is not
//! UTF-8 is a bad record, not the end of the file.

use std::io::BufRead;

use crate::error::DataError;

pub(crate) struct Lines<R> {
    reader: R,
    file: String,
    number: usize,
    failed: bool,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(file: &str, reader: R) -> Self {
        Self {
            reader,
            file: file.to_owned(),
            number: 0,
            failed: false,
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    /// (line number, the line without its end and without a leading byte-order mark)
    type Item = Result<(usize, Vec<u8>), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(DataError::io(&self.file, e)));
                }
            }
            self.number += 1;
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            if self.number == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines (a trailing newline, spacing) are not records
            }
            return Some(Ok((self.number, buf)));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_lines_and_skips_blank_ones() {
        let data = b"\xEF\xBB\xBF{\"a\":1}\r\n\n  \n\xff\xfe\n{\"b\":2}";
        let lines: Vec<_> = Lines::new("f", &data[..]).map(Result::unwrap).collect();
        assert_eq!(
            lines,
            vec![
                (1, b"{\"a\":1}".to_vec()),
                (4, b"\xff\xfe".to_vec()),
                (5, b"{\"b\":2}".to_vec())
            ]
        );
    }
}

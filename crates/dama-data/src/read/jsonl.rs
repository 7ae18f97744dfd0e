//! JSONL with an image folder: one pair per line, `image` (or `image_path`) naming a file that
//! the image source resolves, or `image_b64` embedding it. A file whose first line is an
//! annotated header is read as the annotated schema instead.

use std::io::BufRead;

use base64::Engine;

use super::fields::{Fields, id_of};
use super::lines::Lines;
use super::{Parsed, ReadOptions, Records, stem};
use crate::annotated::{self, Header};
use crate::error::{DataError, Location, Problem};
use crate::image::ImageSource;
use crate::record::{ImageRef, PreferencePair, Source};

/// Reads plain or annotated JSONL; `images_for` picks the image source once the header (if
/// any) is known, since an annotated file names its own image folder.
pub(crate) fn read_jsonl_with<'a, R: BufRead + Send + 'a>(
    file: &str,
    reader: R,
    images_for: impl FnOnce(Option<&Header>) -> Box<dyn ImageSource + Send + 'a>,
    options: ReadOptions,
) -> Result<Records<'a>, DataError> {
    let mut lines = Lines::new(file, reader).peekable();
    let header = match lines.peek() {
        Some(Ok((_, first))) if annotated::jsonl::is_header(first) => {
            let (number, first) = lines.next().expect("peeked")?;
            Some(Header::from_json_line(
                &Location::line(file, number),
                &first,
            )?)
        }
        _ => None,
    };
    let images = images_for(header.as_ref());
    let file = file.to_owned();
    let inner: Box<dyn Iterator<Item = Parsed> + Send + 'a> = match &header {
        Some(_) => Box::new(lines.map(move |line| {
            let (number, bytes) = line?;
            annotated::jsonl::parse_record(&Location::line(&file, number), &bytes)
        })),
        None => {
            let prefix = stem(&file).to_owned();
            Box::new(lines.map(move |line| {
                let (number, bytes) = line?;
                parse_plain(&file, &prefix, number, &bytes)
            }))
        }
    };
    Ok(Records::new(inner, images, options, header))
}

pub(crate) fn read_jsonl<'a, R: BufRead + Send + 'a>(
    file: &str,
    reader: R,
    images: Box<dyn ImageSource + Send + 'a>,
    options: ReadOptions,
) -> Result<Records<'a>, DataError> {
    read_jsonl_with(file, reader, |_| images, options)
}

/// One line of plain JSONL. Without an `id`, the id is `<file stem>:<line>`.
fn parse_plain(file: &str, prefix: &str, line: usize, bytes: &[u8]) -> Parsed {
    let at = Location::line(file, line);
    let map = Fields::parse(bytes, &at)?;
    let id = id_of(&map, "id").unwrap_or_else(|| format!("{prefix}:{line}"));
    let f = Fields {
        map: &map,
        at: &at,
        id: Some(id.clone()),
    };
    let name = match f.opt_text("image")? {
        Some(name) => Some(name),
        None => f.opt_text("image_path")?,
    };
    let image = match f.opt_text("image_b64")? {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| f.err("image_b64", Problem::Base64(e)))?;
            ImageRef::embedded(name, bytes)
        }
        None => name.map(ImageRef::named).unwrap_or_default(),
    };
    let pair = PreferencePair {
        id,
        image,
        question: f.text("question")?,
        chosen: f.text("chosen")?,
        rejected: f.text("rejected")?,
        source: Source {
            ds_name: f.opt_text("ds_name")?,
            origin_dataset: f.opt_text("origin_dataset")?,
            origin_split: f.opt_text("origin_split")?,
            idx: f.opt_i64("idx")?,
            image_path: None,
            file: Some(file.to_owned()),
            row: Some(line as u64),
        },
        logps: map.get("logps").filter(|v| !v.is_null()).cloned(),
        ..PreferencePair::default()
    };
    Ok((at, pair))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SkipReason;
    use crate::image::ImageMap;
    use crate::read::{ImageCheck, ReadMode};

    fn png() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(2, 2)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    const DATA: &str = concat!(
        r#"{"id": "a", "image": "imgs/a.png", "question": "Q?", "chosen": "Yes.", "rejected": "No.", "idx": 3}"#,
        "\n",
        r#"{"image": "missing.png", "question": "Q?", "chosen": "Yes.", "rejected": "No."}"#,
        "\n",
        r#"{"image": "a.png", "question": null, "chosen": "Yes.", "rejected": "No."}"#,
        "\n",
        r#"{"image": "a.png", "question": "Q", "chosen": " ", "rejected": "No."}"#,
        "\n",
        r#"{"image": "a.png", "question": "Q", "chosen": "A", "rejected": "No.", "idx": [1]}"#,
        "\n",
        "not json\n",
        r#"{"id": 7, "image": "a.png", "question": "", "chosen": "A", "rejected": "B"}"#,
        "\n",
    );

    fn images() -> ImageMap {
        [("a.png".to_owned(), png())].into_iter().collect()
    }

    #[test]
    fn lenient_skips_and_counts_each_bad_line() {
        let records = read_jsonl(
            "pairs.jsonl",
            DATA.as_bytes(),
            Box::new(images()),
            ReadOptions::default(),
        )
        .unwrap();
        let (pairs, summary) = records.read_all().unwrap();
        let ids: Vec<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "7"]);
        assert_eq!(pairs[0].source.idx, Some(3));
        assert_eq!(pairs[0].source.row, Some(1));
        assert!(pairs[0].image.decoded.is_some());
        let expected = [
            (SkipReason::Malformed, 2),
            (SkipReason::MissingField, 1),
            (SkipReason::EmptyText, 1),
            (SkipReason::MissingImage, 1),
        ];
        assert_eq!(summary.skipped, expected.into_iter().collect());
        let messages: Vec<String> = summary.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages[0],
            "pairs.jsonl:2 (record `pairs:2`): field `image` names image `missing.png`, which the 1 image files given does not have"
        );
        assert_eq!(
            messages[1],
            "pairs.jsonl:3 (record `pairs:3`): field `question` is null"
        );
        assert!(
            messages[4].starts_with("pairs.jsonl:6: record is not valid JSON"),
            "{}",
            messages[4]
        );
    }

    #[test]
    fn strict_stops_at_the_first_bad_line() {
        let options = ReadOptions {
            mode: ReadMode::Strict,
            images: ImageCheck::Load,
            ..Default::default()
        };
        let mut records =
            read_jsonl("p.jsonl", DATA.as_bytes(), Box::new(images()), options).unwrap();
        assert_eq!(records.next().unwrap().unwrap().id, "a");
        let err = records.next().unwrap().unwrap_err();
        assert!(
            err.to_string().starts_with("p.jsonl:2 (record `p:2`)"),
            "{err}"
        );
        assert!(records.next().is_none());
    }

    #[test]
    fn embedded_base64_images() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(png());
        let line =
            format!(r#"{{"image_b64": "{b64}", "question": "Q", "chosen": "A", "rejected": "B"}}"#);
        let bad = r#"{"image_b64": "%%%", "question": "Q", "chosen": "A", "rejected": "B"}"#;
        let data = format!("{line}\n{bad}\n");
        let records = read_jsonl(
            "x.jsonl",
            data.as_bytes(),
            Box::new(crate::NoImages),
            ReadOptions::default(),
        )
        .unwrap();
        let (pairs, summary) = records.read_all().unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].image.decoded.as_ref().unwrap().width(), 2);
        assert_eq!(summary.skipped.get(&SkipReason::UndecodableImage), Some(&1));
    }
}

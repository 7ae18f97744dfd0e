//! Picked files (or the bundled demo set) → a [`Session`], through `dama-data`'s readers:
//! annotated JSONL or parquet, plain JSONL with images picked alongside or a folder picked with
//! `webkitdirectory`, the authors' JSON list, and RLAIF-V parquet with embedded images.
//! Images are loaded as bytes (the worker decodes them), and dropped pairs are kept (a person
//! reopening a curation must see them).

use dama_data::{ImageCheck, ImageMap, PreferencePair, ReadOptions, RuleSplitter};

use crate::session::{Session, SessionError};

/// The bundled demo set: the preference pairs `dama-native demo` (seed 0) sampled from its SFT
/// model on its world of shapes, the answer with fewer errors chosen (their counts in the tags
/// `chosen_errors:N`, `rejected_errors:M`), unscored; `scripts/make-web-demo.sh` made it.
pub const DEMO_JSONL: &[u8] = include_bytes!("../demo/demo.jsonl");
pub const DEMO_NAME: &str = "demo.jsonl";
/// Its number of pairs (the demo button says it; a test checks it against the file).
pub const DEMO_PAIRS: usize = 70;

const DATASET_EXTENSIONS: [&str; 3] = ["jsonl", "json", "parquet"];
const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoadError {
    #[error("no dataset among the picked files (a .jsonl, .json or .parquet file)")]
    NoDataset,
    #[error(
        "`{0}` is not a parquet file: it does not start with parquet's `PAR1` signature (a different file renamed, or a cut download?)"
    )]
    NotParquet(String),
    #[error(
        "`{0}` is neither parquet nor text: its first bytes are not UTF-8, so it cannot be JSONL or JSON"
    )]
    NotText(String),
    #[error("{0}")]
    Read(String),
    #[error("the dataset has no pairs{0}")]
    Empty(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Sorts picked files (name as picked, with its folder for a `webkitdirectory` pick) into
/// dataset files (several parquet shards are read one after another) and images; other files
/// are ignored and named in the summary.
pub fn load_picked(files: Vec<(String, Vec<u8>)>) -> Result<Session, LoadError> {
    let mut datasets = Vec::new();
    let mut images = ImageMap::new();
    let mut ignored = Vec::new();
    for (name, bytes) in files {
        let ext = extension(&name);
        if DATASET_EXTENSIONS.contains(&ext.as_str()) {
            datasets.push((name, bytes));
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            images.insert(&name, bytes);
        } else {
            ignored.push(name);
        }
    }
    if datasets.is_empty() {
        return Err(LoadError::NoDataset);
    }
    datasets.sort_by(|a, b| a.0.cmp(&b.0));
    let mut note = String::new();
    if !images.is_empty() {
        note += &format!("; {} image file(s) picked", images.len());
    }
    if !ignored.is_empty() {
        note += &format!("; ignored {}", ignored.join(", "));
    }
    load_datasets(datasets, images, &note)
}

/// The bundled demo set.
pub fn load_demo() -> Result<Session, LoadError> {
    load_datasets(
        vec![(DEMO_NAME.to_owned(), DEMO_JSONL.to_vec())],
        ImageMap::new(),
        "",
    )
}

fn load_datasets(
    datasets: Vec<(String, Vec<u8>)>,
    images: ImageMap,
    note: &str,
) -> Result<Session, LoadError> {
    let options = ReadOptions {
        include_dropped: true,
        ..ReadOptions::default().with_images(ImageCheck::Load)
    };
    let mut pairs: Vec<PreferencePair> = Vec::new();
    let mut header = None;
    let mut summaries = Vec::new();
    let first = datasets[0].0.clone();
    let mut warnings = Vec::new();
    for (name, bytes) in datasets {
        check_format(&name, &bytes)?;
        let records = dama_data::read_bytes(&name, bytes, images.clone(), options)
            .map_err(|e| LoadError::Read(e.to_string()))?;
        let header_count = records.header().map(|h| h.count);
        if header.is_none() {
            header = records.header().cloned();
        }
        let (mut read, summary) = records
            .read_all()
            .map_err(|e| LoadError::Read(e.to_string()))?;
        let mut line = format!("{name}: {summary}");
        if let Some(first_error) = summary.errors.first() {
            line += &format!(" (first: {first_error})");
        }
        if let Some(w) = count_warning(&name, header_count, &summary) {
            warnings.push(w);
        }
        summaries.push(line);
        pairs.append(&mut read);
    }
    let summary = format!("{}{note}", summaries.join("; "));
    if pairs.is_empty() {
        return Err(LoadError::Empty(format!(": {summary}")));
    }
    let mut session = Session::new(first, pairs, header.as_ref(), &RuleSplitter::new(), summary)?;
    session.warnings = warnings;
    Ok(session)
}

/// Tells the format by the bytes, not the name: a `.parquet` must carry parquet's signature,
/// anything else must be text.
fn check_format(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.starts_with(b"PAR1") {
        return Ok(());
    }
    if extension(name) == "parquet" {
        return Err(LoadError::NotParquet(name.to_owned()));
    }
    let head = &bytes[..bytes.len().min(4096)];
    match std::str::from_utf8(head) {
        // A character cut by the 4096-byte window is fine.
        Err(e) if e.error_len().is_some() => Err(LoadError::NotText(name.to_owned())),
        _ => Ok(()),
    }
}

/// An annotated header announces how many records the file holds; fewer means a cut file.
fn count_warning(
    name: &str,
    announced: Option<usize>,
    summary: &dama_data::ReadSummary,
) -> Option<String> {
    let announced = announced?;
    let found = summary.read + summary.dropped + summary.skipped_total();
    (found != announced).then(|| {
        format!(
            "`{name}`: its header announces {announced} pairs, but the file holds {found} ({} read, {} unreadable){}",
            summary.read,
            summary.skipped_total(),
            if found < announced {
                ": the file looks cut short (an interrupted download or copy?)"
            } else {
                ""
            }
        )
    })
}

/// The demo set as a session, for tests.
#[cfg(test)]
pub(crate) fn demo_session() -> Session {
    load_demo().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dama_data::Status;

    #[test]
    fn the_demo_set_loads_with_images_and_sub_sentences() {
        let s = demo_session();
        assert_eq!(s.len(), DEMO_PAIRS);
        assert!(s.pairs.iter().all(|p| p.image.bytes.is_some()));
        assert!(
            s.pairs.iter().all(|p| p.scores.is_none()),
            "the browser scores it"
        );
        assert_eq!(s.unscored().len(), DEMO_PAIRS);
        assert!(
            s.summary.contains(&format!("read {DEMO_PAIRS} records")),
            "{}",
            s.summary
        );
    }

    fn jsonl(lines: &[&str]) -> Vec<u8> {
        lines.join("\n").into_bytes()
    }

    #[test]
    fn jsonl_with_picked_images_and_the_rule_splitter() {
        let demo = demo_session();
        let image = demo.pairs[0].image.bytes.clone().unwrap();
        let data = jsonl(&[
            r#"{"id":"x1","image":"imgs/one.png","question":"q","chosen":"A red circle. It is big.","rejected":"A blue square."}"#,
            r#"{"id":"x2","image":"missing.png","question":"q","chosen":"a","rejected":"b"}"#,
        ]);
        let s = load_picked(vec![
            ("set/pairs.jsonl".into(), data),
            ("set/imgs/one.png".into(), image.clone()),
            ("set/README.md".into(), b"hi".to_vec()),
        ])
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.pairs[0].image.bytes.as_deref(), Some(image.as_slice()));
        assert_eq!(
            s.pairs[0].sub_sentences.as_ref().unwrap().chosen,
            ["A red circle.", "It is big."]
        );
        assert_eq!(s.splitter, "rules-v1");
        assert!(s.summary.contains("skipped 1 bad"), "{}", s.summary);
        assert!(s.summary.contains("ignored set/README.md"), "{}", s.summary);
    }

    #[test]
    fn an_exported_curation_reopens_with_its_dropped_pairs() {
        let mut s = demo_session();
        crate::export::tests::score_all(&mut s);
        s.set_status(3, Status::Drop);
        let (_, bytes) = crate::export::export_jsonl(&s, crate::export::Mode::Scored).unwrap();
        let again = load_picked(vec![("demo.curated.jsonl".into(), bytes)]).unwrap();
        assert_eq!(again.len(), DEMO_PAIRS);
        assert_eq!(again.pairs[3].annotation.status, Status::Drop);
        assert_eq!(again.clip_model.as_deref(), Some("synthetic scores"));
        assert_eq!(again.scored_count(), DEMO_PAIRS);
    }

    #[test]
    fn picking_no_dataset_or_an_empty_one_says_so() {
        assert_eq!(
            load_picked(vec![("a.png".into(), vec![1])]).unwrap_err(),
            LoadError::NoDataset
        );
        assert!(matches!(
            load_picked(vec![("a.jsonl".into(), b"\n".to_vec())]),
            Err(LoadError::Empty(_))
        ));
        assert!(matches!(
            load_picked(vec![("a.parquet".into(), b"PAR1 broken".to_vec())]),
            Err(LoadError::Read(_))
        ));
    }

    #[test]
    fn the_format_is_told_by_content() {
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let e = load_picked(vec![("train.parquet".into(), noise.clone())]).unwrap_err();
        assert_eq!(e, LoadError::NotParquet("train.parquet".into()));
        assert!(e.to_string().contains("is not a parquet file"), "{e}");
        let e = load_picked(vec![("pairs.jsonl".into(), noise)]).unwrap_err();
        assert_eq!(e, LoadError::NotText("pairs.jsonl".into()));
        // A parquet file named .jsonl is read as parquet.
        let mut s = demo_session();
        crate::export::tests::score_all(&mut s);
        let (_, jsonl) = crate::export::export_jsonl(&s, crate::export::Mode::Scored).unwrap();
        let again = load_picked(vec![("x.json".into(), jsonl)]).unwrap();
        assert_eq!(again.len(), DEMO_PAIRS);
    }

    #[test]
    fn a_cut_annotated_file_names_both_counts() {
        let mut s = demo_session();
        crate::export::tests::score_all(&mut s);
        let (_, bytes) = crate::export::export_jsonl(&s, crate::export::Mode::Scored).unwrap();
        let whole = load_picked(vec![("a.curated.jsonl".into(), bytes.clone())]).unwrap();
        assert_eq!(whole.warnings, Vec::<String>::new());
        // Cut in the middle of the 31st record.
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let mut cut = lines[..31].join(&b'\n');
        cut.push(b'\n');
        cut.extend_from_slice(&lines[31][..40]);
        let part = load_picked(vec![("a.curated.jsonl".into(), cut)]).unwrap();
        assert_eq!(part.len(), 30);
        assert_eq!(part.warnings.len(), 1);
        let w = &part.warnings[0];
        assert!(
            w.contains(&format!("announces {DEMO_PAIRS} pairs"))
                && w.contains("holds 31 (30 read, 1 unreadable)"),
            "{w}"
        );
        assert!(w.contains("cut short"), "{w}");
    }
}

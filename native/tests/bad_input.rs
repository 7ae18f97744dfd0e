//! Broken records of every kind a scraped preference set has (`dama_tests::broken_corpus`),
//! through `score`, `ref-logps` and `train`: every command classifies each record the same
//! way, names each skipped one by file, line and id with its reason, lists them all in a
//! `*.skipped.jsonl`, never reads an image outside the image folder, and never loses the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dama_tests::{BrokenCorpus, broken_corpus, skipped_list, tiny_model};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dama-native"))
}

fn tiny_clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/dama-clip/tests/fixtures/tiny-clip")
}

fn score(data: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["score", "--device", "cpu", "--offline", "--clip"])
        .arg(tiny_clip())
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg(data)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn expected(corpus: &BrokenCorpus) -> Vec<(usize, String)> {
    corpus
        .bad
        .iter()
        .map(|(l, r)| (*l, r.to_string()))
        .collect()
}

/// Every bad record is named on the terminal by its line and reason.
fn names_every_record(out: &str, corpus: &BrokenCorpus) {
    for (line, _) in &corpus.bad {
        assert!(
            out.contains(&format!("pairs.jsonl:{line}")),
            "line {line} not named:\n{out}"
        );
    }
    assert!(
        out.contains(&format!("skipped {} bad record(s)", corpus.bad.len())),
        "{out}"
    );
}

#[test]
fn score_finishes_leaves_out_exactly_the_bad_records_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = broken_corpus(dir.path());
    let out = dir.path().join("scored.jsonl");
    let run = score(&corpus.data, &out, &[]);
    let said = text(&run);
    assert!(run.status.success(), "{said}");
    assert_eq!(ids(&out), corpus.good);
    assert_eq!(
        skipped_list(&dir.path().join("scored.jsonl.skipped.jsonl")),
        expected(&corpus)
    );
    names_every_record(&said, &corpus);
    assert!(
        said.contains("duplicate id") && said.contains("repeats the id of the record at"),
        "{said}"
    );
    // A second run over the complete log gives the same file (nothing is scored again).
    let first = std::fs::read_to_string(&out).unwrap();
    let again = score(&corpus.data, &out, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);

    // --strict stops at the first bad record and names it.
    let strict = score(
        &corpus.data,
        &dir.path().join("strict.jsonl"),
        &["--strict"],
    );
    assert!(!strict.status.success());
    let said = text(&strict);
    assert!(
        said.contains("pairs.jsonl:3") && said.contains("empty-file"),
        "{said}"
    );

    // The user's own absolute paths, when allowed, are read.
    let out = dir.path().join("absolute.jsonl");
    let run = score(&corpus.data, &out, &["--allow-absolute-images"]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(ids(&out).contains(&"absolute".to_owned()));
    let list = skipped_list(&dir.path().join("absolute.jsonl.skipped.jsonl"));
    assert!(list.iter().all(|(l, _)| *l != corpus.absolute_line));
    // …but a relative path out of the folder is refused even then.
    assert!(
        list.contains(&(7, "image_outside_folder".into())),
        "{list:?}"
    );
}

#[test]
fn a_dataset_with_no_usable_record_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, "{\"id\": \"x\", \"image\": \"none.png\", \"question\": \"Q\", \"chosen\": \"A\", \"rejected\": \"B\"}\n").unwrap();
    let out = dir.path().join("bad.scored.jsonl");
    let run = score(&data, &out, &[]);
    assert!(!run.status.success());
    let said = text(&run);
    assert!(said.contains("nothing is written"), "{said}");
    assert!(!out.exists(), "no annotated file is left behind");
    // Each piece of an error is said once.
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.matches("none.png").count(), 1, "{err}");
}

fn llava_cmd(command: &str, model: &Path, data: &Path) -> Command {
    let mut cmd = bin();
    cmd.args([command, "--device", "cpu", "--max-length", "512", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data);
    cmd
}

#[test]
fn ref_logps_and_train_classify_the_same_records_and_list_them() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = broken_corpus(dir.path());
    let model = tiny_model(dir.path(), 4);

    let cache = dir.path().join("ref.jsonl");
    let strict = llava_cmd("ref-logps", &model, &corpus.data)
        .arg("--out")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(!strict.status.success());
    let said = text(&strict);
    assert!(
        said.contains("pairs.jsonl:3") && said.contains("--skip-bad"),
        "{said}"
    );

    let run = llava_cmd("ref-logps", &model, &corpus.data)
        .args(["--skip-bad", "--out"])
        .arg(&cache)
        .output()
        .unwrap();
    let said = text(&run);
    assert!(run.status.success(), "{said}");
    names_every_record(&said, &corpus);
    assert_eq!(
        skipped_list(&dir.path().join("ref.jsonl.skipped.jsonl")),
        expected(&corpus)
    );
    assert_eq!(
        ids(&cache),
        corpus.good,
        "one cache entry per good pair, none twice"
    );

    let out = dir.path().join("run");
    let run = llava_cmd("train", &model, &corpus.data)
        .args([
            "--skip-bad",
            "--mode",
            "dpo",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let said = text(&run);
    assert!(run.status.success(), "{said}");
    names_every_record(&said, &corpus);
    assert_eq!(skipped_list(&out.join("skipped.jsonl")), expected(&corpus));
}

#[test]
fn more_than_twenty_bad_records_are_counted_and_listed_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = broken_corpus(dir.path());
    let mut lines = std::fs::read(&corpus.data).unwrap();
    for i in 0..30 {
        lines.extend_from_slice(format!("{{\"id\": \"e{i}\", \"image\": \"images/g0.png\", \"question\": \"Q\", \"chosen\": \"\", \"rejected\": \"B\"}}\n").as_bytes());
    }
    std::fs::write(&corpus.data, lines).unwrap();
    let model = tiny_model(dir.path(), 4);
    let cache = dir.path().join("ref.jsonl");
    let run = llava_cmd("ref-logps", &model, &corpus.data)
        .args(["--skip-bad", "--out"])
        .arg(&cache)
        .output()
        .unwrap();
    let said = text(&run);
    assert!(run.status.success(), "{said}");
    let total = corpus.bad.len() + 30;
    assert!(
        said.contains(&format!("skipped {total} bad record(s)")),
        "{said}"
    );
    assert!(
        said.contains(&format!("… and {} more: every one is in", total - 20)),
        "{said}"
    );
    assert_eq!(
        skipped_list(&dir.path().join("ref.jsonl.skipped.jsonl")).len(),
        total
    );
}

/// An OpenAI-compatible endpoint that refuses every request with 401 and echoes the key it was
/// sent, as some servers do; returns its base URL. It serves until the test process ends.
fn echoing_server() -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (auth, _body, reader) = dama_tests::read_http_request(stream);
            let reply = format!("{{\"error\": \"invalid credentials: {auth}\"}}");
            let _ = write!(
                reader.into_inner(),
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    url
}

#[test]
fn an_llm_endpoint_never_shows_the_key_and_a_fallback_is_said_and_recorded() {
    const KEY: &str = "sk-secret-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.jsonl");
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    image::RgbImage::from_pixel(20, 20, image::Rgb([200, 0, 0]))
        .save(dir.path().join("images/a.png"))
        .unwrap();
    std::fs::write(
        &data,
        "{\"id\": \"a\", \"image\": \"images/a.png\", \"question\": \"Q\", \"chosen\": \"It is red. It is round.\", \"rejected\": \"It is blue.\"}\n",
    )
    .unwrap();
    let url = echoing_server();
    let llm = [
        "--splitter",
        "llm",
        "--llm-base-url",
        &url,
        "--llm-model",
        "m",
        "--llm-api-key",
        KEY,
    ];
    let failed = score(&data, &dir.path().join("a.jsonl"), &llm);
    assert!(!failed.status.success());
    let said = text(&failed);
    assert!(!said.contains(KEY), "the key reached the terminal:\n{said}");
    assert!(
        said.contains("HTTP 401") && said.contains("[redacted]"),
        "{said}"
    );

    let out = dir.path().join("b.jsonl");
    let run = score(&data, &out, &[&llm[..], &["--llm-fallback"]].concat());
    let said = text(&run);
    assert!(run.status.success(), "{said}");
    assert!(!said.contains(KEY), "{said}");
    assert!(
        said.contains("pair `a`") && said.contains("after an LLM failure instead"),
        "the fallback is said, naming the pair:\n{said}"
    );
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["splitter"], "rules-v1 after an LLM failure",
        "{header}"
    );
    for file in [out.clone(), dir.path().join("b.jsonl.score-log.jsonl")] {
        assert!(
            !std::fs::read_to_string(&file).unwrap().contains(KEY),
            "{}",
            file.display()
        );
    }
}

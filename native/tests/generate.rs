//! `dama-native generate` on a tiny random LLaVA (`init-tiny`'s kind): the answers file's
//! format, batch-independence, resuming after SIGKILL (and a cut last line), bad input named
//! by file, line and field, and the `dama_eval::answers::Generator` seam.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use dama_eval::answers::{BenchmarkQuestion, Generator, ImageSource};
use dama_native::commands::generate::GenerateArgs;
use dama_native::generator::ModelGenerator;
use dama_tests::tiny_model;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dama-native"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `n` questions about coloured images, as a questions file beside its `images/` folder.
fn questions(dir: &Path, n: usize) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let colours = [
        [220u8, 30, 30],
        [30, 180, 60],
        [40, 60, 220],
        [240, 220, 40],
    ];
    let asks = [
        "What colour is the image?",
        "Describe the picture in detail.",
        "Is there a dog?",
    ];
    let mut lines = Vec::new();
    for i in 0..n {
        let file = format!("img{i}.png");
        image::RgbImage::from_pixel(20 + i as u32 % 7, 26, image::Rgb(colours[i % 4]))
            .save(images.join(&file))
            .unwrap();
        lines.push(
            serde_json::json!({"id": format!("q{i}"), "image": format!("images/{file}"),
                               "question": asks[i % 3]})
            .to_string(),
        );
    }
    let path = dir.join("questions.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn generate(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["generate", "--device", "cpu", "--offline", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// id → tokens of an answers file.
fn tokens_by_id(path: &Path) -> std::collections::BTreeMap<String, Vec<u64>> {
    lines(path)
        .iter()
        .map(|v| {
            let t = v["tokens"].as_array().unwrap();
            (
                v["id"].as_str().unwrap().to_owned(),
                t.iter().map(|x| x.as_u64().unwrap()).collect(),
            )
        })
        .collect()
}

fn tokenizer(model: &Path) -> dama_llava::PairEncoder {
    let cfg = dama_llava::LlavaConfig::from_file(&model.join("config.json")).unwrap();
    dama_llava::PairEncoder::from_file(
        &model.join("tokenizer.json"),
        cfg.image_token_id,
        cfg.num_image_tokens(),
    )
    .unwrap()
}

#[test]
fn answers_file_lines_have_the_documented_fields_and_do_not_depend_on_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 1);
    let data = questions(dir.path(), 7);
    let out = dir.path().join("answers.jsonl");
    let o = generate(
        &model,
        &data,
        &out,
        &["--max-new-tokens", "12", "--batch-size", "3"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("answered 7 of 7 questions"),
        "{}",
        text(&o)
    );
    let raw = std::fs::read_to_string(&out).unwrap();
    let enc = tokenizer(&model);
    for (i, line) in raw.lines().enumerate() {
        assert!(
            line.starts_with(&format!("{{\"id\":\"q{i}\",\"question\":")),
            "{line}"
        );
        let v: Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        let tokens: Vec<u32> = v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        assert!(!tokens.is_empty() && tokens.len() <= 12);
        match v["finish"].as_str().unwrap() {
            "eos" => assert_eq!(tokens.last(), Some(&2)),
            "length" => assert!(tokens.len() == 12 && !tokens.contains(&2)),
            other => panic!("finish {other}"),
        }
        let decoded = enc.tokenizer().decode(&tokens, true).unwrap();
        assert_eq!(v["answer"].as_str().unwrap(), decoded.trim());
        let t = &v["timing"];
        assert!(t["ms"].as_f64().unwrap() > 0.0 && t["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!((1..=3).contains(&t["batch"].as_u64().unwrap()));
    }
    // other batch sizes, same answers; sampling repeats by seed whatever the batch
    for (extra, name) in [
        (vec!["--batch-size", "1"], "b1.jsonl"),
        (vec!["--batch-size", "7"], "b7.jsonl"),
    ] {
        let other = dir.path().join(name);
        let mut args = vec!["--max-new-tokens", "12"];
        args.extend(extra);
        assert!(generate(&model, &data, &other, &args).status.success());
        assert_eq!(tokens_by_id(&other), tokens_by_id(&out), "{name}");
    }
    let sample = |name: &str, batch: &str, seed: &str| {
        let p = dir.path().join(name);
        let args = [
            "--max-new-tokens",
            "12",
            "--temperature",
            "0.9",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--batch-size",
            batch,
        ];
        let o = generate(&model, &data, &p, &args);
        assert!(o.status.success(), "{}", text(&o));
        tokens_by_id(&p)
    };
    let s1 = sample("s1.jsonl", "2", "5");
    assert_eq!(s1, sample("s2.jsonl", "5", "5"));
    assert_ne!(s1, sample("s3.jsonl", "2", "6"));
    // beam search writes the same format
    let beams = dir.path().join("beams.jsonl");
    let o = generate(
        &model,
        &data,
        &beams,
        &["--max-new-tokens", "12", "--num-beams", "3"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lines(&beams).len(), 7);
}

#[test]
fn a_killed_run_resumes_without_repeating_or_losing_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 2);
    let data = questions(dir.path(), 24);
    let args = ["--max-new-tokens", "300", "--batch-size", "2"];
    let whole = dir.path().join("whole.jsonl");
    assert!(generate(&model, &data, &whole, &args).status.success());

    let out = dir.path().join("answers.jsonl");
    let mut child = bin()
        .args(["generate", "--device", "cpu", "--offline", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let count = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    while count(&out) < 4 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let kept = count(&out);
    assert!(
        (4..24).contains(&kept),
        "the run was killed after {kept} of 24 answers"
    );
    // a kill in the middle of writing a line leaves it cut
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut f, b"{\"id\":\"q23\",\"question\":\"Is th").unwrap();
    drop(f);

    let o = generate(&model, &data, &out, &args);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("was cut short"), "{t}");
    assert!(t.contains(&format!("({kept} were already in")), "{t}");
    let ids: Vec<String> = lines(&out)
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 24);
    assert_eq!(ids.len(), 24, "no answer twice");
    assert_eq!(tokens_by_id(&out), tokens_by_id(&whole));
    // a third run has nothing to do; other settings are refused
    let o = generate(&model, &data, &out, &args);
    assert!(text(&o).contains("answered 0 of 24"), "{}", text(&o));
    let o = generate(&model, &data, &out, &["--max-new-tokens", "30"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("max_new_tokens: 300 then, 30 now"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_input_names_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 3);
    let data = questions(dir.path(), 2);
    std::fs::write(dir.path().join("outside.png"), b"not read").unwrap();
    let mut text_lines: Vec<String> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    text_lines.extend([
        r#"{"id": "m", "image": "images/none.png", "question": "Q?"}"#.to_owned(),
        r#"{"id": "o", "image": "../outside.png", "question": "Q?"}"#.to_owned(),
        r#"{"id": "q0", "image": "images/img0.png", "question": "again?"}"#.to_owned(),
        "not json".to_owned(),
        r#"{"id": "n", "image": "images/img1.png"}"#.to_owned(),
        r#"{"id": "t", "image": "images/img1.png", "question": 7}"#.to_owned(),
    ]);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, text_lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("a.jsonl");
    let o = generate(&model, &bad, &out, &["--max-new-tokens", "4"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("bad.jsonl:3 (record `m`): field `image` names image `images/none.png`"),
        "{t}"
    );
    let o = generate(&model, &bad, &out, &["--max-new-tokens", "4", "--skip-bad"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("skipped 6 bad record(s)"), "{t}");
    for want in [
        "bad.jsonl:4 (record `o`): field `image` names image `../outside.png`, which is outside",
        "bad.jsonl:5 (record `q0`): field `id` repeats the id of the record at",
        "bad.jsonl:6: record is not valid JSON",
        "bad.jsonl:7 (record `n`): field `question` is missing",
        "bad.jsonl:8 (record `t`): field `question` has the wrong type",
    ] {
        assert!(t.contains(want), "{want}\n{t}");
    }
    assert_eq!(lines(&out).len(), 2);
    let list = lines(&dir.path().join("a.jsonl.skipped.jsonl"));
    let reasons: Vec<&str> = list.iter().map(|v| v["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "missing_image",
            "image_outside_folder",
            "duplicate_id",
            "malformed",
            "missing_field",
            "malformed"
        ]
    );

    // flags that do not make a decoding, and a prompt longer than --max-length
    let fresh = dir.path().join("b.jsonl");
    for (args, want) in [
        (vec!["--top-p", "0.9"], "apply only when sampling"),
        (
            vec!["--temperature", "1", "--num-beams", "3"],
            "not supported",
        ),
        (
            vec!["--temperature", "1", "--top-p", "0"],
            "top_p 0 must be in (0, 1]",
        ),
        (
            vec!["--max-length", "10"],
            "leaves no room under --max-length 10",
        ),
    ] {
        let o = generate(&model, &data, &fresh, &args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    let o = bin()
        .args(["generate", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("--out"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_preference_dataset_and_a_single_image_give_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 4);
    let pairs = dama_tests::dataset(dir.path(), 3, |_, _| {});
    let out = dir.path().join("a.jsonl");
    let o = generate(&model, &pairs, &out, &["--max-new-tokens", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    let answers = lines(&out);
    let ids: Vec<&str> = answers.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["pair0", "pair1", "pair2"]);
    assert_eq!(answers[1]["question"], "What colour is the image?");
    let o = bin()
        .args([
            "generate",
            "--device",
            "cpu",
            "--max-new-tokens",
            "10",
            "--model",
        ])
        .arg(&model)
        .arg("--image")
        .arg(dir.path().join("images/img1.png"))
        .args(["--question", "What colour is the image?"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        printed.trim_end_matches('\n'),
        answers[1]["answer"].as_str().unwrap()
    );
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: GenerateArgs,
}

#[test]
fn the_benchmark_seam_answers_like_the_command_and_resumes_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 5);
    let data = questions(dir.path(), 3);
    let cli_out = dir.path().join("cli.jsonl");
    assert!(
        generate(&model, &data, &cli_out, &["--max-new-tokens", "8"])
            .status
            .success()
    );
    let cli = lines(&cli_out);

    let m = model.display().to_string();
    let parsed = Cli::parse_from([
        "x",
        "--model",
        &m,
        "--device",
        "cpu",
        "--max-new-tokens",
        "8",
        "--image",
        "unused",
        "--question",
        "unused",
    ])
    .args;
    let file = dir.path().join("bench.jsonl");
    let load = || {
        ModelGenerator::load(&parsed.model, &parsed.input, &parsed.device, &parsed.decode)
            .unwrap()
            .with_answers_file(file.clone())
    };
    let png = std::fs::read(dir.path().join("images/img0.png")).unwrap();
    let qs = vec![
        BenchmarkQuestion {
            id: "q0".into(),
            question: cli[0]["question"].as_str().unwrap().into(),
            image: ImageSource::Base64(base64::engine::general_purpose::STANDARD.encode(&png)),
        },
        BenchmarkQuestion {
            id: "q2".into(),
            question: cli[2]["question"].as_str().unwrap().into(),
            image: ImageSource::Path(dir.path().join("images/img2.png")),
        },
    ];
    let mut g = load();
    let got = g.generate(&qs).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, "q0");
    assert_eq!(got[0].answer, cli[0]["answer"].as_str().unwrap());
    assert_eq!(got[1].answer, cli[2]["answer"].as_str().unwrap());
    // what dama-eval reads back
    let read = dama_eval::answers::Answers::read(&file).unwrap();
    assert_eq!(read.records.len(), 2);
    // again: nothing generated, the same answers from the file
    let again = load().generate(&qs).unwrap();
    assert_eq!(again, got);
    assert_eq!(lines(&file).len(), 2);
    // a URL image cannot be answered; a repeated id is refused
    let url = BenchmarkQuestion {
        id: "u".into(),
        question: "Q?".into(),
        image: ImageSource::Url("https://example.com/x.png".into()),
    };
    let e = load().generate(&[url]).unwrap_err().to_string();
    assert!(e.contains("question `u`") && e.contains("URL"), "{e}");
    let e = load()
        .generate(&[qs[0].clone(), qs[0].clone()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`q0` appears twice"), "{e}");
}

//! Object HalBench: the reference's fixture, the design's counts, and bad benchmark files.

use super::*;
use std::collections::BTreeSet;

use serde_json::json;

use super::design::*;

/// The fixture's questions with a real PNG each (the fixture's own carry placeholder bytes).
fn questions_with_pngs(dir: &Path) -> PathBuf {
    let lines: Vec<Value> = read_jsonl(&fixtures().join("objhal/questions.jsonl"))
        .into_iter()
        .enumerate()
        .map(|(i, mut q)| {
            q["image"] = Value::String(png_base64(i as u8));
            q
        })
        .collect();
    let path = dir.join("questions.jsonl");
    write_lines(&path, &lines);
    path
}

#[test]
fn objhal_equals_the_reference_on_its_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixtures().join("objhal");
    let questions = questions_with_pngs(dir.path());
    let out = dir.path().join("out");
    let run = eval(&[
        &"objhal",
        &"--questions",
        &questions,
        &"--coco",
        &f.join("coco"),
        &"--synonyms",
        &f.join("synonyms.txt"),
        &"--answers",
        &f.join("answers.jsonl"),
        &"--wordnet",
        &fixtures().join("wordnet"),
        &"--out",
        &out,
    ]);
    let said = ok(&run);
    let summary = read_json(&out.join("summary.json"));
    assert_close(
        &summary,
        &read_json(&f.join("golden_summary.json")),
        "summary",
    );
    assert_eq!(summary["benchmark"], "objhal");
    assert_eq!(summary["extractor"], "offline");
    let details = read_jsonl(&out.join("details.jsonl"));
    let golden = read_jsonl(&f.join("golden_details.jsonl"));
    assert_eq!(details.len(), golden.len());
    for (i, (d, g)) in details.iter().zip(&golden).enumerate() {
        assert_close(d, g, &format!("details[{i}]"));
    }
    // Not 300 images: a warning, in the terminal and the summary, not a failure.
    assert!(said.contains("warning: 41 distinct images, not Object HalBench's 300"));
    assert!(
        summary["warnings"]
            .to_string()
            .contains("not Object HalBench's 300")
    );
    // The table, in percent.
    let g = read_json(&f.join("golden_summary.json"));
    for key in ["CHAIRs", "CHAIRs_refine", "CHAIRi", "obj_rec"] {
        let pct = format!("{:.2}", 100.0 * g[key].as_f64().unwrap());
        assert!(said.contains(&pct), "no {key} = {pct} in:\n{said}");
    }
}

#[test]
fn objhal_counts_what_the_design_says() {
    let dir = tempfile::tempdir().unwrap();
    let d = design(dir.path());
    let out = dir.path().join("out");
    let said = ok(&objhal(&d, &d.answers, &out, &[]));

    // What CHAIR must be, from the design alone.
    let (mut hallucinating, mut with_objects, mut mentions, mut hallucinated) = (0, 0, 0, 0);
    let (mut recalled, mut gt) = (0, 0);
    for a in &ANSWERS {
        let t = truth(a.image);
        let bad = a.mentions.iter().filter(|(_, c)| !t.contains(c)).count();
        hallucinating += usize::from(bad > 0);
        with_objects += usize::from(!a.mentions.is_empty());
        mentions += a.mentions.len();
        hallucinated += bad;
        let correct: BTreeSet<&str> = a
            .mentions
            .iter()
            .map(|(_, c)| *c)
            .filter(|c| t.contains(c))
            .collect();
        recalled += correct.len();
        gt += t.len();
    }
    let n = ANSWERS.len();
    let s = read_json(&out.join("summary.json"));
    let f = |k: &str| s[k].as_f64().unwrap();
    assert_eq!(f("CHAIRs"), hallucinating as f64 / n as f64);
    assert_eq!(
        f("CHAIRs_refine"),
        hallucinating as f64 / with_objects as f64
    );
    assert_eq!(f("CHAIRi"), hallucinated as f64 / mentions as f64);
    assert_eq!(f("obj_rec"), recalled as f64 / gt as f64);
    assert_eq!(s["sentence_num"], n);
    assert_eq!(s["coco_sentence_num"], with_objects);
    assert_eq!(s["mention_count"], mentions);
    assert_eq!(s["hallucinated_mention_count"], hallucinated);
    assert_eq!(s["image_num"], IMAGES.len());
    // The design exercises each case.
    assert!(hallucinating > 0 && hallucinating < with_objects && with_objects < n);

    // Each answer's details: its mentions with their classes, the hallucinated ones.
    let details = read_jsonl(&out.join("details.jsonl"));
    assert_eq!(details.len(), n);
    for (a, d) in ANSWERS.iter().zip(&details) {
        let t = truth(a.image);
        assert_eq!(d["image_id"], a.image);
        let generated: Vec<(String, String)> =
            serde_json::from_value(d["mscoco_generated_words"].clone()).unwrap();
        let want: Vec<(String, String)> = a
            .mentions
            .iter()
            .map(|(w, c)| (w.to_string(), c.to_string()))
            .collect();
        assert_eq!(generated, want, "{}", a.text);
        let bad: Vec<String> = d["mscoco_hallucinated_words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[1][1].as_str().unwrap().to_owned())
            .collect();
        let want_bad: Vec<String> = a
            .mentions
            .iter()
            .filter(|(_, c)| !t.contains(c))
            .map(|(_, c)| c.to_string())
            .collect();
        assert_eq!(bad, want_bad, "{}", a.text);
        let gt_words: BTreeSet<String> =
            serde_json::from_value(d["mscoco_gt_words"].clone()).unwrap();
        assert_eq!(gt_words, t.iter().map(|c| c.to_string()).collect());
    }
    assert!(
        said.contains("5 distinct images, not Object HalBench's 300"),
        "{said}"
    );
}

#[test]
fn objhal_refuses_bad_benchmark_files_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = design(dir.path());
    let out = dir.path().join("out");
    let good = std::fs::read_to_string(&d.questions).unwrap();
    let lines: Vec<&str> = good.lines().collect();

    // A question without its image (line 3).
    let mut broken: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    broken[2].as_object_mut().unwrap().remove("image");
    write_lines(&d.questions, &broken);
    refused(
        &objhal(&d, &d.answers, &out, &[]),
        &out,
        &["questions.jsonl, line 3, record image_id 103", "no image"],
    );

    // An image file the question names and the folder lacks.
    broken[2]["image_path"] = json!("images/103.png");
    write_lines(&d.questions, &broken);
    refused(
        &objhal(&d, &d.answers, &out, &[]),
        &out,
        &[
            "questions.jsonl, line 3, record image_id 103",
            "field `image_path`",
            "103.png",
        ],
    );

    // Bytes that are no image.
    broken[2]["image"] = json!(base64::engine::general_purpose::STANDARD.encode("not a png"));
    write_lines(&d.questions, &broken);
    refused(
        &objhal(&d, &d.answers, &out, &[]),
        &out,
        &[
            "questions.jsonl, line 3, record image_id 103",
            "field `image` holds no readable image",
        ],
    );
    std::fs::write(&d.questions, &good).unwrap();

    // An answer to an image the benchmark does not ask about.
    let mut answers = answer_lines();
    answers[3]["image_id"] = json!(999);
    let other = dir.path().join("other.jsonl");
    write_lines(&other, &answers);
    refused(
        &objhal(&d, &other, &out, &[]),
        &out,
        &[
            "other.jsonl, line 4, record image_id 999",
            "field `image_id`",
            "not one of the benchmark's 5 questions",
        ],
    );
}

#[test]
fn objhal_refuses_an_image_the_annotations_lack() {
    let dir = tempfile::tempdir().unwrap();
    let d = design(dir.path());
    let out = dir.path().join("out");
    // Without --questions, the answers are checked against COCO itself.
    let mut answers = answer_lines();
    answers[4]["id"] = json!("424242");
    let path = dir.path().join("answers-424242.jsonl");
    write_lines(&path, &answers);
    let run = eval(&[
        &"objhal",
        &"--coco",
        &d.coco,
        &"--synonyms",
        &d.synonyms,
        &"--wordnet",
        &d.wordnet,
        &"--answers",
        &path,
        &"--out",
        &out,
    ]);
    refused(
        &run,
        &out,
        &[
            "answers-424242.jsonl, line 5, record id 424242",
            "field `id`: image 424242 has no COCO annotations",
            "instances_val2014.json",
        ],
    );
}

#[test]
fn answers_of_another_benchmark_are_refused_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = design(dir.path());
    let f = fixtures();
    let out = dir.path().join("out");

    // AMBER's answers (a JSON list of `id`, `response`) given to Object HalBench.
    refused(
        &objhal(&d, &f.join("amber/answers.json"), &out, &[]),
        &out,
        &[
            "answers.json, record id 110 (#1)",
            "field `id`",
            "another benchmark",
        ],
    );

    // Object HalBench's answers given to AMBER.
    let run = eval(&[
        &"amber",
        &"--data",
        &f.join("amber/data"),
        &"--answers",
        &d.answers,
        &"--wordnet",
        &f.join("wordnet"),
        &"--out",
        &out,
    ]);
    // (AMBER has an id 101: the question tells the files apart.)
    refused(
        &run,
        &out,
        &[
            "answers.jsonl, line 1, record id 101",
            "field `question`",
            "Is there a tree in this image?",
            "another benchmark",
        ],
    );
    // … in RLAIF-V's style, with `image_id`.
    let rlaifv = dir.path().join("rlaifv.jsonl");
    write_lines(&rlaifv, &answer_lines()[1..]);
    let run = eval(&[
        &"amber",
        &"--data",
        &f.join("amber/data"),
        &"--answers",
        &rlaifv,
        &"--wordnet",
        &f.join("wordnet"),
        &"--out",
        &out,
    ]);
    refused(
        &run,
        &out,
        &[
            "rlaifv.jsonl, line 1, record image_id 102",
            "field `image_id`",
            "Object HalBench",
        ],
    );

    // And to MMHal-Bench's judge (which is never asked).
    let run = bin()
        .args([
            "eval",
            "judge",
            "--llm-base-url",
            "http://127.0.0.1:9/v1",
            "--llm-model",
            "m",
        ])
        .arg("--template")
        .arg(f.join("mmhal/template.json"))
        .arg("--answers")
        .arg(&d.answers)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    refused(
        &run,
        &out,
        &[
            "answers.jsonl, line 1, record id 101",
            "field `id`",
            "MMHal-Bench's 16 questions",
        ],
    );
}

/// RLAIF-V's extraction prompt as its script fills it, recovered from the one the reference
/// fixture filled (`extractor_prompt.json`, made from RLAIF-V's source, not from dama's copy).
fn extractor_template() -> String {
    let x = read_json(&fixtures().join("objhal/extractor_prompt.json"));
    let (q, a, p) = (
        x["question"].as_str().unwrap(),
        x["answer"].as_str().unwrap(),
        x["prompt"].as_str().unwrap(),
    );
    assert_eq!((p.matches(q).count(), p.matches(a).count()), (1, 1));
    p.replace(a, "{answer}").replace(q, "{question}")
}

#[test]
fn objhal_with_the_llm_extractor_asks_the_reference_prompt_once() {
    use super::server::*;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let d = design(dir.path());
    // A stand-in for GPT: it lists each answer's objects as the design names them. Answers of
    // three words or fewer are never sent (the reference lists no object for them).
    let template = extractor_template();
    let sent: Vec<&Answer> = ANSWERS
        .iter()
        .filter(|a| a.text.split_whitespace().count() > 3)
        .collect();
    let exchanges: Exchanges = sent
        .iter()
        .map(|a| {
            let prompt = template
                .replace("{question}", QUESTION)
                .replace("{answer}", a.text);
            let objects: Vec<&str> = a.mentions.iter().map(|(w, _)| *w).collect();
            let x = Exchange {
                messages: json!([{"role": "system", "content": prompt}]),
                temperature: 0.2,
                reply: serde_json::to_string(&objects).unwrap(),
            };
            (prompt, x)
        })
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = judge_server(exchanges, seen.clone());
    let out = dir.path().join("out");
    let offline = dir.path().join("offline");
    ok(&objhal(&d, &d.answers, &offline, &[]));
    let llm: [&dyn AsRef<std::ffi::OsStr>; 6] = [
        &"--extractor",
        &"llm",
        &"--llm-base-url",
        &url,
        &"--llm-model",
        &"gpt-x",
    ];
    let run = || {
        let mut c = bin();
        c.env("DAMA_LLM_API_KEY", KEY).arg("eval");
        for a in [
            &"objhal" as &dyn AsRef<std::ffi::OsStr>,
            &"--questions",
            &d.questions,
            &"--coco",
            &d.coco,
            &"--synonyms",
            &d.synonyms,
            &"--wordnet",
            &d.wordnet,
            &"--answers",
            &d.answers,
            &"--out",
            &out,
        ]
        .iter()
        .chain(llm.iter())
        {
            c.arg(a);
        }
        c.output().unwrap()
    };
    let said = ok(&run());
    assert_eq!(seen.lock().unwrap().requests.len(), sent.len());
    // The design's objects, found by the LLM: the offline path's numbers (no answer of the
    // design repeats an object, so listing each once changes nothing).
    let s = read_json(&out.join("summary.json"));
    let o = read_json(&offline.join("summary.json"));
    for key in [
        "CHAIRs",
        "CHAIRs_refine",
        "CHAIRi",
        "obj_rec",
        "mention_count",
    ] {
        assert_eq!(s[key], o[key], "{key}");
    }
    assert_eq!(s["extractor"], "llm:gpt-x");
    let details = read_jsonl(&out.join("details.jsonl"));
    for (a, det) in ANSWERS.iter().zip(&details) {
        let classes: Vec<String> = det["mscoco_generated_words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[1].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = a.mentions.iter().map(|(_, c)| c.to_string()).collect();
        assert_eq!(classes, want, "{}", a.text);
    }
    assert_no_key(&said, dir.path());
    // A rerun asks nothing.
    let said = ok(&run());
    assert_eq!(seen.lock().unwrap().requests.len(), sent.len());
    assert!(
        said.contains(&format!(
            "extractor: 0 requests, {} cached replies",
            sent.len()
        )),
        "{said}"
    );
}

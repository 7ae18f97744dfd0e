//! LLaVA-Bench's judge inputs and summary against the independent reference
//! (scripts/eval_reference/llava_bench.py): every prompt byte for byte, every score pair, the
//! summary.

mod common;

use dama_eval::answers::Answers;
use dama_eval::judge::llava_bench::{self, Bench, Files, SYSTEM};

fn bench() -> Bench {
    let dir = common::fixtures().join("llava_bench");
    Bench::load(&Files {
        questions: &dir.join("questions.jsonl"),
        context: &dir.join("context.jsonl"),
        reference: &dir.join("answers_gpt4.jsonl"),
        rule: &dir.join("rule.json"),
    })
    .unwrap()
}

#[test]
fn prompts_scores_and_summary_equal_the_reference() {
    let dir = common::fixtures().join("llava_bench");
    let bench = bench();
    let answers = bench
        .merge_answers(&Answers::read(&dir.join("answers.jsonl")).unwrap())
        .unwrap();
    let exchanges = common::read_json(dir.join("exchanges.json"));
    let exchanges = exchanges.as_array().unwrap();
    assert_eq!(exchanges.len(), answers.len());
    let mut tuples = Vec::new();
    for (i, x) in exchanges.iter().enumerate() {
        assert_eq!(x["system"], SYSTEM);
        assert_eq!(
            bench.content(i, &answers[i]),
            x["prompt"].as_str().unwrap(),
            "prompt {i}"
        );
        let t = llava_bench::parse_score(x["reply"].as_str().unwrap()).unwrap_or((-1.0, -1.0));
        tuples.push((format!("llava_bench_{}", bench.questions[i].category), t));
    }
    let summary = llava_bench::summarize(&tuples, "j");
    let golden = common::read_json(dir.join("golden_summary.json"));
    common::assert_close(
        &serde_json::to_value(&summary.categories).unwrap(),
        &golden["categories"],
        "categories",
    );
    let unparsed = tuples.iter().filter(|(_, t)| *t == (-1.0, -1.0)).count();
    assert_eq!(unparsed as u64, golden["unparsed_scores"].as_u64().unwrap());
    // The fixture exercises a string caption (joined per character) and a list.
    assert!(bench.contexts.iter().any(|c| c.starts_with("A\n")));
    assert!(bench.contexts.iter().any(|c| c.contains(".\nA photo")));
}

#[test]
fn answers_of_another_benchmark_are_refused() {
    let bench = bench();
    let objhal = common::fixtures().join("objhal/answers.jsonl");
    let e = bench
        .merge_answers(&Answers::read(&objhal).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("answers.jsonl, line 1, record image_id 46985: field `question`"),
        "{e}"
    );
    assert!(e.contains("another benchmark"), "{e}");
}

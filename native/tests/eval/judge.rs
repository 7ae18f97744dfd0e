//! The judge against a local OpenAI-compatible endpoint.

use super::server::*;
use super::*;
use std::sync::{Arc, Mutex};

use serde_json::json;

fn judge(url: &str, model: &str, out: &Path) -> Output {
    let f = fixtures().join("mmhal");
    bin()
        .env("DAMA_LLM_API_KEY", KEY)
        .args(["eval", "judge", "--llm-base-url", url, "--llm-model", model])
        .arg("--template")
        .arg(f.join("template.json"))
        .arg("--answers")
        .arg(f.join("answers.jsonl"))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn the_judge_rates_as_the_reference_caches_and_never_shows_the_key() {
    let f = fixtures().join("mmhal");
    // RLAIF-V's eval_gpt_mmhal.py: the filled rubric as one user message, temperature 0.
    let replies: Exchanges = read_json(&f.join("exchanges.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let prompt = x["prompt"].as_str().unwrap().to_owned();
            let exchange = Exchange {
                messages: json!([{"role": "user", "content": prompt}]),
                temperature: 0.0,
                reply: x["reply"].as_str().unwrap().to_owned(),
            };
            (prompt, exchange)
        })
        .collect();
    let n = replies.len();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = judge_server(replies, seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");

    let first = judge(&url, "judge-1", &out);
    let said = ok(&first);
    // `cargo test -p dama-native --test eval judge -- --nocapture` shows the table (README).
    println!("{said}");
    // Every prompt was the reference's (the server answers no other), each asked once, with the key.
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.requests.len(), n);
        for (auth, model) in &seen.requests {
            assert_eq!(auth, &format!("Bearer {KEY}"));
            assert_eq!(model, "judge-1");
        }
    }
    let summary = read_json(&out.join("summary.json"));
    assert_close(
        &summary,
        &read_json(&f.join("golden_summary.json")),
        "summary",
    );
    assert_eq!(summary["judge"], "llm:judge-1");
    assert_eq!(read_jsonl(&out.join("details.jsonl")).len(), n);
    assert!(
        said.contains(&format!("judge: {n} requests, 0 cached replies")),
        "{said}"
    );
    assert!(
        said.contains("16 questions, not MMHal-Bench's 96"),
        "{said}"
    );
    assert_no_key(&said, dir.path());

    // A rerun costs nothing: every reply comes from the cache, the same numbers.
    let second = judge(&url, "judge-1", &out);
    let said = ok(&second);
    assert_eq!(seen.lock().unwrap().requests.len(), n);
    assert!(
        said.contains(&format!("judge: 0 requests, {n} cached replies")),
        "{said}"
    );
    assert_close(&read_json(&out.join("summary.json")), &summary, "rerun");
    assert_no_key(&said, dir.path());

    // A server that echoes the key in its error: the key is redacted from what is said.
    let echo_out = dir.path().join("echo");
    let failed = judge(&url, "echo", &echo_out);
    let said = refused(&failed, &echo_out, &["HTTP 401", "[redacted]"]);
    assert_no_key(&said, dir.path());
}

#[test]
fn llava_bench_is_judged_as_the_reference_and_cached() {
    let f = fixtures().join("llava_bench");
    // LLaVA's eval_gpt_review_bench.py: a system message, then the content, temperature 0.2.
    let exchanges: Exchanges = read_json(&f.join("exchanges.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let prompt = x["prompt"].as_str().unwrap().to_owned();
            let exchange = Exchange {
                messages: json!([
                    {"role": "system", "content": x["system"]},
                    {"role": "user", "content": prompt},
                ]),
                temperature: 0.2,
                reply: x["reply"].as_str().unwrap().to_owned(),
            };
            (prompt, exchange)
        })
        .collect();
    let n = exchanges.len();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = judge_server(exchanges, seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = || {
        bin()
            .env("DAMA_LLM_API_KEY", KEY)
            .args(["eval", "judge", "--benchmark", "llava-bench"])
            .args(["--llm-base-url", &url, "--llm-model", "judge-2"])
            .arg("--questions")
            .arg(f.join("questions.jsonl"))
            .arg("--context")
            .arg(f.join("context.jsonl"))
            .arg("--reference")
            .arg(f.join("answers_gpt4.jsonl"))
            .arg("--rule")
            .arg(f.join("rule.json"))
            .arg("--answers")
            .arg(f.join("answers.jsonl"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let said = ok(&run());
    println!("{said}");
    assert_eq!(seen.lock().unwrap().requests.len(), n);
    let summary = read_json(&out.join("summary.json"));
    let golden = read_json(&f.join("golden_summary.json"));
    assert_close(&summary, &golden, "summary");
    assert_eq!(summary["benchmark"], "llava-bench");
    let relative = format!(
        "{:.1}",
        golden["categories"]["all"]["relative"].as_f64().unwrap()
    );
    assert!(said.contains(&relative), "{said}");
    assert_no_key(&said, dir.path());

    let said = ok(&run());
    assert_eq!(seen.lock().unwrap().requests.len(), n);
    assert!(
        said.contains(&format!("judge: 0 requests, {n} cached replies")),
        "{said}"
    );
    assert_close(&read_json(&out.join("summary.json")), &golden, "rerun");
    assert_no_key(&said, dir.path());
}

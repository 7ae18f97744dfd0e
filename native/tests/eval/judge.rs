//! The judge against a local OpenAI-compatible endpoint.

use super::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use serde_json::json;

const KEY: &str = "sk-test-5e3f0a9c7b1d4e2f";

/// What the server saw: each request's Authorization header and model.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, String)>,
}

/// What the reference sends for one prompt, and the judge's reply.
struct Exchange {
    /// The whole `messages` array.
    messages: Value,
    temperature: f64,
    reply: String,
}

/// The exchanges by their last message (the prompt).
type Exchanges = HashMap<String, Exchange>;

/// An OpenAI-compatible chat endpoint that knows only the reference's requests (the same
/// messages, roles and temperature → its reply; anything else is a 400) and, for the model
/// `echo`, refuses with 401 echoing the key it was sent. Returns its base URL.
fn judge_server(exchanges: Exchanges, seen: Arc<Mutex<Seen>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let (mut auth, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = line["authorization:".len()..].trim().to_owned();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let model = request["model"].as_str().unwrap_or("").to_owned();
            let messages = &request["messages"];
            let prompt = messages
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("");
            seen.lock()
                .unwrap()
                .requests
                .push((auth.clone(), model.clone()));
            let known = exchanges.get(prompt);
            let (status, reply) = if model == "echo" {
                (
                    "401 Unauthorized",
                    json!({"error": format!("invalid credentials: {auth}")}),
                )
            } else if let Some(x) = known.filter(|x| {
                *messages == x.messages && request["temperature"] == json!(x.temperature)
            }) {
                (
                    "200 OK",
                    json!({"choices": [{"message": {"role": "assistant", "content": x.reply}}]}),
                )
            } else {
                (
                    "400 Bad Request",
                    json!({"error": "not a request of the reference (messages, roles, temperature)"}),
                )
            };
            let reply = reply.to_string();
            let _ = write!(
                reader.into_inner(),
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    url
}

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

/// Every file under `dir`, read as bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.push((p, bytes));
        }
    }
    out
}

fn assert_no_key(said: &str, dir: &Path) {
    assert!(!said.contains(KEY), "the key is in the output:\n{said}");
    for (path, bytes) in files(dir) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "the key is in {}",
            path.display()
        );
    }
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

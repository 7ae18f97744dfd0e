//! The LLM splitter against a real HTTP server started in the test (std `TcpListener`), which
//! answers a script of replies and records each request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::*;

struct Request {
    headers: String,
    body: serde_json::Value,
}

struct Server {
    base_url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `replies` (status, extra headers, body) to successive connections, then stops
    /// listening: any further request is refused.
    fn start(replies: Vec<(u16, &'static str, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let thread = std::thread::spawn(move || {
            for (status, extra, body) in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut headers = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    headers.push_str(&line);
                }
                let length = headers
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                let mut raw = vec![0; length];
                reader.read_exact(&mut raw).unwrap();
                log.lock().unwrap().push(Request {
                    headers,
                    body: serde_json::from_slice(&raw).unwrap(),
                });
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        Self {
            base_url,
            requests,
            thread: Some(thread),
        }
    }

    /// Waits for the script to finish and returns what was asked.
    fn finish(mut self) -> Vec<Request> {
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

fn completion(content: &str) -> String {
    serde_json::json!({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).to_string()
}

fn config(base_url: &str) -> LlmConfig {
    let mut c = LlmConfig::resolve(
        Some(base_url.to_owned()),
        Some("llama-3-8b".into()),
        Some("sk-test".into()),
        &|_| None,
    )
    .unwrap();
    c.backoff = Duration::from_millis(5);
    c.max_retries = 2;
    c.timeout = Duration::from_secs(10);
    c
}

const QUESTION: &str = "What is in the image?";
const ANSWER: &str = "A red bus is parked on the street. It has two decks.";
const FACTS: &str = "### Facts:\n- A red bus is parked on the street.\n- The bus has two decks.";

#[test]
fn retries_a_500_then_reads_the_facts() {
    let server = Server::start(vec![
        (500, "", "overloaded".into()),
        (200, "", completion(FACTS)),
    ]);
    let splitter = LlmSplitter::new(config(&server.base_url)).unwrap();
    let facts = splitter.split(QUESTION, ANSWER).unwrap();
    assert_eq!(
        facts,
        [
            "A red bus is parked on the street.",
            "The bus has two decks."
        ]
    );
    assert_eq!(
        splitter.stats(),
        LlmStats {
            requests: 1,
            cache_hits: 0,
            retries: 1,
            fallbacks: 0
        }
    );
    let requests = server.finish();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert!(
            r.headers.starts_with("POST /v1/chat/completions HTTP/1.1"),
            "{}",
            r.headers
        );
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("authorization: bearer sk-test")
        );
        assert_eq!(r.body["model"], "llama-3-8b");
        assert_eq!(r.body["temperature"], 0);
        assert_eq!(r.body["messages"][0]["role"], "user");
        assert_eq!(r.body["messages"][0]["content"], fill(QUESTION, ANSWER));
    }
    assert_eq!(splitter.name(), "llm:llama-3-8b");
}

#[test]
fn a_429_with_retry_after_is_retried_and_persistent_failures_give_up() {
    let server = Server::start(vec![
        (429, "Retry-After: 0\r\n", "slow down".into()),
        (200, "", completion(FACTS)),
    ]);
    let splitter = LlmSplitter::new(config(&server.base_url)).unwrap();
    assert_eq!(splitter.split(QUESTION, ANSWER).unwrap().len(), 2);
    server.finish();

    let server = Server::start(vec![
        (503, "", "down".into()),
        (502, "", "down".into()),
        (500, "", "still down".into()),
    ]);
    let splitter = LlmSplitter::new(config(&server.base_url)).unwrap();
    let err = splitter.split(QUESTION, ANSWER).unwrap_err();
    assert!(
        matches!(err, SplitError::Request { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 500: still down"), "{err}");
    assert_eq!(server.finish().len(), 3);

    let server = Server::start(vec![(401, "", r#"{"error":"bad key"}"#.into())]);
    let splitter = LlmSplitter::new(config(&server.base_url)).unwrap();
    let err = splitter.split(QUESTION, ANSWER).unwrap_err();
    assert!(
        matches!(err, SplitError::Request { attempts: 1, .. }),
        "a 401 is not retried: {err}"
    );
    server.finish();
}

#[test]
fn a_malformed_answer_fails_or_falls_back_as_chosen() {
    let server = Server::start(vec![(
        200,
        "",
        completion("I'm sorry, I cannot see images."),
    )]);
    let splitter = LlmSplitter::new(config(&server.base_url)).unwrap();
    let err = splitter.split(QUESTION, ANSWER).unwrap_err();
    assert!(matches!(err, SplitError::Malformed { .. }), "{err}");
    server.finish();

    let server = Server::start(vec![(
        200,
        "",
        completion("I'm sorry, I cannot see images."),
    )]);
    let mut c = config(&server.base_url);
    c.on_failure = OnFailure::FallBackToRules;
    let splitter = LlmSplitter::new(c).unwrap();
    assert_eq!(
        splitter.split(QUESTION, ANSWER).unwrap(),
        RuleSplitter::new().split_text(ANSWER)
    );
    assert_eq!(splitter.stats().fallbacks, 1);
    server.finish();
}

#[test]
fn a_cache_hit_makes_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![(200, "", completion(FACTS))]);
    let mut c = config(&server.base_url);
    c.cache_dir = Some(dir.path().to_path_buf());
    let first = LlmSplitter::new(c.clone())
        .unwrap()
        .split(QUESTION, ANSWER)
        .unwrap();
    assert_eq!(server.finish().len(), 1);
    // The server is gone: a request would be refused and, with OnFailure::Fail, be an error.
    let again = LlmSplitter::new(c).unwrap();
    assert_eq!(again.split(QUESTION, ANSWER).unwrap(), first);
    assert_eq!(
        again.stats(),
        LlmStats {
            requests: 0,
            cache_hits: 1,
            retries: 0,
            fallbacks: 0
        }
    );
    // Another answer is not in the cache: it is requested, and refused.
    assert!(matches!(
        again.split(QUESTION, "Something else.").unwrap_err(),
        SplitError::Request { .. }
    ));
}

#[test]
fn endpoint_model_and_key_from_arguments_or_environment() {
    let env = |name: &str| match name {
        ENV_BASE_URL => Some("http://env:8000/v1/".to_owned()),
        ENV_MODEL => Some("env-model".to_owned()),
        ENV_OPENAI_API_KEY => Some("sk-openai".to_owned()),
        _ => None,
    };
    let c = LlmConfig::resolve(None, None, None, &env).unwrap();
    assert_eq!(
        (c.base_url.as_str(), c.model.as_str(), c.api_key.as_deref()),
        ("http://env:8000/v1", "env-model", Some("sk-openai"))
    );
    let c = LlmConfig::resolve(
        Some("http://flag".into()),
        Some("m".into()),
        Some("k".into()),
        &env,
    )
    .unwrap();
    assert_eq!(
        (c.base_url.as_str(), c.model.as_str(), c.api_key.as_deref()),
        ("http://flag", "m", Some("k"))
    );
    let err = LlmConfig::resolve(None, Some("m".into()), None, &|_| None).unwrap_err();
    assert!(err.to_string().contains(ENV_BASE_URL), "{err}");
}

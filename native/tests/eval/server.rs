//! A local OpenAI-compatible endpoint that answers only the reference's requests, and what the
//! tests check about the API key.

use super::*;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

pub const KEY: &str = "sk-test-5e3f0a9c7b1d4e2f";

/// What the server saw: each request's Authorization header and model.
#[derive(Default)]
pub struct Seen {
    pub requests: Vec<(String, String)>,
}

/// What the reference sends for one prompt, and the judge's reply.
pub struct Exchange {
    /// The whole `messages` array.
    pub messages: Value,
    pub temperature: f64,
    pub reply: String,
}

/// The exchanges by their last message (the prompt).
pub type Exchanges = HashMap<String, Exchange>;

/// An OpenAI-compatible chat endpoint that knows only the reference's requests (the same
/// messages, roles and temperature → its reply; anything else is a 400) and, for the model
/// `echo`, refuses with 401 echoing the key it was sent. Returns its base URL.
pub fn judge_server(exchanges: Exchanges, seen: Arc<Mutex<Seen>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (auth, body, reader) = dama_tests::read_http_request(stream);
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

/// Every file under `dir`, read as bytes.
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
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

pub fn assert_no_key(said: &str, dir: &Path) {
    assert!(!said.contains(KEY), "the key is in the output:\n{said}");
    for (path, bytes) in files(dir) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "the key is in {}",
            path.display()
        );
    }
}

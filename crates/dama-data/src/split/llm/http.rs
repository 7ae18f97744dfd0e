//! One chat completion from an OpenAI-compatible endpoint, with retries and exponential back-off
//! on the failures that pass (HTTP 429, 5xx, timeouts, refused or dropped connections).

use std::time::Duration;

use serde_json::json;

use super::super::SplitError;
use super::LlmConfig;

/// The outcome of one attempt.
enum Attempt {
    Done(String),
    /// Worth retrying; `wait` is the server's Retry-After, if it sent one.
    Retry {
        why: String,
        wait: Option<Duration>,
    },
    Fatal(String),
}

/// `<base>/chat/completions` when the base URL already ends in `/v1` (the OpenAI convention),
/// else `<base>/v1/chat/completions`.
pub fn completions_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

pub struct Client {
    agent: ureq::Agent,
    url: String,
}

impl Client {
    pub fn new(config: &LlmConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            url: completions_url(&config.base_url),
        }
    }

    /// The assistant's message for `prompt` at temperature 0; `retried` counts the retries.
    pub fn complete(
        &self,
        config: &LlmConfig,
        prompt: &str,
        retried: &mut u32,
    ) -> Result<String, SplitError> {
        let body = json!({
            "model": config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
        });
        self.send(config, &body, retried)
    }

    /// The assistant's message for `messages` (`(role, content)` pairs: `system`, `user`, …)
    /// at `temperature`, for callers that must send what another tool sent (the evaluation
    /// benchmarks' judge and extractor prompts).
    pub fn chat(
        &self,
        config: &LlmConfig,
        messages: &[(&str, &str)],
        temperature: f64,
        retried: &mut u32,
    ) -> Result<String, SplitError> {
        let messages: Vec<_> = messages
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        let body = json!({
            "model": config.model,
            "messages": messages,
            "temperature": temperature,
        });
        self.send(config, &body, retried)
    }

    /// Sends `body`, retrying what passes with exponential back-off.
    fn send(
        &self,
        config: &LlmConfig,
        body: &serde_json::Value,
        retried: &mut u32,
    ) -> Result<String, SplitError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.attempt(config, body) {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Retry { wait, .. } if attempt <= config.max_retries => {
                    let backoff = config.backoff.saturating_mul(1 << (attempt - 1).min(16));
                    std::thread::sleep(wait.unwrap_or(backoff).min(config.max_backoff));
                    *retried += 1;
                }
                Attempt::Retry { why, .. } | Attempt::Fatal(why) => {
                    return Err(SplitError::Request {
                        url: self.url.clone(),
                        attempts: attempt,
                        why: redact(&why, config.api_key.as_deref()),
                    });
                }
            }
        }
    }

    fn attempt(&self, config: &LlmConfig, body: &serde_json::Value) -> Attempt {
        let mut request = self.agent.post(&self.url);
        if let Some(key) = &config.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = match request.send_json(body) {
            Ok(r) => r,
            Err(e) => return classify_transport(e),
        };
        let status = response.status().as_u16();
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match response.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => return classify_transport(e),
        };
        // Redacted before it is cut: a cut through the key would leave a part of it.
        let excerpt: String = redact(&text, config.api_key.as_deref())
            .chars()
            .take(300)
            .collect();
        match status {
            200..=299 => match answer_of(&text) {
                Some(answer) => Attempt::Done(answer),
                None => Attempt::Fatal(format!(
                    "HTTP {status} without choices[0].message.content: {excerpt}"
                )),
            },
            429 | 500..=599 => Attempt::Retry {
                why: format!("HTTP {status}: {excerpt}"),
                wait,
            },
            _ => Attempt::Fatal(format!("HTTP {status}: {excerpt}")),
        }
    }
}

/// `text` with every occurrence of the API key replaced, so that a server that echoes it in an
/// error body cannot make it reach a terminal or a log.
pub fn redact(text: &str, api_key: Option<&str>) -> String {
    match api_key {
        Some(key) if !key.is_empty() => text.replace(key, "[redacted]"),
        _ => text.to_owned(),
    }
}

fn answer_of(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value
        .pointer("/choices/0/message/content")?
        .as_str()
        .map(str::to_owned)
}

fn classify_transport(e: ureq::Error) -> Attempt {
    match e {
        ureq::Error::Timeout(_)
        | ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::BodyStalled => Attempt::Retry {
            why: e.to_string(),
            wait: None,
        },
        other => Attempt::Fatal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            completions_url("http://localhost:8000/v1/"),
            "http://localhost:8000/v1/chat/completions"
        );
        assert_eq!(
            completions_url("https://api.example.com"),
            "https://api.example.com/v1/chat/completions"
        );
    }

    #[test]
    fn the_key_is_redacted() {
        assert_eq!(
            redact("bad key sk-123 (sk-123)", Some("sk-123")),
            "bad key [redacted] ([redacted])"
        );
        assert_eq!(redact("text", Some("")), "text");
        assert_eq!(redact("text", None), "text");
    }

    #[test]
    fn answers_are_read_from_the_first_choice() {
        assert_eq!(
            answer_of(r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#)
                .as_deref(),
            Some("hi")
        );
        assert_eq!(answer_of(r#"{"error":"x"}"#), None);
    }
}

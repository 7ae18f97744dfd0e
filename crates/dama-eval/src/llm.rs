//! The OpenAI-compatible chat endpoint the LLM-based metrics ask (the judge, the object
//! extractor), through dama-data's client (the one the LLM splitter uses: retries with
//! back-off, `DAMA_LLM_*` environment variables) and its disk cache of raw answers, so that a
//! rerun costs nothing. The API key is sent as a header only; error texts have it redacted.

use std::sync::atomic::{AtomicUsize, Ordering};

use dama_data::split::llm::{AnswerCache, LlmConfig, http::Client};

use crate::EvalError;

/// Requests made and answers served from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub requests: usize,
    pub cache_hits: usize,
    pub retries: usize,
}

pub struct Endpoint {
    config: LlmConfig,
    client: Client,
    cache: Option<AnswerCache>,
    requests: AtomicUsize,
    cache_hits: AtomicUsize,
    retries: AtomicUsize,
}

impl Endpoint {
    /// With `config.cache_dir` as the cache, if set.
    pub fn new(config: LlmConfig) -> Result<Self, EvalError> {
        let cache = config
            .cache_dir
            .as_ref()
            .map(AnswerCache::new)
            .transpose()
            .map_err(|e| EvalError::Llm(e.to_string()))?;
        Ok(Self {
            client: Client::new(&config),
            config,
            cache,
            requests: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        })
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// The reply to one message of `role` at `temperature`, from the cache or the endpoint.
    pub fn ask(&self, role: &str, prompt: &str, temperature: f64) -> Result<String, EvalError> {
        self.chat(&[(role, prompt)], temperature)
    }

    /// The reply to `messages` (`(role, content)`, e.g. a system message then the user's) at
    /// `temperature`, from the cache or the endpoint.
    pub fn chat(&self, messages: &[(&str, &str)], temperature: f64) -> Result<String, EvalError> {
        let key = cache_key(messages, temperature);
        let (url, model) = (&self.config.base_url, &self.config.model);
        if let Some(answer) = self.cache.as_ref().and_then(|c| c.get(url, model, &key)) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(answer);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut retried = 0;
        let result = self
            .client
            .chat(&self.config, messages, temperature, &mut retried);
        self.retries.fetch_add(retried as usize, Ordering::Relaxed);
        let answer = result.map_err(|e| EvalError::Llm(e.to_string()))?;
        if let Some(cache) = &self.cache {
            cache
                .put(url, model, &key, &answer)
                .map_err(|e| EvalError::Llm(e.to_string()))?;
        }
        Ok(answer)
    }
}

/// Everything that shapes the reply besides URL and model: the first message's role, the
/// temperature, its content, then each further message after a record separator. A single
/// message keys as it always has (`role`, `temperature=…`, prompt), so existing caches still
/// answer.
fn cache_key(messages: &[(&str, &str)], temperature: f64) -> String {
    let mut key = String::new();
    for (i, (role, content)) in messages.iter().enumerate() {
        if i == 0 {
            key.push_str(&format!("{role}\ntemperature={temperature}\n{content}"));
        } else {
            key.push_str(&format!("\n\u{1e}{role}\n{content}"));
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_tell_messages_apart_and_keep_the_single_message_form() {
        assert_eq!(cache_key(&[("user", "Q")], 0.0), "user\ntemperature=0\nQ");
        let two = cache_key(&[("system", "S"), ("user", "Q")], 0.2);
        assert_ne!(two, cache_key(&[("system", "S\nuser\nQ")], 0.2));
        assert_ne!(two, cache_key(&[("system", "S"), ("user", "Q")], 0.0));
    }
}

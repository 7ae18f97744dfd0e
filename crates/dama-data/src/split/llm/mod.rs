//! The LLM splitter: the paper's Appendix A.1 prompt, verbatim, sent to an OpenAI-compatible
//! chat endpoint (`/v1/chat/completions`, temperature 0), the "### Facts:" list of the answer
//! taken as the sub-sentences. Answers are cached on disk; transient failures are retried with
//! exponential back-off; what a lasting failure does is the user's choice ([`OnFailure`]).

pub mod cache;
pub mod http;
pub mod parse;
pub mod prompt;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use cache::AnswerCache;
pub use parse::parse_facts;
pub use prompt::{PROMPT_TEMPLATE, fill};

use super::rules::RuleSplitter;
use super::{SplitError, Splitter};

/// What to do with an answer the LLM could not split (unreachable endpoint after every retry,
/// an answer without a facts list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Stop with the error.
    #[default]
    Fail,
    /// Split that answer with `rules-v1` instead, and count it in [`LlmStats::fallbacks`].
    FallBackToRules,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// E.g. `http://localhost:8000/v1` (vLLM, Ollama) or `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// For a whole request, answer included.
    pub timeout: Duration,
    /// Retries after the first attempt, on HTTP 429, 5xx, timeouts and connection failures.
    pub max_retries: u32,
    /// The first wait; each retry doubles it, up to `max_backoff` (a server's Retry-After wins).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Where answers are cached; `None` for no cache.
    pub cache_dir: Option<PathBuf>,
    pub on_failure: OnFailure,
}

/// The environment variables read by [`LlmConfig::from_env`].
pub const ENV_BASE_URL: &str = "DAMA_LLM_BASE_URL";
pub const ENV_MODEL: &str = "DAMA_LLM_MODEL";
pub const ENV_API_KEY: &str = "DAMA_LLM_API_KEY";
pub const ENV_OPENAI_API_KEY: &str = "OPENAI_API_KEY";

impl LlmConfig {
    /// Base URL, model and key from the arguments (command-line flags), else from the process
    /// environment: `DAMA_LLM_BASE_URL`, `DAMA_LLM_MODEL`, `DAMA_LLM_API_KEY` (or
    /// `OPENAI_API_KEY`). The key may be absent (local servers need none).
    pub fn from_env(
        base_url: Option<String>,
        model: Option<String>,
        api_key: Option<String>,
    ) -> Result<Self, SplitError> {
        Self::resolve(base_url, model, api_key, &|name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// [`from_env`](Self::from_env) with the environment given as a function.
    pub fn resolve(
        base_url: Option<String>,
        model: Option<String>,
        api_key: Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SplitError> {
        let base_url = base_url.or_else(|| env(ENV_BASE_URL)).ok_or_else(|| {
            SplitError::Config(format!(
                "no endpoint: pass a base URL or set {ENV_BASE_URL} (e.g. http://localhost:8000/v1)"
            ))
        })?;
        let model = model
            .or_else(|| env(ENV_MODEL))
            .ok_or_else(|| SplitError::Config(format!("no model: pass one or set {ENV_MODEL}")))?;
        let api_key = api_key
            .or_else(|| env(ENV_API_KEY))
            .or_else(|| env(ENV_OPENAI_API_KEY));
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            model,
            api_key,
            timeout: Duration::from_secs(120),
            max_retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            cache_dir: None,
            on_failure: OnFailure::Fail,
        })
    }
}

/// What the splitter did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmStats {
    pub requests: usize,
    pub cache_hits: usize,
    pub retries: usize,
    /// Answers split by `rules-v1` after a failure ([`OnFailure::FallBackToRules`]).
    pub fallbacks: usize,
}

/// `llm:<model>`. Safe to share between threads (requests may run in parallel).
pub struct LlmSplitter {
    config: LlmConfig,
    client: http::Client,
    cache: Option<AnswerCache>,
    fallback: RuleSplitter,
    requests: AtomicUsize,
    cache_hits: AtomicUsize,
    retries: AtomicUsize,
    fallbacks: AtomicUsize,
    /// Why the LLM failed on each answer handed to the fallback since the last
    /// [`LlmSplitter::take_failures`] (the API key already redacted).
    failures: std::sync::Mutex<Vec<String>>,
}

impl LlmSplitter {
    pub fn new(config: LlmConfig) -> Result<Self, SplitError> {
        let cache = config
            .cache_dir
            .as_ref()
            .map(AnswerCache::new)
            .transpose()?;
        Ok(Self {
            client: http::Client::new(&config),
            config,
            cache,
            fallback: RuleSplitter::new(),
            requests: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
            fallbacks: AtomicUsize::new(0),
            failures: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The splitter that [`OnFailure::FallBackToRules`] uses (e.g. with CLIP's real tokenizer).
    pub fn with_fallback(mut self, fallback: RuleSplitter) -> Self {
        self.fallback = fallback;
        self
    }

    /// Why the LLM failed on the answers it handed to the fallback since the last call, in
    /// order: a caller says which pairs were split by the rules instead.
    pub fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.failures.lock().expect("failures lock"))
    }

    /// The name of the splitter used after a failure.
    pub fn fallback_name(&self) -> String {
        format!("{} after an LLM failure", self.fallback.name())
    }

    pub fn stats(&self) -> LlmStats {
        LlmStats {
            requests: self.requests.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// The LLM's raw answer to `prompt`, from the cache or the endpoint (then cached).
    fn answer(&self, prompt: &str) -> Result<String, SplitError> {
        let (url, model) = (&self.config.base_url, &self.config.model);
        if let Some(answer) = self.cache.as_ref().and_then(|c| c.get(url, model, prompt)) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(answer);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut retried = 0;
        let result = self.client.complete(&self.config, prompt, &mut retried);
        self.retries.fetch_add(retried as usize, Ordering::Relaxed);
        let answer = result?;
        if let Some(cache) = &self.cache {
            cache.put(url, model, prompt, &answer)?;
        }
        Ok(answer)
    }
}

impl Splitter for LlmSplitter {
    fn name(&self) -> String {
        format!("llm:{}", self.config.model)
    }

    fn split(&self, question: &str, answer: &str) -> Result<Vec<String>, SplitError> {
        let result = self
            .answer(&fill(question, answer))
            .and_then(|reply| parse_facts(&reply));
        match (result, self.config.on_failure) {
            (Ok(facts), _) => Ok(facts),
            // A broken cache directory is the user's to fix, not a reason to change splitter.
            (Err(e @ SplitError::Cache { .. }), _) | (Err(e), OnFailure::Fail) => Err(e),
            (Err(e), OnFailure::FallBackToRules) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.failures
                    .lock()
                    .expect("failures lock")
                    .push(e.to_string());
                Ok(self.fallback.split_text(answer))
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Answer generation with a KV cache: greedy, beam search and sampling, as transformers'
//! `generate` does them for `LlavaForConditionalGeneration` (the oracle the golden tests
//! check, `scripts/golden_generate.py`).
//!
//! The image and the prompt are encoded once (the prefill); then each step runs one token per
//! sequence through the decoder layers, attending to the cache ([`session`]). Several
//! questions decode as one batch (left-padded prompts, positions counted per prompt, so a
//! batched answer is the answer alone); a question's beams share its prompt's cache and only
//! their generated suffixes follow the beams ([`cache`]). Sequences leave the batch as soon as
//! they are done.
//!
//! Works on every device candle runs on (the prefill is the training path's fused attention,
//! the steps are candle matmuls and softmax); bf16 on CUDA, f32 on the CPU.

mod attention;
mod beam;
mod cache;
mod sample;
mod session;

use candle_core::Tensor;
use dama_core::Xoshiro256;

pub use beam::BeamSearch;
pub use sample::{SampleConfig, argmax, log_softmax, sample};

use crate::error::{LlavaError, Result};
use crate::model::LlavaModel;
use crate::processor::Images;
use session::{Session, host_rows};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// The most likely token (`do_sample=False, num_beams=1`).
    Greedy,
    /// Beam search (`do_sample=False, num_beams=K, length_penalty=…`, `early_stopping=False`).
    Beam {
        num_beams: usize,
        length_penalty: f32,
    },
    /// Sampling (`do_sample=True`).
    Sample(SampleConfig),
}

impl Strategy {
    /// Rejects settings transformers would reject or that mean nothing.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LlavaError::Invalid(m));
        match *self {
            Strategy::Greedy => Ok(()),
            Strategy::Beam {
                num_beams,
                length_penalty,
            } => {
                if num_beams < 1 {
                    return bad("num_beams must be at least 1".into());
                }
                if !length_penalty.is_finite() {
                    return bad(format!("length_penalty {length_penalty} is not finite"));
                }
                Ok(())
            }
            Strategy::Sample(s) => {
                if !(s.temperature > 0.0 && s.temperature.is_finite()) {
                    return bad(format!(
                        "temperature {} must be > 0 to sample (0 means greedy)",
                        s.temperature
                    ));
                }
                if s.top_k == Some(0) {
                    return bad("top_k must be at least 1".into());
                }
                if let Some(p) = s.top_p
                    && !(p > 0.0 && p <= 1.0)
                {
                    return bad(format!("top_p {p} must be in (0, 1]"));
                }
                Ok(())
            }
        }
    }
}

/// One prompt to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// `<s>` + template + question, image tokens expanded
    /// ([`crate::PairEncoder::encode_prompt`]).
    pub input_ids: Vec<u32>,
    /// At most this many new tokens (`</s>` included).
    pub max_new_tokens: usize,
    /// The prompt's own sampling stream (mixed with [`SampleConfig::seed`]): a prompt gets the
    /// same answer whatever batch it is in. Unused by greedy and beam search.
    pub seed: u64,
}

impl Prompt {
    pub fn new(input_ids: Vec<u32>, max_new_tokens: usize) -> Self {
        Self {
            input_ids,
            max_new_tokens,
            seed: 0,
        }
    }
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It produced an end token (kept as its last token).
    Eos,
    /// It reached `max_new_tokens`.
    Length,
}

impl Finish {
    pub fn name(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::Length => "length",
        }
    }
}

/// A generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens, the end token included when produced.
    pub tokens: Vec<u32>,
    pub finish: Finish,
    /// Greedy and sampling: the sum of the tokens' log-probs (before the sampling warpers).
    /// Beam search: transformers' `sequences_scores` (sum over length^length_penalty).
    pub score: f32,
}

/// Decoding settings of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub strategy: Strategy,
    /// Tokens that end an answer ([`crate::LlavaConfig::eos_token_ids`]).
    pub eos_token_ids: Vec<u32>,
}

impl LlavaModel {
    /// Answers `prompts`, one image each in `images`, as one batch. `on_step(n)` is called
    /// after every decoding step with the number of sequences it advanced (for progress).
    pub fn generate(
        &self,
        prompts: &[Prompt],
        images: &Images,
        cfg: &GenerateConfig,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Vec<Generation>> {
        cfg.strategy.validate()?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = prompts.iter().position(|p| p.max_new_tokens == 0) {
            return Err(LlavaError::Example {
                index: i,
                side: "question",
                message: "max_new_tokens is 0".into(),
            });
        }
        let features = self.features_of(images, prompts.len())?;
        let ids: Vec<&[u32]> = prompts.iter().map(|p| p.input_ids.as_slice()).collect();
        let max_new = prompts.iter().map(|p| p.max_new_tokens).max().unwrap_or(1);
        let (session, logits) = Session::prefill(self, &ids, &features, max_new)?;
        match cfg.strategy {
            Strategy::Beam {
                num_beams,
                length_penalty,
            } if num_beams > 1 => beams(
                session,
                logits,
                prompts,
                cfg,
                num_beams,
                length_penalty,
                on_step,
            ),
            // one beam is greedy search (transformers runs the same)
            Strategy::Greedy | Strategy::Beam { .. } => {
                one_per_prompt(session, logits, prompts, cfg, None, on_step)
            }
            Strategy::Sample(s) => one_per_prompt(session, logits, prompts, cfg, Some(s), on_step),
        }
    }
}

/// The stream of prompt `seed` under sampling seed `base` (splitmix-style mixing, so that
/// neighbouring seeds give unrelated streams).
fn prompt_rng(base: u64, seed: u64) -> Xoshiro256 {
    Xoshiro256::seed_from(base ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29))
}

/// Greedy or sampled decoding: one sequence per prompt.
fn one_per_prompt(
    mut session: Session<'_>,
    mut logits: Tensor,
    prompts: &[Prompt],
    cfg: &GenerateConfig,
    sampling: Option<SampleConfig>,
    on_step: &mut dyn FnMut(usize),
) -> Result<Vec<Generation>> {
    let eos = &cfg.eos_token_ids;
    let mut rngs: Vec<Xoshiro256> = prompts
        .iter()
        .map(|p| prompt_rng(sampling.map_or(0, |s| s.seed), p.seed))
        .collect();
    let mut out: Vec<Generation> = prompts
        .iter()
        .map(|_| Generation {
            tokens: Vec::new(),
            finish: Finish::Length,
            score: 0.0,
        })
        .collect();
    // the prompts still decoding, in session row order
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    loop {
        let rows = host_rows(&logits)?;
        let mut next = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (row, (&i, logits)) in active.iter().zip(&rows).enumerate() {
            let token = match &sampling {
                None => argmax(logits),
                Some(s) => sample(logits, s, &mut rngs[i]),
            };
            let g = &mut out[i];
            g.score += log_softmax(logits)[token as usize];
            g.tokens.push(token);
            if eos.contains(&token) {
                g.finish = Finish::Eos;
            } else if g.tokens.len() < prompts[i].max_new_tokens {
                keep.push(row);
                next.push(token);
            }
        }
        on_step(active.len());
        if keep.is_empty() {
            return Ok(out);
        }
        session.retain(&keep)?;
        active = keep.iter().map(|&r| active[r]).collect();
        logits = session.step(&next)?;
    }
}

/// Beam search: `num_beams` sequences per prompt sharing its prefix cache.
fn beams(
    mut session: Session<'_>,
    logits: Tensor,
    prompts: &[Prompt],
    cfg: &GenerateConfig,
    num_beams: usize,
    length_penalty: f32,
    on_step: &mut dyn FnMut(usize),
) -> Result<Vec<Generation>> {
    let eos = &cfg.eos_token_ids;
    let k = num_beams;
    let mut searches: Vec<BeamSearch> = prompts
        .iter()
        .map(|p| BeamSearch::new(k, length_penalty, p.max_new_tokens))
        .collect();
    session.set_beams(k)?;
    // the prefill's rows are one per question: each of its beams starts from that row
    let mut rows: Vec<Vec<f32>> = host_rows(&logits)?
        .into_iter()
        .flat_map(|r| std::iter::repeat_n(r, k))
        .collect();
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    loop {
        let lps: Vec<Vec<f32>> = rows.iter().map(|r| log_softmax(r)).collect();
        let mut sources = Vec::with_capacity(active.len() * k);
        let mut next = Vec::with_capacity(active.len() * k);
        let mut keep = Vec::new();
        for (qi, &i) in active.iter().enumerate() {
            let beam_rows: Vec<&[f32]> = lps[qi * k..(qi + 1) * k]
                .iter()
                .map(|r| r.as_slice())
                .collect();
            let step = searches[i].step(&beam_rows, eos);
            sources.extend(step.sources.iter().map(|&s| (qi * k) as u32 + s));
            if !searches[i].stopped() {
                keep.push(qi);
                next.extend(step.tokens);
            }
        }
        on_step(active.len() * k);
        if keep.is_empty() {
            break;
        }
        session.reorder(&sources)?;
        session.retain(&keep)?;
        active = keep.iter().map(|&q| active[q]).collect();
        rows = host_rows(&session.step(&next)?)?;
    }
    Ok(searches
        .iter()
        .map(|s| {
            let (tokens, score, finish) = s.best(eos);
            Generation {
                tokens,
                finish,
                score,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests;

//! A LLaVA answering questions: the model, its processor and the decoding settings, in
//! batches. `dama-native generate` drives it from the command line; benchmarks drive it
//! through [`dama_eval::answers::Generator`] (the seam `dama-native eval … --model` uses).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use dama_eval::EvalError;
use dama_eval::answers::{BenchmarkQuestion, GeneratedAnswer, ImageSource};
use dama_llava::{
    GenerateConfig, Images, LlavaModel, LlavaProcessor, LoadOptions, Prompt, SampleConfig, Strategy,
};
use dama_train::prepare::load_processor;
use image::DynamicImage;
use serde_json::json;

use crate::answers_file::AnswersFile;
use crate::args::{InputArgs, ModelArgs};
use crate::device::DeviceArgs;

/// How answers are decoded; the defaults are transformers' (`generate` with no options but
/// `max_new_tokens`). The paper's evaluation (RLAIF-V's): `--num-beams 3`.
#[derive(Debug, Clone, Args)]
pub struct DecodeArgs {
    /// Beam search with this many beams (1: greedy, or sampling with --temperature).
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    /// Beam search's length penalty: finished beams are ranked by Σ log p / length^penalty.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// Sample with this temperature (0: no sampling).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sampling: keep the smallest set of likeliest tokens whose probability reaches p.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sampling: keep the k likeliest tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sampling seed (each question's stream also depends on its id, not on its batch).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// At most this many new tokens per answer, `</s>` included (RLAIF-V's evaluation: 1024).
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Questions decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

impl DecodeArgs {
    /// The library's strategy, or why these flags do not make one.
    pub fn strategy(&self) -> Result<Strategy> {
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.max_new_tokens == 0 {
            bail!("--max-new-tokens must be at least 1");
        }
        let sampling = self.temperature != 0.0;
        if !sampling && (self.top_p.is_some() || self.top_k.is_some()) {
            bail!("--top-p and --top-k apply only when sampling: give --temperature > 0");
        }
        let strategy = if sampling {
            if self.num_beams > 1 {
                bail!("sampling (--temperature > 0) with --num-beams > 1 is not supported");
            }
            Strategy::Sample(SampleConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            })
        } else if self.num_beams > 1 {
            Strategy::Beam {
                num_beams: self.num_beams,
                length_penalty: self.length_penalty,
            }
        } else {
            Strategy::Greedy
        };
        strategy.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(strategy)
    }

    /// The settings that decide an answer, as recorded beside an answers file (a resumed run
    /// must decode as the first did).
    pub fn identity(&self) -> serde_json::Value {
        json!({
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
        })
    }
}

/// A question with its image, ready to answer.
#[derive(Debug, Clone)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub image: DynamicImage,
}

/// One answer, as a line of the answers file.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    pub question: String,
    pub answer: String,
    /// The new token ids, `</s>` included when produced.
    pub tokens: Vec<u32>,
    /// `eos` or `length`.
    pub finish: &'static str,
    /// Wall time of the batch this answer was generated in (answers of a batch decode
    /// together), and that batch's new tokens per second.
    pub batch_ms: f64,
    pub batch_tokens_per_s: f64,
    pub batch_size: usize,
}

/// An answers-file line: fields in the order a reader expects them.
#[derive(serde::Serialize)]
struct Line<'a> {
    id: &'a str,
    question: &'a str,
    answer: &'a str,
    tokens: &'a [u32],
    finish: &'a str,
    timing: Timing,
}

#[derive(serde::Serialize)]
struct Timing {
    /// The batch's wall time.
    ms: f64,
    /// The batch's new tokens (all its answers) per second.
    tokens_per_s: f64,
    /// Questions in the batch.
    batch: usize,
}

impl Answer {
    /// The answers-file line: `id`, `question`, `answer`, `tokens`, `finish`, `timing`.
    pub fn to_line(&self) -> String {
        let line = Line {
            id: &self.id,
            question: &self.question,
            answer: &self.answer,
            tokens: &self.tokens,
            finish: self.finish,
            timing: Timing {
                ms: round3(self.batch_ms),
                tokens_per_s: round3(self.batch_tokens_per_s),
                batch: self.batch_size,
            },
        };
        serde_json::to_string(&line).expect("an answer serialises")
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A model ready to answer.
pub struct ModelGenerator {
    model: LlavaModel,
    processor: LlavaProcessor,
    config: GenerateConfig,
    max_new_tokens: usize,
    max_length: usize,
    max_positions: usize,
    batch_size: usize,
    seed: u64,
    device: Device,
    /// What decides the answers (model, preprocessing, decoding): an answers file records it.
    identity: serde_json::Value,
    /// Where [`dama_eval::answers::Generator::generate`] keeps its answers (resumable).
    out: Option<PathBuf>,
    /// Called after each batch with the answers so far and the questions in all.
    progress: Option<Box<dyn FnMut(usize, usize)>>,
}

impl ModelGenerator {
    /// Loads `--model` with the input and device settings `train` and `ref-logps` share.
    pub fn load(
        model: &ModelArgs,
        input: &InputArgs,
        device: &DeviceArgs,
        decode: &DecodeArgs,
    ) -> Result<Self> {
        let strategy = decode.strategy()?;
        let device = device.device()?;
        let dir = model.resolve(&model.model)?;
        // the same folder however it was named (an answers file records it)
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let dtype = input.precision(device.is_cuda()).dtype();
        let (processor, max_positions) =
            load_processor(&dir, !input.no_pad, Some(input.max_length))?;
        let opts = LoadOptions {
            dtype,
            device: device.clone(),
            ..LoadOptions::default()
        };
        let llava = LlavaModel::load(&dir, &opts)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        let mut eos = llava.config().eos_token_ids.clone();
        // vicuna_v1 ends every answer with `</s>`, whatever the config lists
        if let Some(id) = processor.encoder.tokenizer().token_to_id("</s>")
            && !eos.contains(&id)
        {
            eos.push(id);
        }
        Ok(Self {
            model: llava,
            processor,
            config: GenerateConfig {
                strategy,
                eos_token_ids: eos,
            },
            max_new_tokens: decode.max_new_tokens,
            max_length: input.max_length,
            max_positions,
            batch_size: decode.batch_size,
            seed: decode.seed,
            identity: json!({
                "model": dir.display().to_string(),
                "precision": format!("{dtype:?}"),
                "pad_to_square": !input.no_pad,
                "max_length": input.max_length,
                "decoding": decode.identity(),
            }),
            device,
            out: None,
            progress: None,
        })
    }

    /// Keeps the answers of [`dama_eval::answers::Generator::generate`] in `path` (JSONL):
    /// those already there are not generated again.
    pub fn with_answers_file(mut self, path: PathBuf) -> Self {
        self.out = Some(path);
        self
    }

    /// Reports `(answered, total)` after every batch of the trait's `generate`.
    pub fn with_progress(mut self, f: impl FnMut(usize, usize) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn strategy(&self) -> Strategy {
        self.config.strategy
    }

    /// The model's `max_position_embeddings`.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The prompt of `question`, with its new-token budget (`--max-new-tokens`, less if
    /// `--max-length` leaves less room), or why it cannot be answered.
    pub fn prompt(&self, index: usize, id: &str, question: &str) -> Result<Prompt> {
        let ids = self
            .processor
            .encoder
            .encode_prompt(index, question)
            .map_err(|e| anyhow::anyhow!("question `{id}`: {e}"))?;
        let room = self.max_length.saturating_sub(ids.len());
        if room == 0 {
            bail!(
                "question `{id}`: its prompt is {} tokens, which leaves no room under --max-length {}",
                ids.len(),
                self.max_length
            );
        }
        Ok(Prompt {
            max_new_tokens: self.max_new_tokens.min(room),
            // a question's own sampling stream, whatever its batch
            seed: dama_core::hash::fnv1a(id),
            input_ids: ids,
        })
    }

    /// Answers one batch. `on_step(n)`: a decoding step advanced `n` sequences.
    pub fn answer_batch(
        &self,
        questions: &[Question],
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Vec<Answer>> {
        let start = Instant::now();
        let prompts = questions
            .iter()
            .enumerate()
            .map(|(i, q)| self.prompt(i, &q.id, &q.question))
            .collect::<Result<Vec<_>>>()?;
        let images: Vec<&DynamicImage> = questions.iter().map(|q| &q.image).collect();
        let pixels = self.processor.pixel_values(&images, &self.device)?;
        let out = self
            .model
            .generate(&prompts, &Images::Pixels(pixels), &self.config, on_step)?;
        let secs = start.elapsed().as_secs_f64();
        let tokens: usize = out.iter().map(|g| g.tokens.len()).sum();
        let tokenizer = self.processor.encoder.tokenizer();
        questions
            .iter()
            .zip(out)
            .map(|(q, g)| {
                let text = tokenizer
                    .decode(&g.tokens, true)
                    .map_err(|e| anyhow::anyhow!("decoding the answer to `{}`: {e}", q.id))?;
                Ok(Answer {
                    id: q.id.clone(),
                    question: q.question.clone(),
                    answer: text.trim().to_string(),
                    tokens: g.tokens,
                    finish: g.finish.name(),
                    batch_ms: secs * 1e3,
                    batch_tokens_per_s: tokens as f64 / secs.max(1e-9),
                    batch_size: questions.len(),
                })
            })
            .collect()
    }

    /// The seed of sampling (for reports).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// What decides the answers, as an answers file records it.
    pub fn identity(&self) -> &serde_json::Value {
        &self.identity
    }
}

/// Reads and decodes a benchmark's image (embedded, or a file it names).
fn benchmark_image(q: &BenchmarkQuestion) -> std::result::Result<DynamicImage, String> {
    use base64::Engine;
    let bytes = match &q.image {
        ImageSource::Base64(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("its embedded image is not valid base64: {e}"))?,
        ImageSource::Path(p) => {
            std::fs::read(p).map_err(|e| format!("its image {}: {e}", p.display()))?
        }
        ImageSource::Url(u) => {
            return Err(format!(
                "its image is a URL ({u}): download the benchmark's images and point to their folder"
            ));
        }
    };
    let (w, h) = dama_data::image_dimensions(&bytes).map_err(|e| format!("its image: {e}"))?;
    if w.max(h) > dama_data::MAX_IMAGE_SIDE {
        return Err(format!(
            "its image is {w}×{h} pixels, over the limit of {} a side",
            dama_data::MAX_IMAGE_SIDE
        ));
    }
    dama_data::decode_rgb(&bytes).map_err(|e| format!("its image cannot be decoded: {e}"))
}

impl dama_eval::answers::Generator for ModelGenerator {
    /// Answers in `questions`' order. With an answers file, the ids it already holds are read
    /// back instead of generated, and new answers are appended as they come.
    fn generate(
        &mut self,
        questions: &[BenchmarkQuestion],
    ) -> std::result::Result<Vec<GeneratedAnswer>, EvalError> {
        let fail = |path: &Path, e: anyhow::Error| EvalError::file(path, format!("{e:#}"));
        let label = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("generate"));
        let mut seen = HashSet::new();
        if let Some(q) = questions.iter().find(|q| !seen.insert(q.id.as_str())) {
            return Err(EvalError::Config(format!(
                "question id `{}` appears twice",
                q.id
            )));
        }
        let mut file = match &self.out {
            Some(path) => Some(AnswersFile::open(path, &self.identity).map_err(|e| fail(path, e))?),
            None => None,
        };
        let mut answers: std::collections::HashMap<String, GeneratedAnswer> = file
            .as_ref()
            .map(|f| f.done().clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, (question, answer))| {
                let a = GeneratedAnswer {
                    id: id.clone(),
                    question,
                    answer,
                };
                (id, a)
            })
            .collect();
        let todo: Vec<&BenchmarkQuestion> = questions
            .iter()
            .filter(|q| !answers.contains_key(&q.id))
            .collect();
        let total = questions.len();
        let mut answered = total - todo.len();
        for chunk in todo.chunks(self.batch_size) {
            let batch = chunk
                .iter()
                .map(|q| {
                    Ok(Question {
                        id: q.id.clone(),
                        question: q.question.clone(),
                        image: benchmark_image(q).map_err(|why| {
                            EvalError::Config(format!("question `{}`: {why}", q.id))
                        })?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, EvalError>>()?;
            let out = self
                .answer_batch(&batch, &mut |_| {})
                .map_err(|e| fail(&label, e))?;
            for a in out {
                if let Some(f) = file.as_mut() {
                    f.append(&a).map_err(|e| fail(&label, e))?;
                }
                answers.insert(
                    a.id.clone(),
                    GeneratedAnswer {
                        id: a.id,
                        question: a.question,
                        answer: a.answer,
                    },
                );
            }
            answered += chunk.len();
            if let Some(p) = self.progress.as_mut() {
                p(answered, total);
            }
        }
        Ok(questions
            .iter()
            .map(|q| answers.remove(&q.id).expect("every question answered"))
            .collect())
    }
}

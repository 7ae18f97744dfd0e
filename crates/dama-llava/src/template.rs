//! The vicuna_v1 conversation template, its tokenisation and the answer labels.
//!
//! Tokenisation matches transformers' `LlavaProcessor` + the model's `tokenizer.json`: the
//! `<image>` placeholder is expanded to one token per image feature *in the text* before
//! tokenising (what the processor does), `<s>` comes from the tokenizer's post-processor.
//!
//! The scored span is the tokens of `" {answer}</s>"`. Its start is found by tokenising the
//! prompt alone and the whole conversation: when the prompt's tokens are a prefix of the
//! conversation's, the answer starts right after them. When a BPE merge crosses the boundary
//! (the prompt's last token fused with the answer's first characters), the answer starts at
//! the first token that differs, so the fused token is scored: it is the only way to score
//! every answer character exactly once without splitting a token; `boundary_merged` reports it.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::{LlavaError, Result};

/// The system prompt of LLaVA-1.5's `conv_vicuna_v1`.
pub const VICUNA_V1_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// LLaVA's image placeholder in conversation text.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// The end-of-answer marker (`sep2` of vicuna_v1), scored with the answer.
pub const END_OF_ANSWER: &str = "</s>";

/// `"{system} USER: <image>\n{question} ASSISTANT:"`: everything before the answer.
pub fn vicuna_v1_prompt(question: &str) -> String {
    format!("{VICUNA_V1_SYSTEM} USER: {IMAGE_PLACEHOLDER}\n{question} ASSISTANT:")
}

/// The full conversation: prompt, a space, the answer and `</s>`.
pub fn vicuna_v1_conversation(question: &str, answer: &str) -> String {
    format!("{} {answer}{END_OF_ANSWER}", vicuna_v1_prompt(question))
}

/// One answer's tokens and which of them are scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAnswer {
    /// `<s>`, prompt (image tokens expanded), answer, `</s>`: what the model reads.
    pub input_ids: Vec<u32>,
    /// Index of the first scored token; tokens `answer_start..` are scored.
    pub answer_start: usize,
    /// A BPE merge crossed the prompt/answer boundary (see the module doc).
    pub boundary_merged: bool,
    /// The conversation was cut to `max_length` (its tail, answer tokens included, is lost).
    pub truncated: bool,
}

impl EncodedAnswer {
    pub fn scored_tokens(&self) -> usize {
        self.input_ids.len() - self.answer_start
    }
}

/// A preference pair ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    pub chosen: EncodedAnswer,
    pub rejected: EncodedAnswer,
    /// Leading tokens both sequences share and that no answer scores: computed once when the
    /// pair runs with a shared prefix.
    pub shared_prefix: usize,
}

impl EncodedPair {
    /// One answer scored alone, for supervised fine-tuning: the other side is the bare prompt,
    /// which scores no token, and with a shared prefix costs nothing (the whole prompt is the
    /// prefix, and its tail is empty). The model's rejected sums are then 0.
    pub fn answer_only(answer: EncodedAnswer) -> Self {
        let start = answer.answer_start;
        let prompt = EncodedAnswer {
            input_ids: answer.input_ids[..start].to_vec(),
            answer_start: start,
            boundary_merged: false,
            truncated: answer.truncated,
        };
        Self {
            chosen: answer,
            rejected: prompt,
            shared_prefix: start,
        }
    }
}

/// Tokenises the template.
#[derive(Clone)]
pub struct PairEncoder {
    tokenizer: Tokenizer,
    source: PathBuf,
    image_token_id: u32,
    num_image_tokens: usize,
    max_length: Option<usize>,
    /// The prompt text with the placeholder expanded to `num_image_tokens` copies.
    image_run: String,
}

impl PairEncoder {
    /// Loads `tokenizer.json`. `num_image_tokens` is how many features one image gives (576
    /// for LLaVA-1.5); `image_token_id` the config's `image_token_index`, which must be the
    /// tokenizer's `<image>`.
    pub fn from_file(path: &Path, image_token_id: u32, num_image_tokens: usize) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| LlavaError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::new(tokenizer, path, image_token_id, num_image_tokens)
    }

    /// Wraps a tokenizer; `source` names it in errors.
    pub fn new(
        tokenizer: Tokenizer,
        source: &Path,
        image_token_id: u32,
        num_image_tokens: usize,
    ) -> Result<Self> {
        let err = |message: String| LlavaError::Tokenizer {
            path: source.to_path_buf(),
            message,
        };
        match tokenizer.token_to_id(IMAGE_PLACEHOLDER) {
            Some(id) if id == image_token_id => {}
            Some(id) => {
                return Err(err(format!(
                    "`{IMAGE_PLACEHOLDER}` is token {id}, but the model's image_token_index is {image_token_id}"
                )));
            }
            None => return Err(err(format!("no `{IMAGE_PLACEHOLDER}` token"))),
        }
        if tokenizer.token_to_id(END_OF_ANSWER).is_none() {
            return Err(err(format!("no `{END_OF_ANSWER}` token")));
        }
        let enc = |s: &str| tokenizer.encode(s, false).map(|e| e.get_ids().to_vec());
        if enc(IMAGE_PLACEHOLDER).map_err(|e| err(e.to_string()))? != [image_token_id] {
            return Err(err(format!(
                "`{IMAGE_PLACEHOLDER}` does not tokenise to the single token {image_token_id} (is it an added token?)"
            )));
        }
        Ok(Self {
            tokenizer,
            source: source.to_path_buf(),
            image_token_id,
            num_image_tokens,
            max_length: None,
            image_run: IMAGE_PLACEHOLDER.repeat(num_image_tokens),
        })
    }

    /// Cuts every conversation to `max_length` tokens (the paper: 2048). An answer left with
    /// no scored token is then an error, never a silent zero.
    pub fn with_max_length(mut self, max_length: Option<usize>) -> Self {
        self.max_length = max_length;
        self
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let text = text.replacen(IMAGE_PLACEHOLDER, &self.image_run, 1);
        let enc =
            self.tokenizer
                .encode(text.as_str(), true)
                .map_err(|e| LlavaError::Tokenizer {
                    path: self.source.clone(),
                    message: e.to_string(),
                })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes `(question, chosen, rejected)`; `index` names the pair in errors.
    ///
    /// An `<image>` inside the question is removed and the question trimmed, as LLaVA's
    /// `preprocess_multimodal` does (the template places the image itself); one inside an
    /// answer is an error, since it would take an image feature's place.
    pub fn encode_pair(
        &self,
        index: usize,
        question: &str,
        chosen: &str,
        rejected: &str,
    ) -> Result<EncodedPair> {
        let question = clean_question(question);
        let prompt = self.encode(&vicuna_v1_prompt(&question))?;
        let chosen = self.encode_answer(index, "chosen", &question, &prompt, chosen)?;
        let rejected = self.encode_answer(index, "rejected", &question, &prompt, rejected)?;
        let shared_prefix = chosen.answer_start.min(rejected.answer_start);
        if chosen.input_ids[..shared_prefix] != rejected.input_ids[..shared_prefix] {
            return Err(LlavaError::Example {
                index,
                side: "pair",
                message: "chosen and rejected tokenise the shared prompt differently".into(),
            });
        }
        Ok(EncodedPair {
            chosen,
            rejected,
            shared_prefix,
        })
    }

    /// The prompt of a question, for generating its answer: `<s>`, the template up to
    /// `ASSISTANT:` with the image tokens expanded (the same tokens [`Self::encode_pair`]
    /// puts before an answer). An `<image>` in the question is moved as there; `index` names
    /// the question in errors.
    pub fn encode_prompt(&self, index: usize, question: &str) -> Result<Vec<u32>> {
        let ids = self.encode(&vicuna_v1_prompt(&clean_question(question)))?;
        let images = ids.iter().filter(|&&t| t == self.image_token_id).count();
        if images != self.num_image_tokens {
            return Err(LlavaError::Example {
                index,
                side: "question",
                message: format!(
                    "{images} image tokens after expansion, expected {} (one image per question)",
                    self.num_image_tokens
                ),
            });
        }
        Ok(ids)
    }

    fn encode_answer(
        &self,
        index: usize,
        side: &'static str,
        question: &str,
        prompt: &[u32],
        answer: &str,
    ) -> Result<EncodedAnswer> {
        let bad = |message: String| LlavaError::Example {
            index,
            side,
            message,
        };
        if answer.contains(IMAGE_PLACEHOLDER) {
            return Err(bad(format!("the answer contains `{IMAGE_PLACEHOLDER}`")));
        }
        let mut ids = self.encode(&vicuna_v1_conversation(question, answer))?;
        let images: Vec<usize> = (0..ids.len())
            .filter(|&i| ids[i] == self.image_token_id)
            .collect();
        if images.len() != self.num_image_tokens {
            return Err(bad(format!(
                "{} image tokens after expansion, expected {} (one image per conversation)",
                images.len(),
                self.num_image_tokens
            )));
        }
        let common = prompt.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        let boundary_merged = common < prompt.len();
        let answer_start = common;
        if answer_start == 0 || images.last().is_some_and(|&last| last >= answer_start) {
            return Err(bad(
                "the prompt and the conversation tokenise differently before the answer".into(),
            ));
        }
        let mut truncated = false;
        if let Some(max) = self.max_length
            && ids.len() > max
        {
            ids.truncate(max);
            truncated = true;
            if answer_start >= max {
                return Err(LlavaError::NoScoredTokens {
                    index,
                    side,
                    prompt_tokens: answer_start,
                    max_length: max,
                });
            }
        }
        if answer_start >= ids.len() {
            return Err(LlavaError::NoScoredTokens {
                index,
                side,
                prompt_tokens: answer_start,
                max_length: self.max_length.unwrap_or(ids.len()),
            });
        }
        Ok(EncodedAnswer {
            input_ids: ids,
            answer_start,
            boundary_merged,
            truncated,
        })
    }
}

/// LLaVA's `preprocess_multimodal`: an `<image>` inside the question is removed and the
/// question trimmed, since the template places the image itself.
fn clean_question(question: &str) -> String {
    if question.contains(IMAGE_PLACEHOLDER) {
        question.replace(IMAGE_PLACEHOLDER, "").trim().to_string()
    } else {
        question.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn fixture_encoder() -> PairEncoder {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava-tiny/tokenizer.json");
        PairEncoder::from_file(&path, 1000, 16).unwrap()
    }

    #[test]
    fn template_text_is_vicuna_v1() {
        assert_eq!(
            vicuna_v1_conversation("What is it?", "A cat."),
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat is it? ASSISTANT: A cat.</s>"
        );
    }

    #[test]
    fn labels_score_exactly_the_answer_and_eos() {
        let enc = fixture_encoder();
        let p = enc
            .encode_pair(0, "What is in the image?", "A red square.", "No.")
            .unwrap();
        for a in [&p.chosen, &p.rejected] {
            assert_eq!(a.input_ids[0], 1, "starts with <s>");
            assert_eq!(*a.input_ids.last().unwrap(), 2, "ends with </s>");
            assert!(!a.boundary_merged && !a.truncated);
            let answer = enc
                .tokenizer()
                .decode(&a.input_ids[a.answer_start..a.input_ids.len() - 1], false)
                .unwrap();
            let prompt = enc
                .tokenizer()
                .decode(&a.input_ids[a.answer_start - 3..a.answer_start], false)
                .unwrap();
            assert!(prompt.ends_with("ASSISTANT:"), "{prompt:?}");
            assert!(answer == "A red square." || answer == "No.", "{answer:?}");
        }
        assert_eq!(p.shared_prefix, p.chosen.answer_start);
        assert_eq!(p.chosen.answer_start, p.rejected.answer_start);
        assert_eq!(
            p.chosen.input_ids.iter().filter(|&&t| t == 1000).count(),
            16
        );
    }

    #[test]
    fn a_prompt_is_the_tokens_before_the_answer() {
        let enc = fixture_encoder();
        let p = enc
            .encode_pair(0, "What is in the image?", "A red square.", "No.")
            .unwrap();
        let prompt = enc
            .encode_prompt(0, "<image>\nWhat is in the image?")
            .unwrap();
        assert_eq!(prompt, p.chosen.input_ids[..p.chosen.answer_start]);
    }

    #[test]
    fn image_in_question_is_moved_and_in_answer_rejected() {
        let enc = fixture_encoder();
        let a = enc
            .encode_pair(0, "<image>\nWhat is it?", "A.", "B.")
            .unwrap();
        let b = enc.encode_pair(0, "What is it?", "A.", "B.").unwrap();
        assert_eq!(a, b);
        let e = enc
            .encode_pair(4, "Q?", "A <image> B", "B.")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("example 4 (chosen)") && e.contains("<image>"),
            "{e}"
        );
    }

    #[test]
    fn an_answer_with_no_scored_token_is_an_error() {
        let enc = fixture_encoder();
        let prompt_len = enc.encode(&vicuna_v1_prompt("What is it?")).unwrap().len();
        let cut = enc.clone().with_max_length(Some(prompt_len));
        let e = cut
            .encode_pair(7, "What is it?", "A cat.", "A dog.")
            .unwrap_err();
        assert!(
            matches!(
                e,
                LlavaError::NoScoredTokens {
                    index: 7,
                    side: "chosen",
                    ..
                }
            ),
            "{e}"
        );
        // one token more keeps exactly one scored token, and says it truncated
        let cut = enc.with_max_length(Some(prompt_len + 1));
        let p = cut
            .encode_pair(7, "What is it?", "A cat.", "A dog.")
            .unwrap();
        assert_eq!(p.chosen.scored_tokens(), 1);
        assert!(p.chosen.truncated);
    }

    /// A hand-made BPE whose merges fuse ":" with the "▁" that starts the answer, so that the
    /// prompt's tokens are not a prefix of the conversation's.
    #[test]
    fn a_merge_across_the_boundary_is_scored_with_the_answer() {
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 3, "content": "<image>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
          ],
          "normalizer": null,
          "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
          "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "decoder": null,
          "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false, "ignore_merges": false,
            "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 3, ":": 4, "▁": 5, "x": 6, ":▁": 7},
            "merges": [[":", "▁"]]}
        }"#;
        let tok = Tokenizer::from_str(json).unwrap();
        let enc = PairEncoder::new(tok, Path::new("inline"), 3, 2).unwrap();
        // Unknown characters all fuse into <unk>; what matters is the ":" + "▁x" boundary.
        let p = enc.encode_pair(0, "x", "x", "xx").unwrap();
        let c = &p.chosen;
        assert!(c.boundary_merged);
        assert_eq!(
            c.input_ids[c.answer_start], 7,
            "the fused `:▁` token is scored"
        );
        assert_eq!(&c.input_ids[c.answer_start..], &[7, 6, 2]);
        assert_eq!(
            &p.rejected.input_ids[p.rejected.answer_start..],
            &[7, 6, 6, 2]
        );
        assert_eq!(p.shared_prefix, c.answer_start);
    }
}

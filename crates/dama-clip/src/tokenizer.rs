//! The CLIP BPE tokenizer, through the `tokenizers` crate from an HF `tokenizer.json`, with
//! transformers' `CLIPTokenizer` behaviour: `<|startoftext|>` … `<|endoftext|>` (the file's
//! post-processor adds them), truncation to 77 tokens that keeps `<|endoftext|>` last, and right
//! padding with `<|endoftext|>` (the openai repos' `pad_token`).
//!
//! transformers' tokenizer (NFC, whitespace collapse, lowercase) is not the original CLIP
//! tokenizer (ftfy, HTML unescaping): they disagree on curly quotes, fullwidth letters,
//! ligatures, HTML entities and on a literal `<|endoftext|>` inside the text (transformers
//! turns it into the special token, so pooling stops there). We follow transformers, which is
//! what the Hugging Face CLIP checkpoints are used with; the tests pin those cases.

use candle_core::{Device, Tensor};

use crate::error::{ClipError, Result};

/// CLIP's context length.
pub const CONTEXT_LENGTH: usize = 77;

/// A `tokenizer.json` for a closed vocabulary: lowercased words and punctuation marks
/// (`Whitespace` pre-tokenizer), one id each in the order of `words`, then `<|unk|>`,
/// `<|startoftext|>` and `<|endoftext|>` (the largest id, so either pooling rule finds it), and
/// a post-processor that wraps every text in the last two, as CLIP's does. For a CLIP trained
/// on a world of its own (the demo's), where a BPE vocabulary of 49,408 would be mostly unused
/// embedding rows. Words must be lowercase, free of whitespace, and distinct.
pub fn word_level_tokenizer_json(words: &[&str]) -> String {
    let n = words.len();
    let (unk, bos, eos) = (n, n + 1, n + 2);
    let mut vocab = serde_json::Map::new();
    for (i, w) in words.iter().enumerate() {
        vocab.insert((*w).to_owned(), i.into());
    }
    let specials = [
        ("<|unk|>", unk),
        ("<|startoftext|>", bos),
        ("<|endoftext|>", eos),
    ];
    for (t, id) in specials {
        vocab.insert(t.to_owned(), id.into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .map(|(t, id)| {
            serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special = |t: &str| serde_json::json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| serde_json::json!({"Sequence": {"id": s, "type_id": 0}});
    let entry = |t: &str, id: usize| serde_json::json!({"id": t, "ids": [id], "tokens": [t]});
    let doc = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("<|startoftext|>"), seq("A"), special("<|endoftext|>")],
            "pair": [special("<|startoftext|>"), seq("A"), special("<|endoftext|>"), seq("B"),
                     special("<|endoftext|>")],
            "special_tokens": {
                "<|startoftext|>": entry("<|startoftext|>", bos),
                "<|endoftext|>": entry("<|endoftext|>", eos)
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|unk|>"}
    });
    serde_json::to_string_pretty(&doc).expect("JSON values serialise") + "\n"
}

#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: tokenizers::Tokenizer,
    /// The same without truncation: counts what a text would need, for splitters that keep
    /// sub-sentences within the 77-token context instead of letting them be cut.
    counter: tokenizers::Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
}

impl ClipTokenizer {
    /// Reads a `tokenizer.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| ClipError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Parses the bytes of a `tokenizer.json`; `name` stands for the file in errors.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let err = |message: String| ClipError::Tokenizer {
            file: name.to_string(),
            message,
        };
        let mut tokenizer =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| err(e.to_string()))?;
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| err(format!("no {token} token in the vocabulary")))
        };
        let (bos_id, eos_id) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: CONTEXT_LENGTH,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        tokenizer.with_padding(None);
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        let this = Self {
            tokenizer,
            counter,
            bos_id,
            eos_id,
            pad_id: eos_id,
            max_length: CONTEXT_LENGTH,
        };
        // Text pooling needs the end-of-text token, which only the post-processor adds.
        let probe = this.encode("a")?;
        if probe.first() != Some(&bos_id) || probe.last() != Some(&eos_id) {
            return Err(err(format!(
                "encoding \"a\" gave {probe:?}: the file's post_processor must add <|startoftext|> and <|endoftext|>"
            )));
        }
        Ok(this)
    }

    /// Another padding id (the openai repos pad with `<|endoftext|>`, the default here; laion's
    /// pad with `!`, id 0). Pooling is unaffected either way.
    pub fn with_pad_id(mut self, pad_id: u32) -> Self {
        self.pad_id = pad_id;
        self
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The ids of one text with `<|startoftext|>` and `<|endoftext|>`, at most 77 of them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| ClipError::Tokenizer {
                file: "tokenizer".into(),
                message: format!("encoding {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// How many tokens `text` needs, `<|startoftext|>` and `<|endoftext|>` included, before
    /// truncation (so a result above 77 means the text would be cut).
    pub fn token_count(&self, text: &str) -> usize {
        self.counter
            .encode_fast(text, true)
            .map(|e| e.get_ids().len())
            .unwrap_or(usize::MAX)
    }

    /// The ids of each text, unpadded.
    pub fn encode_ids<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// The ids of each text right-padded with the pad id to the longest: what transformers'
    /// `tokenizer(texts, padding=True, truncation=True)` returns as `input_ids`.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let mut ids = self.encode_ids(texts)?;
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        for row in &mut ids {
            row.resize(longest, self.pad_id);
        }
        Ok(ids)
    }

    /// [`Self::encode_batch`] as a (b, t) u32 tensor.
    pub fn encode_batch_tensor<S: AsRef<str>>(
        &self,
        texts: &[S],
        device: &Device,
    ) -> Result<Tensor> {
        let ids = self.encode_batch(texts)?;
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        Ok(Tensor::from_vec(ids.concat(), (b, t), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_level_tokenizer_wraps_lowercases_and_knows_its_words() {
        let json = word_level_tokenizer_json(&["there", "is", "a", "red", "circle", "."]);
        let tok = ClipTokenizer::from_bytes("words.json", json.as_bytes()).unwrap();
        assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (7, 8, 8));
        assert_eq!(
            tok.encode("There is a RED circle.").unwrap(),
            [7, 0, 1, 2, 3, 4, 5, 8]
        );
        // An unknown word is <|unk|>, not an error; the context is still cut at 77.
        assert_eq!(tok.encode("a blue circle").unwrap(), [7, 2, 6, 4, 8]);
        let long = "a ".repeat(100);
        let ids = tok.encode(&long).unwrap();
        assert_eq!((ids.len(), ids[76]), (77, 8));
        assert_eq!(tok.token_count(&long), 102);
    }
}

//! The CLIP BPE tokenizer (the real 49,408-token vocabulary) against transformers'
//! `CLIPTokenizer`: ids of tricky strings exactly, truncation to 77 with `<|endoftext|>` last,
//! right padding.

mod common;

use common::*;
use dama_clip::ClipTokenizer;

#[derive(serde::Deserialize)]
struct Tokens {
    pad_token_id: u32,
    single: Vec<Single>,
    batch_input_ids: Vec<Vec<u32>>,
}

#[derive(serde::Deserialize)]
struct Single {
    text: String,
    ids: Vec<u32>,
}

fn load() -> (ClipTokenizer, Tokens) {
    let tok = ClipTokenizer::from_file(&tiny_dir().join("tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(fixtures().join("tokens.json")).unwrap();
    (tok, serde_json::from_str(&text).unwrap())
}

#[test]
fn ids_equal_transformers() {
    let (tok, want) = load();
    assert_eq!(tok.pad_id(), want.pad_token_id);
    assert_eq!((tok.bos_id(), tok.eos_id()), (49406, 49407));
    for s in &want.single {
        assert_eq!(tok.encode(&s.text).unwrap(), s.ids, "{:?}", s.text);
    }
    // The famous ones from NOTES.md: "a" is 320, "red" 736.
    assert_eq!(tok.encode("a red").unwrap(), vec![49406, 320, 736, 49407]);
}

#[test]
fn long_texts_truncate_to_77_keeping_end_of_text() {
    let (tok, want) = load();
    let long: Vec<&Single> = want.single.iter().filter(|s| s.ids.len() == 77).collect();
    assert!(long.len() >= 2, "the fixture has long strings");
    for s in long {
        let ids = tok.encode(&s.text).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], 49406);
        assert_eq!(ids[76], 49407);
    }
}

#[test]
fn batch_is_right_padded_like_transformers() {
    let (tok, want) = load();
    let texts: Vec<&str> = want.single.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(tok.encode_batch(&texts).unwrap(), want.batch_input_ids);
    let t = tok
        .encode_batch_tensor(&texts, &candle_core::Device::Cpu)
        .unwrap();
    assert_eq!(t.to_vec2::<u32>().unwrap(), want.batch_input_ids);
}

#[test]
fn transformers_not_original_clip_on_special_cases() {
    // Pinned where transformers' tokenizer and OpenAI's (ftfy + html.unescape) disagree: we
    // follow transformers. A literal <|endoftext|> is the special token (so pooling stops there).
    let (tok, _) = load();
    assert_eq!(
        tok.encode("hello<|endoftext|>world").unwrap(),
        vec![49406, 3306, 49407, 1002, 49407]
    );
    assert_eq!(tok.encode("").unwrap(), vec![49406, 49407]);
}

#[test]
fn broken_tokenizer_files_are_named() {
    let err = ClipTokenizer::from_bytes("my/tokenizer.json", b"{ not json")
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("my/tokenizer.json:"), "{err}");
    // A valid tokenizer.json without CLIP's special tokens.
    let text = std::fs::read_to_string(tiny_dir().join("tokenizer.json")).unwrap();
    let broken = text.replace("<|startoftext|>", "<|start|>");
    let err = ClipTokenizer::from_bytes("t.json", broken.as_bytes())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("<|startoftext|>"), "{err}");
}

#[test]
fn token_count_is_the_untruncated_length() {
    let (tok, _) = load();
    assert_eq!(
        tok.token_count("a red circle"),
        tok.encode("a red circle").unwrap().len()
    );
    let long = "word ".repeat(100);
    assert_eq!(tok.encode(&long).unwrap().len(), 77);
    assert_eq!(
        tok.token_count(&long),
        102,
        "100 words + <|startoftext|> + <|endoftext|>"
    );
}

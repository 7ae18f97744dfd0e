//! Generation against transformers' `generate` (the oracle, `scripts/golden_generate.py`):
//! tiny random LLaVAs with the Llama-2 tokenizer and a real-size vocabulary (32064 rows),
//! grouped-query and multi-head attention; greedy and beam search (3 beams, length penalties
//! 0.5 / 1 / 2 with 2 beams), each question alone and the three as one left-padded batch.
//! Token ids must be identical, beam scores equal to 1e-4, decoded texts identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dama_llava::{
    Finish, GenerateConfig, Generation, Images, LlavaModel, LoadOptions, PairEncoder, Prompt,
    Strategy,
};
use serde::Deserialize;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate")
}

#[derive(Deserialize)]
struct Case {
    question: String,
    input_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Answer {
    tokens: Vec<u32>,
    finish: String,
    text: String,
    score: Option<f32>,
}

#[derive(Deserialize)]
struct Setting {
    single: Vec<Answer>,
    batch: Vec<Answer>,
}

#[derive(Deserialize)]
struct ModelGolden {
    settings: BTreeMap<String, Setting>,
}

#[derive(Deserialize)]
struct Golden {
    max_new_tokens: usize,
    eos_token_id: u32,
    cases: Vec<Case>,
    models: BTreeMap<String, ModelGolden>,
    settings: BTreeMap<String, serde_json::Value>,
}

fn golden() -> Golden {
    serde_json::from_str(&std::fs::read_to_string(dir().join("golden.json")).unwrap()).unwrap()
}

/// transformers' keyword arguments → our strategy.
fn strategy(kwargs: &serde_json::Value) -> Strategy {
    let beams = kwargs["num_beams"].as_u64().unwrap() as usize;
    assert_eq!(kwargs["do_sample"], false);
    if beams == 1 {
        Strategy::Greedy
    } else {
        Strategy::Beam {
            num_beams: beams,
            length_penalty: kwargs["length_penalty"].as_f64().unwrap() as f32,
        }
    }
}

fn pixels() -> Tensor {
    candle_core::safetensors::load(dir().join("pixel_values.safetensors"), &Device::Cpu).unwrap()
        ["pixel_values"]
        .clone()
}

fn encoder(model: &LlavaModel) -> PairEncoder {
    let cfg = model.config();
    PairEncoder::from_file(
        &dir().join("tokenizer.json"),
        cfg.image_token_id,
        cfg.num_image_tokens(),
    )
    .unwrap()
}

fn load(name: &str) -> LlavaModel {
    let opts = LoadOptions {
        dtype: DType::F32,
        ..LoadOptions::default()
    };
    LlavaModel::load(&dir().join(name), &opts).unwrap()
}

fn check(encoder: &PairEncoder, what: &str, got: &Generation, want: &Answer) {
    assert_eq!(got.tokens, want.tokens, "{what}: token ids");
    let finish = match got.finish {
        Finish::Eos => "eos",
        Finish::Length => "length",
    };
    assert_eq!(finish, want.finish, "{what}: finish");
    if let Some(s) = want.score {
        assert!(
            (got.score - s).abs() <= 1e-4 * s.abs().max(1.0),
            "{what}: score {} vs {s}",
            got.score
        );
    }
    let text = encoder.tokenizer().decode(&got.tokens, true).unwrap();
    assert_eq!(text, want.text, "{what}: decoded text");
}

fn check_model(name: &str) {
    let g = golden();
    let model = load(name);
    assert_eq!(model.config().eos_token_ids, vec![g.eos_token_id]);
    let enc = encoder(&model);
    let px = pixels();
    let prompts: Vec<Prompt> = g
        .cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ids = enc.encode_prompt(i, &c.question).unwrap();
            assert_eq!(ids, c.input_ids, "case {i}: the prompt's token ids");
            Prompt::new(ids, g.max_new_tokens)
        })
        .collect();
    let golden = &g.models[name];
    assert_eq!(golden.settings.len(), 4);
    for (setting, want) in &golden.settings {
        let cfg = GenerateConfig {
            strategy: strategy(&g.settings[setting]),
            eos_token_ids: model.config().eos_token_ids.clone(),
        };
        for (i, p) in prompts.iter().enumerate() {
            let images = Images::Pixels(px.narrow(0, i, 1).unwrap());
            let got = model
                .generate(std::slice::from_ref(p), &images, &cfg, &mut |_| {})
                .unwrap();
            check(
                &enc,
                &format!("{name} {setting} case {i}"),
                &got[0],
                &want.single[i],
            );
        }
        let mut steps = 0;
        let got = model
            .generate(&prompts, &Images::Pixels(px.clone()), &cfg, &mut |n| {
                steps += n
            })
            .unwrap();
        assert!(steps > 0);
        for (i, (got, want)) in got.iter().zip(&want.batch).enumerate() {
            check(&enc, &format!("{name} {setting} batch case {i}"), got, want);
        }
    }
}

#[test]
fn grouped_query_attention_generates_transformers_ids() {
    check_model("llava-gen-gqa");
}

#[test]
fn multi_head_attention_generates_transformers_ids() {
    check_model("llava-gen-mha");
}

/// The fixtures cover both endings and answers of different lengths, so that the comparison
/// means something.
#[test]
fn the_golden_cases_end_both_ways() {
    let g = golden();
    let all: Vec<&Answer> = g
        .models
        .values()
        .flat_map(|m| m.settings.values())
        .flat_map(|s| s.single.iter())
        .collect();
    assert!(all.iter().any(|a| a.finish == "eos"));
    assert!(all.iter().any(|a| a.finish == "length"));
    assert!(all.iter().any(|a| a.tokens.len() < g.max_new_tokens / 2));
    assert!(
        g.cases
            .windows(2)
            .any(|w| w[0].input_ids.len() != w[1].input_ids.len())
    );
}

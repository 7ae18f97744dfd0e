//! The tiny random CLIPModel against transformers (f32): vision hidden states at every index
//! (LLaVA's contract), pooled outputs, features, unit embeddings and `logits_per_image`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use dama_clip::{ClipModel, ClipTokenizer, ImageProcessor};

const TOL: f32 = 1e-4;

fn model() -> ClipModel {
    ClipModel::load(&tiny_dir(), &Device::Cpu, DType::F32).unwrap()
}

fn pixel_values() -> Tensor {
    let p = ImageProcessor::from_file(&tiny_dir().join("preprocessor_config.json")).unwrap();
    let ims: Vec<_> = IMAGES.iter().map(|n| open_image(n)).collect();
    let t = p
        .to_tensor(&ims.iter().collect::<Vec<_>>(), &Device::Cpu)
        .unwrap();
    // Feed exactly transformers' pixel values (the JPEG decodes differently, see
    // preprocess_fixtures): the model is under test here, not the decoder.
    let rows: Vec<Tensor> = IMAGES
        .iter()
        .map(|n| expect(&format!("pixel_values.{n}")).clone())
        .collect();
    let want = Tensor::stack(&rows, 0).unwrap();
    assert_eq!(t.dims(), want.dims());
    want
}

fn input_ids() -> Tensor {
    let tok = ClipTokenizer::from_file(&tiny_dir().join("tokenizer.json")).unwrap();
    #[derive(serde::Deserialize)]
    struct Tokens {
        single: Vec<Single>,
    }
    #[derive(serde::Deserialize)]
    struct Single {
        text: String,
    }
    let t: Tokens =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap())
            .unwrap();
    let texts: Vec<&str> = t.single.iter().map(|s| s.text.as_str()).collect();
    tok.encode_batch_tensor(&texts, &Device::Cpu).unwrap()
}

#[test]
fn vision_hidden_states_follow_transformers_indexing() {
    let m = model();
    let pv = pixel_values();
    let n = m.vision_model.config().num_hidden_layers;
    let all = m.vision_model.hidden_states(&pv, n).unwrap();
    assert_eq!(all.len(), n + 1);
    for (k, h) in all.iter().enumerate() {
        let d = assert_close(
            &format!("hidden_states[{k}]"),
            h,
            expect(&format!("vision.hidden_states.{k}")),
            TOL,
        );
        println!("hidden_states[{k}]: max |diff| {d:e}");
    }
    // LLaVA-1.5's feature layer −2 = index N−1, computed with N−1 layers only.
    let penultimate = m.vision_model.hidden_state(&pv, -2).unwrap();
    assert_close(
        "hidden_states[-2]",
        &penultimate,
        expect(&format!("vision.hidden_states.{}", n - 1)),
        TOL,
    );
    let fewer = m.vision_model.hidden_states(&pv, n - 1).unwrap();
    assert_eq!(fewer.len(), n);
    assert_eq!(max_abs_diff(fewer.last().unwrap(), &penultimate), 0.0);
    assert!(m.vision_model.hidden_states(&pv, n + 1).is_err());
    assert!(m.vision_model.hidden_state(&pv, -(n as isize) - 2).is_err());
    assert_close(
        "hidden_states[0] via -(N+1)",
        &m.vision_model.hidden_state(&pv, -(n as isize) - 1).unwrap(),
        expect("vision.hidden_states.0"),
        TOL,
    );
}

#[test]
fn pooled_features_and_embeds_equal_transformers() {
    let m = model();
    let (pv, ids) = (pixel_values(), input_ids());
    let mut worst = 0f32;
    for (what, got, key) in [
        (
            "vision pooled",
            m.vision_model.forward(&pv).unwrap(),
            "vision.pooled",
        ),
        (
            "text pooled",
            m.text_model.forward(&ids).unwrap(),
            "text.pooled",
        ),
        (
            "image features",
            m.image_features(&pv).unwrap(),
            "model.image_features",
        ),
        (
            "text features",
            m.text_features(&ids).unwrap(),
            "model.text_features",
        ),
        (
            "image embeds",
            m.image_embeds(&pv).unwrap(),
            "model.image_embeds",
        ),
        (
            "text embeds",
            m.text_embeds(&ids).unwrap(),
            "model.text_embeds",
        ),
    ] {
        worst = worst.max(assert_close(what, &got, expect(key), TOL));
    }
    println!("pooled/features/embeds: max |diff| {worst:e}");
}

#[test]
fn logits_per_image_equal_transformers() {
    let m = model();
    assert!((m.logit_scale_exp() - 100.0).abs() < 1e-3);
    let logits = m.logits_per_image(&pixel_values(), &input_ids()).unwrap();
    let d = assert_close(
        "logits_per_image",
        &logits,
        expect("model.logits_per_image"),
        TOL,
    );
    println!("logits_per_image {:?}: max |diff| {d:e}", logits.dims());
}

#[test]
fn padding_and_batch_composition_do_not_change_text_embeds() {
    // Each text alone (no padding at all) gives the row of the padded batch.
    let m = model();
    let ids = input_ids().to_vec2::<u32>().unwrap();
    let want = expect("model.text_embeds");
    let tok = ClipTokenizer::from_file(&tiny_dir().join("tokenizer.json")).unwrap();
    for (i, row) in ids.iter().enumerate().step_by(4) {
        let unpadded: Vec<u32> =
            row[..=row.iter().position(|&v| v == tok.eos_id()).unwrap()].to_vec();
        let got = m.text_embeds_ids(&[unpadded]).unwrap();
        assert_close(
            &format!("text {i} alone"),
            &got,
            &want.narrow(0, i, 1).unwrap(),
            TOL,
        );
    }
}

#[test]
fn reduced_precision_runs_and_stays_close() {
    // f16/bf16 are accepted: weights converted on load, softmax in f32. Only a sanity bound here
    // (bf16 has 8 bits of mantissa).
    let want = expect("model.logits_per_image");
    for (dtype, tol) in [(DType::F16, 0.5), (DType::BF16, 2.0)] {
        let m = ClipModel::load(&tiny_dir(), &Device::Cpu, dtype).unwrap();
        assert_eq!(m.dtype(), dtype);
        let logits = m.logits_per_image(&pixel_values(), &input_ids()).unwrap();
        let d = assert_close(&format!("{dtype:?} logits"), &logits, want, tol);
        println!("{dtype:?}: logits max |diff| {d}");
    }
}

#[test]
fn wrong_inputs_are_errors() {
    let m = model();
    let small = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = m.image_features(&small).unwrap_err().to_string();
    assert!(
        err.contains("(3, 32, 32)") && err.contains("(3, 48, 48)"),
        "{err}"
    );
    let err = m
        .text_features_ids(&[vec![49406, 50000, 49407]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("50000"), "{err}");
    let err = m
        .text_features_ids(&[vec![49406; 78]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("78 tokens"), "{err}");
}

#[test]
fn vision_tower_alone_as_llava_builds_it() {
    // LLaVA's contract: the tower from a VarBuilder at the `vision_model` prefix, from a
    // checkpoint that may lack `post_layernorm` (only hidden states are read).
    let mut tensors =
        candle_core::safetensors::load(tiny_dir().join("model.safetensors"), &Device::Cpu).unwrap();
    tensors.retain(|k, _| k.starts_with("vision_model.") && !k.contains("post_layernorm"));
    let cfg = dama_clip::ClipConfig::from_file(&tiny_dir().join("config.json"))
        .unwrap()
        .vision_config;
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let tower = dama_clip::ClipVisionTransformer::new(vb.pp("vision_model"), &cfg).unwrap();
    let pv = pixel_values();
    let states = tower.hidden_states(&pv, cfg.num_hidden_layers - 1).unwrap();
    assert_close(
        "hidden_states[-2]",
        states.last().unwrap(),
        expect("vision.hidden_states.2"),
        TOL,
    );
    let err = tower.forward(&pv).unwrap_err().to_string();
    assert!(err.contains("post_layernorm"), "{err}");
}

/// The training forward (`dama_clip::train`, differentiable ops only) on transformers'
/// weights gives transformers' `logits_per_image`: what a CLIP trained here learns is what
/// the inference path and transformers compute.
#[test]
fn training_forward_equals_transformers() {
    let config = dama_clip::ClipConfig::from_file(&tiny_dir().join("config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(tiny_dir().join("model.safetensors"), &Device::Cpu).unwrap();
    let clip = dama_clip::TrainableClip::from_tensors(&config, tensors, &Device::Cpu).unwrap();
    let ids: Vec<Vec<u32>> = input_ids().to_vec2::<u32>().unwrap();
    let logits = clip
        .logits(
            &clip.image_embeds(&pixel_values()).unwrap(),
            &clip.text_embeds(&ids).unwrap(),
        )
        .unwrap();
    let d = assert_close(
        "training logits_per_image",
        &logits,
        expect("model.logits_per_image"),
        TOL,
    );
    println!("training forward: max |diff| {d:e}");
}

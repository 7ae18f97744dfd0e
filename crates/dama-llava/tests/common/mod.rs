//! Shared helpers of the integration tests: the fixtures written by
//! `scripts/fixtures/llava.py` (transformers 5.24, f32) and the batch they describe.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dama_llava::{
    AspectMode, Images, LlavaModel, LlavaProcessor, LoadOptions, PairBatch, Trainable,
};
use serde::Deserialize;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(Deserialize)]
pub struct Side {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub answer_start: usize,
}

#[derive(Deserialize)]
pub struct Case {
    pub image: String,
    pub aspect: String,
    pub question: String,
    pub chosen: Side,
    pub rejected: Side,
}

#[derive(Deserialize)]
pub struct ModelExpectation {
    pub chosen_logps: Vec<f32>,
    pub rejected_logps: Vec<f32>,
    pub chosen_tokens: Vec<usize>,
    pub rejected_tokens: Vec<usize>,
}

#[derive(Deserialize)]
pub struct Expected {
    pub cases: Vec<Case>,
    pub models: HashMap<String, ModelExpectation>,
}

pub fn expected() -> Expected {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `pixel_values`, `vision_features` and `grad.*` from transformers.
pub fn expected_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu).unwrap()
}

pub fn aspect(case: &Case) -> AspectMode {
    match case.aspect.as_str() {
        "pad" => AspectMode::Pad,
        _ => AspectMode::Resize,
    }
}

pub fn load(dir: &str, dtype: DType, trainable: Trainable) -> (LlavaModel, LlavaProcessor) {
    let path = fixtures().join(dir);
    let opts = LoadOptions {
        dtype,
        device: Device::Cpu,
        trainable,
    };
    let model = LlavaModel::load(&path, &opts).unwrap();
    let processor = LlavaProcessor::load(&path, model.config()).unwrap();
    (model, processor)
}

/// The fixture cases as one batch, images preprocessed by our processor (each in its own
/// aspect mode).
pub fn batch(processor: &LlavaProcessor, exp: &Expected) -> PairBatch {
    let mut pixels = Vec::new();
    let mut pairs = Vec::new();
    for (i, c) in exp.cases.iter().enumerate() {
        let img = image::open(fixtures().join("images").join(&c.image)).unwrap();
        let p = processor.clone().with_aspect(aspect(c));
        pixels.push(p.pixel_values(&[&img], &Device::Cpu).unwrap());
        pairs.push(
            p.encoder
                .encode_pair(i, &c.question, &c.chosen.text, &c.rejected.text)
                .unwrap(),
        );
    }
    PairBatch {
        images: Images::Pixels(Tensor::cat(&pixels, 0).unwrap()),
        pairs,
    }
}

/// Largest relative difference, element-wise: |a − b| / max(|b|, floor).
pub fn max_rel(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, f32::max)
}

pub fn vec1(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Copies a fixture model folder to a temp dir so a test can alter it.
pub fn copy_fixture(dir: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(dir)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    tmp
}

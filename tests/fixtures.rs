//! Tiny models and small datasets that the integration tests build for themselves, shared by
//! the cross-crate tests beside this file and by `dama-native`'s command-line tests.

use std::path::{Path, PathBuf};

use dama_llava::random::{TinySpec, write_tiny_model};
use dama_train::TrainConfig;

/// A tiny LLaVA (smaller than the demo's, for fast tests).
pub fn tiny_model(dir: &Path, seed: u64) -> PathBuf {
    let spec = TinySpec {
        hidden_size: 32,
        intermediate_size: 64,
        vision_layers: 2,
        image_size: 28,
        ..TinySpec::default()
    };
    let path = dir.join(format!("model-{seed}"));
    std::fs::create_dir_all(&path).unwrap();
    write_tiny_model(&path, &spec, seed).unwrap();
    path
}

const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 30, 30]),
    ("green", [30, 180, 60]),
    ("blue", [40, 60, 220]),
    ("yellow", [240, 220, 40]),
    ("white", [250, 250, 250]),
    ("black", [10, 10, 10]),
];

/// `n` pairs as JSONL with an image folder: a plain colour image, the chosen answer names its
/// colour, the rejected one another colour. `edit` may break records for the bad-input tests.
pub fn dataset(dir: &Path, n: usize, edit: impl Fn(usize, &mut serde_json::Value)) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut lines = Vec::new();
    for i in 0..n {
        let (name, rgb) = COLOURS[i % COLOURS.len()];
        let (wrong, _) = COLOURS[(i + 1 + i / COLOURS.len()) % COLOURS.len()];
        let file = format!("img{i}.png");
        image::RgbImage::from_pixel(24 + (i % 5) as u32, 30, image::Rgb(rgb))
            .save(images.join(&file))
            .unwrap();
        let mut rec = serde_json::json!({
            "id": format!("pair{i}"),
            "image": format!("images/{file}"),
            "question": "What colour is the image?",
            "chosen": format!("The image is {name}."),
            "rejected": format!("The image is {wrong} and there is a dog."),
        });
        edit(i, &mut rec);
        lines.push(rec.to_string());
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// A small, fast run on `model` and `data`: plain DPO unless changed.
pub fn config(model: &Path, data: &Path) -> TrainConfig {
    TrainConfig {
        dama: dama_core::DamaConfig {
            mode: dama_core::Mode::Dpo,
            ..Default::default()
        },
        batch_size: 4,
        micro_batch: 4,
        epochs: 1,
        lr: 1e-3,
        warmup_ratio: 0.0,
        seed: 7,
        max_length: Some(512),
        save_every: 0,
        ..TrainConfig::paper(model.to_path_buf(), data.to_path_buf())
    }
}

/// All trainable weights of a saved model folder, by name, as f32 vectors.
pub fn weights(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    tensors
        .into_iter()
        .filter(|(k, _)| !k.contains("vision_tower"))
        .map(|(k, t)| {
            (
                k,
                t.flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

/// Largest absolute difference between two weight sets (same keys).
pub fn max_diff(
    a: &std::collections::BTreeMap<String, Vec<f32>>,
    b: &std::collections::BTreeMap<String, Vec<f32>>,
) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(k, va)| va.iter().zip(&b[k]).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

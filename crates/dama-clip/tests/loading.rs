//! Loading the tiny model every supported way: a folder, bytes (the browser's way), sharded
//! safetensors with an index, the Hugging Face cache layout (symlinked blobs); and the errors
//! for what is missing or misshaped.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use dama_clip::load::ModelFiles;
use dama_clip::{ClipModel, ClipScorer};

fn logits(m: &ClipModel) -> Tensor {
    let pv = expect("pixel_values.rgb_exact").unsqueeze(0).unwrap();
    let ids = Tensor::new(&[[49406u32, 320, 736, 2368, 49407]], &Device::Cpu).unwrap();
    m.logits_per_image(&pv, &ids).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn bytes_and_folder_give_the_same_model() {
    let dir = tiny_dir();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let from_bytes = ClipScorer::from_bytes(
        &read("config.json"),
        read("model.safetensors"),
        &read("tokenizer.json"),
        &read("preprocessor_config.json"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let from_dir = ClipModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        max_abs_diff(&logits(&from_bytes.model), &logits(&from_dir)),
        0.0
    );
    let files = ModelFiles::find(&dir).unwrap();
    assert_eq!(files.weights, vec![dir.join("model.safetensors")]);
}

#[test]
fn sharded_weights_load_through_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    let single = tmp.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&single, &Device::Cpu).unwrap();
    std::fs::remove_file(&single).unwrap();
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (name, t) in tensors {
        let k = usize::from(name.starts_with("vision_model"));
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        weight_map.insert(name.clone(), file.into());
        shards[k].insert(name, t);
    }
    for (k, shard) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            shard,
            tmp.path()
                .join(format!("model-0000{}-of-00002.safetensors", k + 1)),
        )
        .unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    assert_eq!(ModelFiles::find(tmp.path()).unwrap().weights.len(), 2);
    let sharded = ClipModel::load(tmp.path(), &Device::Cpu, DType::F32).unwrap();
    let reference = ClipModel::load(&tiny_dir(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(max_abs_diff(&logits(&sharded), &logits(&reference)), 0.0);

    // A shard the index names but the folder lacks.
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = ClipModel::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[cfg(unix)]
#[test]
fn missing_and_misshaped_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&tiny_dir(), tmp.path());
    // Misshaped: a config that promises a wider vision tower than the weights have.
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 65"),
    )
    .unwrap();
    let err = ClipModel::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("vision_model.encoder.layers.0.mlp.fc1.weight"),
        "{err}"
    );
    std::fs::write(tmp.path().join("config.json"), &cfg).unwrap();

    // Missing: a tensor.
    let path = tmp.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.remove("text_projection.weight");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = ClipModel::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("text_projection.weight"), "{err}");

    // Missing: files.
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let err = ClipScorer::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::remove_file(&path).unwrap();
    let err = ClipModel::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    let err = ClipModel::load(&tmp.path().join("nowhere"), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}

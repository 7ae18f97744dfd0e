//! Writes a model back as a Hugging Face folder in the original llava-hf layout (which every
//! transformers version loads), LoRA adapters merged into their base weights.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{LlavaError, Result};
use crate::model::LlavaModel;
use crate::weights::KeyLayout;

/// transformers' default `max_shard_size` ("5GB").
pub const DEFAULT_MAX_SHARD_BYTES: usize = 5_000_000_000;

/// Files of a model folder copied unchanged from the folder the model was loaded from.
const SIDE_FILES: [&str; 10] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
];

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

impl LlavaModel {
    /// Saves to `dir` (created if needed) with shards of at most 5 GB.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        self.save_pretrained_sharded(dir, DEFAULT_MAX_SHARD_BYTES)
    }

    /// Saves with shards of at most `max_shard_bytes` (a single larger tensor gets its own
    /// shard); more than one shard also writes `model.safetensors.index.json`. Every tensor is
    /// written in the model's dtype, the vision tower copied from the source checkpoint.
    pub fn save_pretrained_sharded(&self, dir: &Path, max_shard_bytes: usize) -> Result<()> {
        if let Some(src) = &self.source_dir
            && same_dir(src, dir)
        {
            return Err(LlavaError::Invalid(format!(
                "{}: refusing to save over the folder the model is memory-mapped from",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| LlavaError::io(dir, e))?;
        remove_stale_weights(dir)?;

        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        let target = KeyLayout::llava_hf();
        let prefix = format!("{}.", self.layout.vision_model);
        for name in self.weights.names().filter(|n| n.starts_with(&prefix)) {
            let canonical = format!("{}.{}", target.vision_model, &name[prefix.len()..]);
            tensors.insert(canonical, self.weights.raw(name)?.to_dtype(self.dtype)?);
        }
        for (name, t) in self
            .projector
            .named_weights()?
            .into_iter()
            .chain(self.llama.named_weights()?)
        {
            tensors.insert(
                name,
                t.to_device(&Device::Cpu)?
                    .to_dtype(self.dtype)?
                    .contiguous()?,
            );
        }

        // Greedy shards in name order.
        let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
        let mut size = 0usize;
        let mut total = 0usize;
        for (name, t) in tensors {
            let bytes = t.elem_count() * t.dtype().size_in_bytes();
            total += bytes;
            if size > 0 && size + bytes > max_shard_bytes {
                shards.push(Vec::new());
                size = 0;
            }
            size += bytes;
            shards.last_mut().expect("non-empty").push((name, t));
        }
        let count = shards.len();
        let mut weight_map = BTreeMap::new();
        for (i, shard) in shards.into_iter().enumerate() {
            let file = if count == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{count:05}.safetensors", i + 1)
            };
            for (name, _) in &shard {
                weight_map.insert(name.clone(), file.clone());
            }
            let map: HashMap<String, Tensor> = shard.into_iter().collect();
            let path = dir.join(&file);
            candle_core::safetensors::save(&map, &path).map_err(|e| LlavaError::Tensor {
                origin: path.display().to_string(),
                name: String::new(),
                message: e.to_string(),
            })?;
        }
        if count > 1 {
            let index = serde_json::json!({
                "metadata": {"total_size": total},
                "weight_map": weight_map,
            });
            write_json(&dir.join("model.safetensors.index.json"), &index)?;
        }

        let mut config = self.config.raw.clone();
        if let Some(obj) = config.as_object_mut() {
            let name = dtype_name(self.dtype);
            let mut set = false;
            for key in ["torch_dtype", "dtype"] {
                if obj.contains_key(key) {
                    obj.insert(key.into(), name.into());
                    set = true;
                }
            }
            if !set {
                obj.insert("torch_dtype".into(), name.into());
            }
        }
        write_json(&dir.join("config.json"), &config)?;
        if let Some(src) = &self.source_dir {
            for f in SIDE_FILES {
                let from = src.join(f);
                if from.is_file() {
                    std::fs::copy(&from, dir.join(f)).map_err(|e| LlavaError::io(&from, e))?;
                }
            }
        }
        Ok(())
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
    std::fs::write(path, text + "\n").map_err(|e| LlavaError::io(path, e))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Shards of an earlier save would otherwise linger beside the new ones.
fn remove_stale_weights(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| LlavaError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| LlavaError::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("model")
            && (name.ends_with(".safetensors") || name == "model.safetensors.index.json")
        {
            std::fs::remove_file(&path).map_err(|e| LlavaError::io(&path, e))?;
        }
    }
    Ok(())
}

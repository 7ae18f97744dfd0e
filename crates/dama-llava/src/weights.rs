//! Safetensors weights of a LLaVA checkpoint: one file or shards listed by
//! `model.safetensors.index.json`, memory-mapped, under any of the key layouts transformers has
//! written. Tensors are read one at a time, so a 7B checkpoint never sits in memory twice.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{LlavaError, Result, read_json};

enum Store {
    Mmap(MmapedSafetensors),
    Memory(HashMap<String, Tensor>),
}

/// Where the weights come from, and the names of all tensors in it.
pub struct WeightFiles {
    store: Store,
    /// Tensor name → shape.
    shapes: BTreeMap<String, Vec<usize>>,
    /// For error messages: the file or index the names come from.
    origin: String,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl WeightFiles {
    /// Opens the weights of a model folder: `model.safetensors.index.json` and its shards if
    /// present, else `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            return Self::open_index(&index);
        }
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        Err(LlavaError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither model.safetensors.index.json nor model.safetensors in this folder",
            ),
        ))
    }

    /// Opens the shards an index lists; every shard must exist.
    pub fn open_index(index: &Path) -> Result<Self> {
        let idx: Index = read_json(index)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = Vec::new();
        for (name, file) in &idx.weight_map {
            let path = dir.join(file);
            if !files.contains(&path) {
                if !path.is_file() {
                    return Err(LlavaError::Tensor {
                        origin: index.display().to_string(),
                        name: name.clone(),
                        message: format!("its shard {} does not exist", path.display()),
                    });
                }
                files.push(path);
            }
        }
        let mut ckpt = Self::open_files(&files)?;
        for name in idx.weight_map.keys() {
            if !ckpt.shapes.contains_key(name) {
                return Err(LlavaError::MissingTensor {
                    origin: format!("{} (listed in {})", ckpt.origin, index.display()),
                    name: name.clone(),
                });
            }
        }
        ckpt.origin = index.display().to_string();
        Ok(ckpt)
    }

    /// Memory-maps safetensors files (a later file wins when a name repeats).
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        // SAFETY: the files are mapped read-only; like every safetensors reader we rely on
        // nobody truncating them while the model is loaded.
        let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| LlavaError::Tensor {
            origin: describe(files),
            name: String::new(),
            message: e.to_string(),
        })?;
        let shapes = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        Ok(Self {
            store: Store::Mmap(st),
            shapes,
            origin: describe(files),
        })
    }

    /// Wraps tensors already in memory (random models for tests and benchmarks).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, origin: impl Into<String>) -> Self {
        let shapes = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        Self {
            store: Store::Memory(tensors),
            shapes,
            origin: origin.into(),
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.shapes.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    /// Reads `name`, checks its shape, converts it to `dtype` on `device`.
    pub fn tensor(
        &self,
        name: &str,
        expected: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let found = self.shape(name).ok_or_else(|| LlavaError::MissingTensor {
            origin: self.origin.clone(),
            name: name.to_string(),
        })?;
        if found != expected {
            return Err(LlavaError::TensorShape {
                origin: self.origin.clone(),
                name: name.to_string(),
                found: found.to_vec(),
                expected: expected.to_vec(),
            });
        }
        let wrap = |e: candle_core::Error| LlavaError::Tensor {
            origin: self.origin.clone(),
            name: name.to_string(),
            message: e.to_string(),
        };
        let t = match &self.store {
            Store::Mmap(st) => st.load(name, device).map_err(wrap)?,
            Store::Memory(m) => m[name].to_device(device).map_err(wrap)?,
        };
        t.to_dtype(dtype).map_err(wrap)
    }

    /// Reads `name` as stored (for copying frozen tensors on save).
    pub fn raw(&self, name: &str) -> Result<Tensor> {
        let shape = self
            .shape(name)
            .ok_or_else(|| LlavaError::MissingTensor {
                origin: self.origin.clone(),
                name: name.to_string(),
            })?
            .to_vec();
        let dtype = match &self.store {
            Store::Mmap(st) => {
                let view = st.get(name).map_err(|e| LlavaError::Tensor {
                    origin: self.origin.clone(),
                    name: name.to_string(),
                    message: e.to_string(),
                })?;
                DType::try_from(view.dtype()).map_err(|e| LlavaError::Tensor {
                    origin: self.origin.clone(),
                    name: name.to_string(),
                    message: e.to_string(),
                })?
            }
            Store::Memory(m) => m[name].dtype(),
        };
        self.tensor(name, &shape, dtype, &Device::Cpu)
    }
}

fn describe(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!(
            "{} (+{} more shards)",
            many.first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            many.len().saturating_sub(1)
        ),
    }
}

/// Where each part of LLaVA lives in a checkpoint. transformers has written three layouts:
/// the original llava-hf hub one (`language_model.model.*`, `vision_tower.vision_model.*`),
/// transformers 5.x `save_pretrained` (the same, but `vision_tower.*` without `vision_model`),
/// and its in-memory names (`model.language_model.*`, `model.vision_tower.*`, `lm_head.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    /// Prefix of the LLaMA body (`embed_tokens`, `layers.*`, `norm`).
    pub language_model: String,
    /// Full name of the output projection; `None` when tied to the embeddings.
    pub lm_head: Option<String>,
    pub projector: String,
    /// Prefix at which CLIP's `embeddings.*`, `encoder.*` ... live.
    pub vision_model: String,
}

const LM_PREFIXES: [&str; 2] = ["language_model.model", "model.language_model"];
const LM_HEADS: [&str; 2] = ["language_model.lm_head.weight", "lm_head.weight"];
const PROJECTORS: [&str; 2] = ["multi_modal_projector", "model.multi_modal_projector"];
const VISION_PREFIXES: [&str; 4] = [
    "vision_tower.vision_model",
    "vision_tower",
    "model.vision_tower.vision_model",
    "model.vision_tower",
];

impl KeyLayout {
    /// The layout this crate writes: the original llava-hf one, which every transformers
    /// version since LLaVA's introduction loads.
    pub fn llava_hf() -> Self {
        Self {
            language_model: LM_PREFIXES[0].into(),
            lm_head: Some(LM_HEADS[0].into()),
            projector: PROJECTORS[0].into(),
            vision_model: VISION_PREFIXES[0].into(),
        }
    }

    /// Finds the layout by probing one tensor of each part.
    pub fn detect(ckpt: &WeightFiles, tied_embeddings: bool) -> Result<Self> {
        let find = |candidates: &[&str], probe: &str, what: &str| -> Result<String> {
            candidates
                .iter()
                .find(|p| ckpt.contains(&format!("{p}.{probe}")))
                .map(|p| p.to_string())
                .ok_or_else(|| LlavaError::Layout {
                    origin: ckpt.origin().to_string(),
                    message: format!(
                        "no {what}: none of {} exists",
                        candidates
                            .iter()
                            .map(|p| format!("`{p}.{probe}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
        };
        let language_model = find(&LM_PREFIXES, "embed_tokens.weight", "language model")?;
        let projector = find(&PROJECTORS, "linear_1.weight", "multi-modal projector")?;
        let vision_model = find(
            &VISION_PREFIXES,
            "embeddings.patch_embedding.weight",
            "vision tower",
        )?;
        let lm_head = LM_HEADS
            .iter()
            .find(|k| ckpt.contains(k))
            .map(|k| k.to_string());
        if lm_head.is_none() && !tied_embeddings {
            return Err(LlavaError::MissingTensor {
                origin: ckpt.origin().to_string(),
                name: LM_HEADS.join("` or `"),
            });
        }
        Ok(Self {
            language_model,
            lm_head,
            projector,
            vision_model,
        })
    }

    /// The checkpoint key of a canonical (llava-hf layout) name.
    pub fn key(&self, canonical: &str) -> String {
        let swap = |from: &str, to: &str| -> Option<String> {
            canonical
                .strip_prefix(from)
                .map(|rest| format!("{to}{rest}"))
        };
        if canonical == LM_HEADS[0] {
            return self.lm_head.clone().unwrap_or_else(|| canonical.into());
        }
        swap(LM_PREFIXES[0], &self.language_model)
            .or_else(|| swap(PROJECTORS[0], &self.projector))
            .or_else(|| swap(VISION_PREFIXES[0], &self.vision_model))
            .unwrap_or_else(|| canonical.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(names: &[&str]) -> WeightFiles {
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        WeightFiles::from_tensors(
            names.iter().map(|n| (n.to_string(), t.clone())).collect(),
            "test",
        )
    }

    #[test]
    fn detects_each_layout_and_maps_canonical_names() {
        let new = ckpt(&[
            "model.language_model.embed_tokens.weight",
            "model.multi_modal_projector.linear_1.weight",
            "model.vision_tower.embeddings.patch_embedding.weight",
            "lm_head.weight",
        ]);
        let l = KeyLayout::detect(&new, false).unwrap();
        assert_eq!(
            l.key("language_model.model.layers.3.mlp.up_proj.weight"),
            "model.language_model.layers.3.mlp.up_proj.weight"
        );
        assert_eq!(l.key("language_model.lm_head.weight"), "lm_head.weight");
        assert_eq!(
            l.key("multi_modal_projector.linear_2.bias"),
            "model.multi_modal_projector.linear_2.bias"
        );
        assert_eq!(
            l.key("vision_tower.vision_model.pre_layrnorm.weight"),
            "model.vision_tower.pre_layrnorm.weight"
        );
        let legacy = ckpt(&[
            "language_model.model.embed_tokens.weight",
            "multi_modal_projector.linear_1.weight",
            "vision_tower.vision_model.embeddings.patch_embedding.weight",
            "language_model.lm_head.weight",
        ]);
        assert_eq!(
            KeyLayout::detect(&legacy, false).unwrap(),
            KeyLayout::llava_hf()
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let c = ckpt(&[
            "language_model.model.embed_tokens.weight",
            "multi_modal_projector.linear_1.weight",
            "vision_tower.embeddings.patch_embedding.weight",
        ]);
        let e = KeyLayout::detect(&c, false).unwrap_err().to_string();
        assert!(e.contains("lm_head.weight"), "{e}");
        assert!(KeyLayout::detect(&c, true).unwrap().lm_head.is_none());
        let c = ckpt(&["language_model.model.embed_tokens.weight"]);
        let e = KeyLayout::detect(&c, true).unwrap_err().to_string();
        assert!(e.contains("multi_modal_projector.linear_1.weight"), "{e}");
    }

    #[test]
    fn shape_and_missing_errors_name_the_tensor() {
        let c = ckpt(&["a.weight"]);
        let e = c
            .tensor("a.weight", &[3, 2], DType::F32, &Device::Cpu)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("`a.weight` has shape [2, 2], expected [3, 2]"),
            "{e}"
        );
        let e = c
            .tensor("b.weight", &[2, 2], DType::F32, &Device::Cpu)
            .unwrap_err();
        assert!(e.to_string().contains("missing tensor `b.weight`"), "{e}");
    }
}

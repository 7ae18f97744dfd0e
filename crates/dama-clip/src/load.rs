//! Loading CLIP in the Hugging Face layout: from a local folder (`config.json`,
//! `model.safetensors` or a sharded `model.safetensors.index.json`, `tokenizer.json`,
//! `preprocessor_config.json`) or from bytes (the browser has no file system). Finding the
//! folder of a Hub repo id in the Hugging Face cache is the application's job (`dama-native`
//! resolves it through the `hf-hub` crate).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::ClipConfig;
use crate::error::{ClipError, Result};
use crate::model::ClipModel;
use crate::preprocess::ImageProcessor;
use crate::score::ClipScorer;
use crate::tokenizer::ClipTokenizer;

fn build(vb: VarBuilder, config: &ClipConfig, weights_name: &str) -> Result<ClipModel> {
    ClipModel::new(vb, config).map_err(|error| ClipError::Weights {
        file: weights_name.to_string(),
        error,
    })
}

impl ClipModel {
    /// A model from the bytes of its `config.json` and of one safetensors file; for the browser.
    pub fn from_safetensors_bytes(
        config_json: &[u8],
        weights: Vec<u8>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let config = ClipConfig::from_json("config.json", config_json)?;
        let vb =
            VarBuilder::from_buffered_safetensors(weights, dtype, device).map_err(|error| {
                ClipError::Weights {
                    file: "model.safetensors".into(),
                    error,
                }
            })?;
        build(vb, &config, "model.safetensors")
    }
}

impl ClipScorer {
    /// Everything the scorer needs, from the bytes of the four files of an HF CLIP folder.
    pub fn from_bytes(
        config_json: &[u8],
        weights: Vec<u8>,
        tokenizer_json: &[u8],
        preprocessor_json: &[u8],
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let model = ClipModel::from_safetensors_bytes(config_json, weights, device, dtype)?;
        let tokenizer = ClipTokenizer::from_bytes("tokenizer.json", tokenizer_json)?;
        let processor = ImageProcessor::from_json("preprocessor_config.json", preprocessor_json)?;
        Ok(Self::new(model, tokenizer, processor))
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The files of an HF model folder that CLIP uses.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ModelFiles {
        pub dir: PathBuf,
        pub config: PathBuf,
        /// One file, or the shards named by `model.safetensors.index.json`.
        pub weights: Vec<PathBuf>,
        pub tokenizer: PathBuf,
        pub preprocessor: PathBuf,
    }

    fn require(dir: &Path, name: &str, what: &'static str) -> Result<PathBuf> {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(ClipError::MissingFile {
                dir: dir.to_path_buf(),
                what,
                looked_for: name.to_string(),
            })
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|error| ClipError::Io {
            path: path.to_path_buf(),
            error,
        })
    }

    impl ModelFiles {
        /// Finds the files in `dir`; a missing one is an error naming it.
        pub fn find(dir: &Path) -> Result<Self> {
            Ok(Self {
                dir: dir.to_path_buf(),
                config: require(dir, "config.json", "model config")?,
                weights: weight_files(dir)?,
                tokenizer: require(dir, "tokenizer.json", "tokenizer")?,
                preprocessor: require(dir, "preprocessor_config.json", "image processor config")?,
            })
        }
    }

    /// `model.safetensors`, or the shards of `model.safetensors.index.json` in first-use order.
    pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = dir.join("model.safetensors.index.json");
        if !index.is_file() {
            return Err(ClipError::MissingFile {
                dir: dir.to_path_buf(),
                what: "safetensors weights (convert pytorch_model.bin with transformers' save_pretrained)",
                looked_for: "model.safetensors, model.safetensors.index.json".into(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::BTreeMap<String, String>,
        }
        let name = index.display().to_string();
        let parsed: Index = crate::error::parse_json(&name, &read(&index)?)?;
        let mut files: Vec<PathBuf> = Vec::new();
        for shard in parsed.weight_map.values() {
            let path = dir.join(shard);
            if !files.contains(&path) {
                if !path.is_file() {
                    return Err(ClipError::MissingFile {
                        dir: dir.to_path_buf(),
                        what: "weight shard named by model.safetensors.index.json",
                        looked_for: shard.clone(),
                    });
                }
                files.push(path);
            }
        }
        Ok(files)
    }

    fn weights_name(files: &[PathBuf]) -> String {
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    impl ClipModel {
        /// Loads a model folder, memory-mapping its weights and converting them to `dtype`.
        pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
            let config = ClipConfig::from_file(&require(dir, "config.json", "model config")?)?;
            let weights = weight_files(dir)?;
            let name = weights_name(&weights);
            // SAFETY: the files are mapped read-only; they must not be truncated or rewritten
            // while the model is being built (tensors are copied to `dtype`/`device` then).
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&weights, dtype, device) }
                .map_err(|error| ClipError::Weights {
                    file: name.clone(),
                    error,
                })?;
            build(vb, &config, &name)
        }
    }

    impl ClipScorer {
        /// Model, tokenizer and image processor from one HF CLIP folder.
        pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
            let files = ModelFiles::find(dir)?;
            let model = ClipModel::load(dir, device, dtype)?;
            let tokenizer = ClipTokenizer::from_file(&files.tokenizer)?;
            let processor = ImageProcessor::from_file(&files.preprocessor)?;
            Ok(Self::new(model, tokenizer, processor))
        }
    }
}

//! Turns preference examples into a [`PairBatch`]: images through CLIP's preprocessing
//! (optionally padded to a square first, LLaVA's `pad` mode), texts through the template.

use std::path::Path;

use candle_core::{Device, Tensor};
use dama_clip::preprocess::{ImageProcessor, expand_to_square};
use image::DynamicImage;

use crate::config::LlavaConfig;
use crate::error::{LlavaError, Result};
use crate::template::{EncodedPair, PairEncoder};

/// LLaVA's `image_aspect_ratio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AspectMode {
    /// CLIPImageProcessor as is: shortest side to the crop size, centre crop (transformers'
    /// LlavaProcessor; what the fixtures check).
    #[default]
    Resize,
    /// `pad`: paste the image centred on a square of the mean colour first (`expand2square`),
    /// so nothing is cropped away. LLaVA-1.5's own fine-tuning used this.
    Pad,
}

/// One preference pair as the trainer holds it.
#[derive(Debug, Clone, Copy)]
pub struct PairExample<'a> {
    pub image: &'a DynamicImage,
    pub question: &'a str,
    pub chosen: &'a str,
    pub rejected: &'a str,
}

/// The images of a batch: pixels, or vision features already computed (the tower is frozen,
/// so a caller may compute them once and reuse them, e.g. for the reference pass).
#[derive(Debug, Clone)]
pub enum Images {
    /// `(B, 3, H, W)` normalised pixel values.
    Pixels(Tensor),
    /// `(B, image_tokens, vision_width·layers)`: the projector's input.
    Features(Tensor),
}

/// A batch of encoded pairs with one image each.
#[derive(Debug, Clone)]
pub struct PairBatch {
    pub images: Images,
    pub pairs: Vec<EncodedPair>,
}

/// Tokenizer, template and image preprocessing of one model.
#[derive(Clone)]
pub struct LlavaProcessor {
    pub encoder: PairEncoder,
    pub image_processor: ImageProcessor,
    pub aspect: AspectMode,
}

impl LlavaProcessor {
    /// Reads `tokenizer.json` and the image processor: `preprocessor_config.json` (the hub's
    /// llava-hf folders) or the `image_processor` object of `processor_config.json` (what
    /// transformers 5.x writes).
    pub fn load(dir: &Path, cfg: &LlavaConfig) -> Result<Self> {
        let encoder = PairEncoder::from_file(
            &dir.join("tokenizer.json"),
            cfg.image_token_id,
            cfg.num_image_tokens(),
        )?;
        let pre = dir.join("preprocessor_config.json");
        let nested = dir.join("processor_config.json");
        let clip_err = |path: &Path, e: dama_clip::error::ClipError| LlavaError::Json {
            path: path.to_path_buf(),
            field: "image_processor".into(),
            message: e.to_string(),
        };
        let image_processor = if pre.is_file() {
            ImageProcessor::from_file(&pre).map_err(|e| clip_err(&pre, e))?
        } else if nested.is_file() {
            let text = std::fs::read_to_string(&nested).map_err(|e| LlavaError::io(&nested, e))?;
            let v: serde_json::Value = crate::error::parse_json(&text, &nested)?;
            let obj = v.get("image_processor").ok_or_else(|| LlavaError::Json {
                path: nested.clone(),
                field: "image_processor".into(),
                message: "missing (and no preprocessor_config.json beside it)".into(),
            })?;
            ImageProcessor::from_json(&nested.display().to_string(), obj.to_string().as_bytes())
                .map_err(|e| clip_err(&nested, e))?
        } else {
            return Err(LlavaError::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither preprocessor_config.json nor processor_config.json in this folder",
                ),
            ));
        };
        let crop = image_processor.crop_size;
        if image_processor.do_center_crop && crop != (cfg.vision.image_size, cfg.vision.image_size)
        {
            return Err(LlavaError::config(
                dir.display().to_string(),
                "crop_size",
                format!(
                    "the image processor crops to {crop:?}, the vision tower takes {0}×{0}",
                    cfg.vision.image_size
                ),
            ));
        }
        Ok(Self {
            encoder,
            image_processor,
            aspect: AspectMode::default(),
        })
    }

    pub fn with_aspect(mut self, aspect: AspectMode) -> Self {
        self.aspect = aspect;
        self
    }

    pub fn with_max_length(mut self, max_length: Option<usize>) -> Self {
        self.encoder = self.encoder.with_max_length(max_length);
        self
    }

    /// `(B, 3, H, W)` f32 pixel values of `images` on `device`.
    pub fn pixel_values(&self, images: &[&DynamicImage], device: &Device) -> Result<Tensor> {
        let padded: Vec<DynamicImage>;
        let images: Vec<&DynamicImage> = match self.aspect {
            AspectMode::Resize => images.to_vec(),
            AspectMode::Pad => {
                let bg = self.image_processor.mean_color();
                padded = images.iter().map(|im| expand_to_square(im, bg)).collect();
                padded.iter().collect()
            }
        };
        self.image_processor
            .to_tensor(&images, device)
            .map_err(|e| LlavaError::Invalid(format!("image preprocessing: {e}")))
    }

    /// Encodes a batch of pairs; errors name the pair by its index in `examples`.
    pub fn batch(&self, examples: &[PairExample<'_>], device: &Device) -> Result<PairBatch> {
        let pairs = examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                self.encoder
                    .encode_pair(i, e.question, e.chosen, e.rejected)
            })
            .collect::<Result<Vec<_>>>()?;
        let images: Vec<&DynamicImage> = examples.iter().map(|e| e.image).collect();
        Ok(PairBatch {
            images: Images::Pixels(self.pixel_values(&images, device)?),
            pairs,
        })
    }
}

impl PairBatch {
    /// Pairs `start..start + len` (micro-batches of a global batch scored at once).
    pub fn narrow(&self, start: usize, len: usize) -> Result<PairBatch> {
        if start + len > self.pairs.len() {
            return Err(LlavaError::Invalid(format!(
                "pairs {start}..{} of a batch of {}",
                start + len,
                self.pairs.len()
            )));
        }
        let images = match &self.images {
            Images::Pixels(t) => Images::Pixels(t.narrow(0, start, len)?),
            Images::Features(t) => Images::Features(t.narrow(0, start, len)?),
        };
        Ok(PairBatch {
            images,
            pairs: self.pairs[start..start + len].to_vec(),
        })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

//! Image preprocessing equal to transformers' *slow*, PIL-based CLIP image processor
//! (`CLIPImageProcessorPil` in transformers 5.x; `CLIPImageProcessor` before 5.0, and what the
//! original CLIP and LLaVA code ran). transformers 5.x makes `CLIPImageProcessor` the
//! torchvision one by default, whose antialiased bicubic differs from PIL's by a level or two;
//! we match PIL.
//!
//! The steps, each as transformers does it:
//! 1. convert to RGB: images with alpha are composited onto white with PIL's integer
//!    `alpha_composite`; grey is replicated;
//! 2. resize the shortest side to `size.shortest_edge` (the long side `int(s·long/short)`) with
//!    PIL's bicubic ([`crate::resample`], bit-exact);
//! 3. centre-crop to `crop_size` (offsets `(H − h) // 2`; zero padding if the image is smaller);
//! 4. rescale: `f32(u8 as f64 · rescale_factor)`;
//! 5. normalise in f32: `(x − mean) / std`.
//!
//! 8-bit images come out bit-identical to transformers' `pixel_values` (the tests check it on
//! PNGs of every colour type). 16-bit images are reduced to their high byte, as PIL does when it
//! opens 16-bit RGB(A) PNGs. JPEG decoding is the `image` crate's, not libjpeg's: the decoded
//! pixels themselves may differ by a level or two (measured in the tests).

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, RgbImage};
use serde::Deserialize;

use crate::error::{ClipError, Result, parse_json};
use crate::resample::{Filter, Image8, resize};

/// OpenAI CLIP's normalisation (transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`), rounded
/// to f32 through f64 as numpy's `np.array(mean, dtype=float32)` does (and as JSON values are).
pub const OPENAI_CLIP_MEAN: [f32; 3] = [
    0.48145466f64 as f32,
    0.4578275f64 as f32,
    0.40821073f64 as f32,
];
pub const OPENAI_CLIP_STD: [f32; 3] = [
    0.26862954f64 as f32,
    0.26130258f64 as f32,
    0.27577711f64 as f32,
];

/// How to resize before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// `{"shortest_edge": s}` (CLIP): the short side becomes s, the aspect ratio is kept.
    ShortestEdge(usize),
    /// `{"height": h, "width": w}`: exactly this size.
    Exact { height: usize, width: usize },
}

/// A CLIP image processor. Build it from `preprocessor_config.json` ([`Self::from_json`]) or with
/// [`Self::openai`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub do_convert_rgb: bool,
    pub do_resize: bool,
    pub size: ResizeTo,
    pub resample: Filter,
    pub do_center_crop: bool,
    /// (height, width).
    pub crop_size: (usize, usize),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// `size` / `crop_size` as HF files write them: a bare int (old feature-extractor files) or a dict.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(usize),
    Dict {
        shortest_edge: Option<usize>,
        longest_edge: Option<usize>,
        height: Option<usize>,
        width: Option<usize>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTriple {
    One(f32),
    Three([f32; 3]),
}

impl RawTriple {
    fn get(self) -> [f32; 3] {
        match self {
            RawTriple::One(v) => [v; 3],
            RawTriple::Three(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct RawProcessor {
    do_convert_rgb: Option<bool>,
    do_resize: Option<bool>,
    size: Option<RawSize>,
    resample: Option<i64>,
    do_center_crop: Option<bool>,
    crop_size: Option<RawSize>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<RawTriple>,
    image_std: Option<RawTriple>,
}

impl ImageProcessor {
    /// OpenAI CLIP's processor at `size` (224 for ViT-B/32, B/16, L/14; 336 for L/14-336).
    pub fn openai(size: usize) -> Self {
        Self {
            do_convert_rgb: true,
            do_resize: true,
            size: ResizeTo::ShortestEdge(size),
            resample: Filter::Bicubic,
            do_center_crop: true,
            crop_size: (size, size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }

    /// Parses a `preprocessor_config.json`; absent fields take `CLIPImageProcessor`'s defaults.
    pub fn from_json(file: &str, bytes: &[u8]) -> Result<Self> {
        let raw: RawProcessor = parse_json(file, bytes)?;
        let mut p = Self::openai(224);
        p.do_convert_rgb = raw.do_convert_rgb.unwrap_or(true);
        p.do_resize = raw.do_resize.unwrap_or(true);
        if let Some(size) = raw.size {
            p.size = match size {
                // transformers turns an int into {"shortest_edge": n} (default_to_square=False).
                RawSize::Int(n) => ResizeTo::ShortestEdge(n),
                RawSize::Dict {
                    shortest_edge: Some(s),
                    longest_edge: None,
                    ..
                } => ResizeTo::ShortestEdge(s),
                RawSize::Dict {
                    height: Some(height),
                    width: Some(width),
                    shortest_edge: None,
                    ..
                } => ResizeTo::Exact { height, width },
                RawSize::Dict { .. } => {
                    return Err(ClipError::invalid(
                        file,
                        "size",
                        "supported forms: an int, {\"shortest_edge\": n} or {\"height\": h, \"width\": w}",
                    ));
                }
            };
        }
        if let Some(r) = raw.resample {
            p.resample = Filter::from_pil(r).ok_or_else(|| {
                ClipError::invalid(
                    file,
                    "resample",
                    format!("{r}: only bilinear (2) and bicubic (3) are supported"),
                )
            })?;
        }
        p.do_center_crop = raw.do_center_crop.unwrap_or(true);
        if let Some(crop) = raw.crop_size {
            p.crop_size = match crop {
                RawSize::Int(n) => (n, n),
                RawSize::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                } => (h, w),
                RawSize::Dict { .. } => {
                    return Err(ClipError::invalid(
                        file,
                        "crop_size",
                        "needs \"height\" and \"width\"",
                    ));
                }
            };
        }
        p.do_rescale = raw.do_rescale.unwrap_or(true);
        p.rescale_factor = raw.rescale_factor.unwrap_or(1.0 / 255.0);
        p.do_normalize = raw.do_normalize.unwrap_or(true);
        if let Some(m) = raw.image_mean {
            p.image_mean = m.get();
        }
        if let Some(s) = raw.image_std {
            p.image_std = s.get();
        }
        let sizes = match p.size {
            ResizeTo::ShortestEdge(s) => vec![("size", s)],
            ResizeTo::Exact { height, width } => vec![("size", height), ("size", width)],
        };
        for (field, v) in sizes
            .into_iter()
            .chain([("crop_size", p.crop_size.0), ("crop_size", p.crop_size.1)])
        {
            if v == 0 {
                return Err(ClipError::invalid(file, field, "sizes must be positive"));
            }
        }
        if p.image_std.contains(&0.0) {
            return Err(ClipError::invalid(file, "image_std", "contains 0"));
        }
        Ok(p)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| ClipError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&path.display().to_string(), &bytes)
    }

    /// LLaVA's `pad` background: `tuple(int(x * 255) for x in image_mean)`, (122, 116, 104)
    /// for OpenAI's mean.
    pub fn mean_color(&self) -> [u8; 3] {
        // Python's int() truncates; the product is computed in f64 like Python's float.
        self.image_mean.map(|m| (m as f64 * 255.0) as u8)
    }

    /// Steps 1–3: the 8-bit RGB image that is rescaled and normalised.
    pub fn resize_and_crop(&self, image: &DynamicImage) -> Result<RgbImage> {
        let rgb = to_rgb(image, self.do_convert_rgb)?;
        let mut im = Image8 {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            channels: 3,
            data: rgb.into_raw(),
        };
        if im.width == 0 || im.height == 0 {
            return Err(ClipError::Input("empty image".into()));
        }
        if self.do_resize {
            let (h, w) = self.output_size(im.height, im.width);
            im = resize(&im, w, h, self.resample);
        }
        if self.do_center_crop {
            im = center_crop(&im, self.crop_size.0, self.crop_size.1);
        }
        Ok(RgbImage::from_raw(im.width as u32, im.height as u32, im.data).expect("sized buffer"))
    }

    /// transformers' `get_resize_output_image_size(default_to_square=False)`: (height, width).
    fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.size {
            ResizeTo::Exact { height, width } => (height, width),
            ResizeTo::ShortestEdge(s) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // Python: int(s * long / short), a float division truncated.
                let new_long = ((s * long) as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// Steps 4–5 on an RGB image: CHW f32.
    pub fn normalize(&self, rgb: &RgbImage) -> Vec<f32> {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                let mut v = if self.do_rescale {
                    (px.0[c] as f64 * self.rescale_factor) as f32
                } else {
                    px.0[c] as f32
                };
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                out[c * h * w + i] = v;
            }
        }
        out
    }

    /// The whole pipeline: `pixel_values` of one image, CHW, normalised.
    pub fn preprocess(&self, image: &DynamicImage) -> Result<Vec<f32>> {
        Ok(self.normalize(&self.resize_and_crop(image)?))
    }

    /// A batch of images as a (b, 3, h, w) f32 tensor on `device`. With centre cropping every
    /// image has the crop size; without it, the images must resize to the same size.
    pub fn to_tensor(&self, images: &[&DynamicImage], device: &Device) -> Result<Tensor> {
        if images.is_empty() {
            return Err(ClipError::Input("empty image batch".into()));
        }
        let mut data = Vec::new();
        let mut size = None;
        for (i, im) in images.iter().enumerate() {
            let rgb = self.resize_and_crop(im)?;
            let hw = (rgb.height() as usize, rgb.width() as usize);
            if *size.get_or_insert(hw) != hw {
                return Err(ClipError::Input(format!(
                    "image {i} preprocesses to {hw:?}, image 0 to {:?}",
                    size.unwrap()
                )));
            }
            data.extend(self.normalize(&rgb));
        }
        let (h, w) = size.expect("non-empty");
        Ok(Tensor::from_vec(data, (images.len(), 3, h, w), device)?.to_dtype(DType::F32)?)
    }
}

/// transformers' `center_crop` (numpy): offsets `(H − h) // 2`, `(W − w) // 2`; an image smaller
/// than the crop is first centred on zeros, `ceil((h − H) / 2)` from the top.
fn center_crop(im: &Image8, height: usize, width: usize) -> Image8 {
    let ch = im.channels;
    let (ih, iw) = (im.height as isize, im.width as isize);
    let (h, w) = (height as isize, width as isize);
    // Position of the crop's (0, 0) in the source, possibly negative (padding).
    let top = if ih >= h {
        (ih - h) / 2
    } else {
        -((h - ih + 1) / 2)
    };
    let left = if iw >= w {
        (iw - w) / 2
    } else {
        -((w - iw + 1) / 2)
    };
    let mut data = vec![0u8; height * width * ch];
    for y in 0..h {
        let sy = y + top;
        if sy < 0 || sy >= ih {
            continue;
        }
        for x in 0..w {
            let sx = x + left;
            if sx < 0 || sx >= iw {
                continue;
            }
            let s = ((sy * iw + sx) as usize) * ch;
            let d = ((y * w + x) as usize) * ch;
            data[d..d + ch].copy_from_slice(&im.data[s..s + ch]);
        }
    }
    Image8 {
        width,
        height,
        channels: ch,
        data,
    }
}

/// transformers' `convert_to_rgb` for PIL images: alpha is composited onto opaque white with
/// PIL's `alpha_composite`; everything else is PIL's `convert("RGB")`.
fn to_rgb(image: &DynamicImage, do_convert_rgb: bool) -> Result<RgbImage> {
    use image::ColorType as C;
    let color = image.color();
    if !do_convert_rgb && color != C::Rgb8 {
        return Err(ClipError::Input(format!(
            "a {color:?} image needs do_convert_rgb (the model takes 3 channels)"
        )));
    }
    let rgba = match image {
        DynamicImage::ImageRgb8(im) => return Ok(im.clone()),
        DynamicImage::ImageLuma8(_) => return Ok(image.to_rgb8()),
        DynamicImage::ImageRgb16(im) => {
            let (w, h) = im.dimensions();
            let data = im.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            return Ok(RgbImage::from_raw(w, h, data).expect("sized buffer"));
        }
        DynamicImage::ImageRgba16(im) => {
            let (w, h) = im.dimensions();
            let data = im.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            image::RgbaImage::from_raw(w, h, data).expect("sized buffer")
        }
        _ if color.has_alpha() => image.to_rgba8(),
        _ => return Ok(image.to_rgb8()),
    };
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for px in rgba.pixels() {
        let [r, g, b, a] = px.0;
        out.extend([r, g, b].map(|c| composite_on_white(c, a)));
    }
    Ok(RgbImage::from_raw(w, h, out).expect("sized buffer"))
}

/// One channel of PIL's `ImagingAlphaComposite` with an opaque white destination: integer
/// arithmetic with 7 extra bits, `SHIFTFORDIV255` rounding.
fn composite_on_white(src: u8, alpha: u8) -> u8 {
    if alpha == 0 {
        return 255;
    }
    const PREC: u32 = 7;
    let (s, a) = (src as u32, alpha as u32);
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PREC) / outa255;
    let coef2 = 255 * (1 << PREC) - coef1;
    let tmp = s * coef1 + 255 * coef2 + (0x80 << PREC);
    ((((tmp >> 8) + tmp) >> 8) >> PREC) as u8
}

/// LLaVA's `expand2square` (`image_aspect_ratio = "pad"`): the image converted to RGB as
/// LLaVA's loader does (`convert('RGB')` drops alpha), pasted centred on a square of
/// `background` — the processor's [`ImageProcessor::mean_color`]. Offsets are `(long − short)
/// // 2`. A square image is returned unchanged (but as RGB).
pub fn expand_to_square(image: &DynamicImage, background: [u8; 3]) -> DynamicImage {
    let rgb = image.to_rgb8();
    let (w, h) = rgb.dimensions();
    if w == h {
        return DynamicImage::ImageRgb8(rgb);
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(background));
    let (x0, y0) = if w > h {
        (0, (w - h) / 2)
    } else {
        ((h - w) / 2, 0)
    };
    image::imageops::replace(&mut out, &rgb, x0 as i64, y0 as i64);
    DynamicImage::ImageRgb8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_matches_pil_endpoints() {
        assert_eq!(composite_on_white(17, 255), 17);
        assert_eq!(composite_on_white(17, 0), 255);
        // Black at alpha 128 over white: 255·127/255 = 127 (alpha 127 gives 128).
        assert_eq!(composite_on_white(0, 128), 127);
        assert_eq!(composite_on_white(0, 127), 128);
    }

    #[test]
    fn output_size_follows_transformers() {
        let p = ImageProcessor::openai(224);
        assert_eq!(p.output_size(480, 640), (224, 298));
        assert_eq!(p.output_size(640, 480), (298, 224));
        assert_eq!(p.output_size(100, 100), (224, 224));
        // int(224 * 301 / 233) = int(289.37...) = 289
        assert_eq!(p.output_size(233, 301), (224, 289));
    }

    #[test]
    fn crop_pads_small_images_like_numpy() {
        let im = Image8 {
            width: 2,
            height: 1,
            channels: 1,
            data: vec![7, 9],
        };
        let out = center_crop(&im, 3, 5);
        // ceil((3-1)/2) = 1 row of padding on top, ceil((5-2)/2) = 2 columns on the left.
        assert_eq!(out.data, vec![0, 0, 0, 0, 0, 0, 0, 7, 9, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn legacy_and_dict_forms_agree() {
        let a =
            ImageProcessor::from_json("a", br#"{"size": 224, "crop_size": 224, "resample": 3}"#)
                .unwrap();
        let b = ImageProcessor::from_json(
            "b",
            br#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, ImageProcessor::openai(224));
        assert_eq!(a.mean_color(), [122, 116, 104]);
    }

    #[test]
    fn bad_processor_fields_are_named() {
        let err = ImageProcessor::from_json("p.json", br#"{"resample": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.json") && err.contains("`resample`"),
            "{err}"
        );
        let err = ImageProcessor::from_json("p.json", br#"{"image_mean": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.json") && err.contains("image_mean"),
            "{err}"
        );
        let err = ImageProcessor::from_json("p.json", br#"{"size": {"longest_edge": 3}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`size`"), "{err}");
    }

    #[test]
    fn expand_pads_the_short_side_centred() {
        let im = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 1, image::Rgb([1, 2, 3])));
        let sq = expand_to_square(&im, [9, 9, 9]).to_rgb8();
        assert_eq!(sq.dimensions(), (4, 4));
        // (4 - 1) // 2 = 1: the image row is row 1.
        assert_eq!(sq.get_pixel(0, 1).0, [1, 2, 3]);
        assert_eq!(sq.get_pixel(0, 0).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(3, 2).0, [9, 9, 9]);
    }
}

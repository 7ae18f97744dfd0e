//! Helpers shared by the fixture tests: paths, the expected tensors written by
//! `scripts/fixtures/clip.py` (transformers as the oracle), comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn tiny_dir() -> PathBuf {
    fixtures().join("tiny-clip")
}

pub fn image_path(name: &str) -> PathBuf {
    let png = fixtures().join("images").join(format!("{name}.png"));
    if png.exists() {
        png
    } else {
        fixtures().join("images").join(format!("{name}.jpg"))
    }
}

pub fn open_image(name: &str) -> image::DynamicImage {
    image::open(image_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The images of the fixtures, in the order of the model's `pixel_values` batch.
pub const IMAGES: [&str; 8] = [
    "rgb_landscape",
    "rgba_portrait",
    "grey_square",
    "la_wide",
    "palette_trns",
    "rgb_exact",
    "rgb_large",
    "photo_jpeg",
];

pub fn expected() -> &'static HashMap<String, Tensor> {
    static EXPECTED: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu)
            .expect("expected.safetensors")
    })
}

pub fn expect(name: &str) -> &'static Tensor {
    expected()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in expected.safetensors"))
}

/// max |a − b| over all elements, both cast to f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts |a − b| ≤ tol everywhere and returns the max difference.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) -> f32 {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max |diff| {d} > {tol}");
    d
}

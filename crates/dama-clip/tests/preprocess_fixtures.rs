//! Preprocessing against transformers' slow (PIL) `CLIPImageProcessor`: `pixel_values` of PNGs
//! of every colour type must be bit-identical; the JPEG differs only by the decoders.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use dama_clip::{ImageProcessor, expand_to_square};

fn tiny_processor() -> ImageProcessor {
    ImageProcessor::from_file(&tiny_dir().join("preprocessor_config.json")).unwrap()
}

fn pixel_values(p: &ImageProcessor, im: &image::DynamicImage) -> Tensor {
    let v = p.preprocess(im).unwrap();
    let (h, w) = p.crop_size;
    Tensor::from_vec(v, (3, h, w), &Device::Cpu).unwrap()
}

fn u8_chw(p: &ImageProcessor, im: &image::DynamicImage) -> Tensor {
    let rgb = p.resize_and_crop(im).unwrap();
    let (w, h) = rgb.dimensions();
    Tensor::from_vec(rgb.into_raw(), (h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
}

#[test]
fn png_pixel_values_are_bit_identical() {
    let p = tiny_processor();
    for name in IMAGES.iter().filter(|n| **n != "photo_jpeg") {
        let got = pixel_values(&p, &open_image(name));
        let d = max_abs_diff(&got, expect(&format!("pixel_values.{name}")));
        assert_eq!(d, 0.0, "{name}: max |diff| {d}");
    }
}

#[test]
fn clip_224_resize_and_crop_are_bit_identical() {
    // The real checkpoints' processors, in both file forms, against transformers' uint8 crops.
    for file in ["preprocessor_224.json", "preprocessor_legacy_224.json"] {
        let p = ImageProcessor::from_file(&fixtures().join(file)).unwrap();
        assert_eq!(p, ImageProcessor::openai(224));
        for name in ["rgb_large", "rgba_portrait"] {
            let d = max_abs_diff(
                &u8_chw(&p, &open_image(name)),
                expect(&format!("crop224.{name}")),
            );
            assert_eq!(d, 0.0, "{file} {name}");
        }
    }
    let p336 = ImageProcessor::from_file(&fixtures().join("preprocessor_336.json")).unwrap();
    assert_eq!(p336, ImageProcessor::openai(336));
}

/// PIL decodes JPEG with libjpeg-turbo, we with the `image` crate (zune-jpeg): the decoded
/// pixels differ (chroma upsampling of 4:2:0 mostly), not the preprocessing. On this photo-like
/// image the 224 crop differs by at most a few levels and by well under one on average.
#[test]
fn jpeg_differs_only_by_decoder_rounding() {
    let p224 = ImageProcessor::openai(224);
    let got = u8_chw(&p224, &open_image("photo_jpeg"));
    let want = expect("crop224.photo_jpeg");
    let max = max_abs_diff(&got, want);
    let mean = (got.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("jpeg at 224: max |diff| {max} levels, mean {mean}");
    assert!(max <= 6.0 && mean <= 0.5, "max {max}, mean {mean}");
    let p = tiny_processor();
    let d = max_abs_diff(
        &pixel_values(&p, &open_image("photo_jpeg")),
        expect("pixel_values.photo_jpeg"),
    );
    println!("jpeg at 48: max |diff| {d} in pixel_values");
    assert!(d <= 6.0 / 255.0 / 0.26, "pixel values {d}");
}

#[test]
fn llava_pad_mode_matches_expand2square() {
    let p = tiny_processor();
    let bg = p.mean_color();
    assert_eq!(bg, [122, 116, 104]);
    for name in ["rgb_landscape", "rgba_portrait", "la_wide"] {
        let squared = expand_to_square(&open_image(name), bg);
        let rgb = squared.to_rgb8();
        let (w, h) = rgb.dimensions();
        let got =
            Tensor::from_vec(rgb.into_raw(), (h as usize, w as usize, 3), &Device::Cpu).unwrap();
        assert_eq!(
            max_abs_diff(&got, expect(&format!("pad.expanded.{name}"))),
            0.0,
            "{name} expanded"
        );
        let d = max_abs_diff(
            &pixel_values(&p, &squared),
            expect(&format!("pad.pixel_values.{name}")),
        );
        assert_eq!(d, 0.0, "{name} pixel values");
    }
}

#[test]
fn batch_tensor_stacks_images() {
    let p = tiny_processor();
    let ims: Vec<_> = ["rgb_landscape", "grey_square"]
        .iter()
        .map(|n| open_image(n))
        .collect();
    let refs: Vec<_> = ims.iter().collect();
    let t = p.to_tensor(&refs, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[2, 3, 48, 48]);
    assert_eq!(
        max_abs_diff(&t.get(1).unwrap(), expect("pixel_values.grey_square")),
        0.0
    );
}

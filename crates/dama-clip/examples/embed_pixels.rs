//! dama's CLIP image features for pixel values given as a raw file: the reference that
//! `web/e2e/export_onnx.py` checks its ONNX graph against (scripts/bench-web.sh runs both).
//!
//!     cargo run -p dama-clip --example embed_pixels -- MODEL_DIR PIXELS.f32 OUT.f32
//!
//! PIXELS.f32 holds `pixel_values` of shape (n, 3, image_size, image_size) as little-endian f32
//! (already preprocessed: no resize or normalisation here, so both sides see the same tensor);
//! OUT.f32 gets transformers' `get_image_features`, (n, projection_dim), the projected class
//! token before the norm, little-endian f32.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use dama_clip::ClipModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, pixels, out] = args.as_slice() else {
        return Err("usage: embed_pixels MODEL_DIR PIXELS.f32 OUT.f32".into());
    };
    let model = ClipModel::load(dir, &Device::Cpu, DType::F32)?;
    let side = model.config().vision_config.image_size;
    let bytes = std::fs::read(pixels)?;
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let per_image = 3 * side * side;
    if !bytes.len().is_multiple_of(4)
        || values.is_empty()
        || !values.len().is_multiple_of(per_image)
    {
        return Err(format!(
            "{}: {} bytes is not a whole number of (3, {side}, {side}) f32 images",
            pixels.display(),
            bytes.len()
        )
        .into());
    }
    let n = values.len() / per_image;
    let pv = Tensor::from_vec(values, (n, 3, side, side), &Device::Cpu)?;
    let features = model.image_features(&pv)?.to_dtype(DType::F32)?;
    let flat: Vec<f32> = features.flatten_all()?.to_vec1()?;
    let raw: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(out, raw)?;
    println!(
        "{n} image(s) → features {:?}, written to {}",
        features.dims(),
        out.display()
    );
    Ok(())
}

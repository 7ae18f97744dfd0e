//! dama's CLIP text features for token ids given as a text file: the reference that
//! `web/e2e/export_onnx.py` checks its ONNX text graph against (scripts/bench-web.sh runs both).
//!
//!     cargo run -p dama-clip --example embed_ids -- MODEL_DIR IDS.txt OUT.f32
//!
//! IDS.txt holds one sequence a line, its ids separated by spaces (already tokenised, unpadded);
//! OUT.f32 gets transformers' `get_text_features`, (n, projection_dim), before the norm,
//! little-endian f32.

use std::path::PathBuf;

use candle_core::{DType, Device};
use dama_clip::ClipModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, ids, out] = args.as_slice() else {
        return Err("usage: embed_ids MODEL_DIR IDS.txt OUT.f32".into());
    };
    let model = ClipModel::load(dir, &Device::Cpu, DType::F32)?;
    let ids: Vec<Vec<u32>> = std::fs::read_to_string(ids)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::parse).collect())
        .collect::<Result<_, _>>()?;
    let features = model.text_features_ids(&ids)?.to_dtype(DType::F32)?;
    let flat: Vec<f32> = features.flatten_all()?.to_vec1()?;
    let raw: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(out, raw)?;
    println!(
        "{} text(s) → features {:?}, written to {}",
        ids.len(),
        features.dims(),
        out.display()
    );
    Ok(())
}

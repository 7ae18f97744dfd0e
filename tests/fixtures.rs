//! Tiny models and small datasets that the integration tests build for themselves, shared by
//! the cross-crate tests beside this file and by `dama-native`'s command-line tests.

use std::path::{Path, PathBuf};

use dama_llava::random::{TinySpec, write_tiny_model};
use dama_train::TrainConfig;

/// A tiny LLaVA (smaller than the demo's, for fast tests).
pub fn tiny_model(dir: &Path, seed: u64) -> PathBuf {
    let spec = TinySpec {
        hidden_size: 32,
        intermediate_size: 64,
        vision_layers: 2,
        image_size: 28,
        ..TinySpec::default()
    };
    let path = dir.join(format!("model-{seed}"));
    std::fs::create_dir_all(&path).unwrap();
    write_tiny_model(&path, &spec, seed).unwrap();
    path
}

const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 30, 30]),
    ("green", [30, 180, 60]),
    ("blue", [40, 60, 220]),
    ("yellow", [240, 220, 40]),
    ("white", [250, 250, 250]),
    ("black", [10, 10, 10]),
];

/// `n` pairs as JSONL with an image folder: a plain colour image, the chosen answer names its
/// colour, the rejected one another colour. `edit` may break records for the bad-input tests.
pub fn dataset(dir: &Path, n: usize, edit: impl Fn(usize, &mut serde_json::Value)) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut lines = Vec::new();
    for i in 0..n {
        let (name, rgb) = COLOURS[i % COLOURS.len()];
        let (wrong, _) = COLOURS[(i + 1 + i / COLOURS.len()) % COLOURS.len()];
        let file = format!("img{i}.png");
        image::RgbImage::from_pixel(24 + (i % 5) as u32, 30, image::Rgb(rgb))
            .save(images.join(&file))
            .unwrap();
        let mut rec = serde_json::json!({
            "id": format!("pair{i}"),
            "image": format!("images/{file}"),
            "question": "What colour is the image?",
            "chosen": format!("The image is {name}."),
            "rejected": format!("The image is {wrong} and there is a dog."),
        });
        edit(i, &mut rec);
        lines.push(rec.to_string());
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// A small, fast run on `model` and `data`: plain DPO unless changed.
pub fn config(model: &Path, data: &Path) -> TrainConfig {
    TrainConfig {
        dama: dama_core::DamaConfig {
            mode: dama_core::Mode::Dpo,
            ..Default::default()
        },
        batch_size: 4,
        micro_batch: 4,
        epochs: 1,
        lr: 1e-3,
        warmup_ratio: 0.0,
        seed: 7,
        max_length: Some(512),
        save_every: 0,
        ..TrainConfig::paper(model.to_path_buf(), data.to_path_buf())
    }
}

/// Every pair of a dataset, strictly read, with its image's bytes loaded.
pub fn read_pairs(path: &Path) -> Vec<dama_data::PreferencePair> {
    let options = dama_data::ReadOptions {
        images: dama_data::ImageCheck::Load,
        ..dama_data::ReadOptions::strict()
    };
    dama_data::open_dataset(path, None, options)
        .and_then(|records| records.read_all())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .0
}

/// All trainable weights of a saved model folder, by name, as f32 vectors.
pub fn weights(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    tensors
        .into_iter()
        .filter(|(k, _)| !k.contains("vision_tower"))
        .map(|(k, t)| {
            (
                k,
                t.flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

/// Largest absolute difference between two weight sets (same keys).
pub fn max_diff(
    a: &std::collections::BTreeMap<String, Vec<f32>>,
    b: &std::collections::BTreeMap<String, Vec<f32>>,
) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(k, va)| va.iter().zip(&b[k]).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

/// A dataset of the broken records a scraped preference set really has, beside good ones, for
/// the bad-input tests of every command: `pairs.jsonl` in `<dir>/data` with its images there,
/// and one image outside that folder.
pub struct BrokenCorpus {
    pub data: PathBuf,
    /// The ids of the good records, in file order.
    pub good: Vec<&'static str>,
    /// (line, reason as `*.skipped.jsonl` names it) of every bad record, in file order.
    pub bad: Vec<(usize, &'static str)>,
    /// The line whose image is an absolute path outside the folder (good with
    /// `--allow-absolute-images`).
    pub absolute_line: usize,
}

fn png_bytes(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A PNG whose header declares 60000×60000 pixels (with a valid checksum): what a
/// decompression bomb looks like to a reader that trusts it.
fn bomb_png() -> Vec<u8> {
    let mut bytes = png_bytes(1, 1, [0, 0, 0]);
    bytes[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = !bytes[12..29].iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        c
    });
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

pub fn broken_corpus(dir: &Path) -> BrokenCorpus {
    let data = dir.join("data");
    let images = data.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let outside = dir.join("outside.png");
    std::fs::write(&outside, png_bytes(20, 20, [200, 10, 10])).unwrap();
    for (i, (_, rgb)) in COLOURS.iter().enumerate().take(4) {
        std::fs::write(images.join(format!("g{i}.png")), png_bytes(24, 30, *rgb)).unwrap();
    }
    let full = png_bytes(24, 30, [1, 2, 3]);
    std::fs::write(images.join("empty.png"), b"").unwrap();
    std::fs::write(images.join("truncated.png"), &full[..full.len() / 2]).unwrap();
    std::fs::write(images.join("text.png"), b"this is not a picture\n").unwrap();
    std::fs::write(images.join("bomb.png"), bomb_png()).unwrap();
    std::os::unix::fs::symlink(&outside, images.join("link.png")).unwrap();
    let rec = |id: &str, image: &str, chosen: &str| {
        serde_json::json!({"id": id, "image": image, "question": "What colour is the image?",
                           "chosen": chosen, "rejected": "The image is black and there is a dog."})
        .to_string()
    };
    let good = |i: usize| {
        rec(
            &format!("g{i}"),
            &format!("images/g{i}.png"),
            "The image is red.",
        )
    };
    let absolute = outside.display().to_string();
    let lines: Vec<(Vec<u8>, Option<&'static str>)> = vec![
        (good(0).into(), None),
        (good(1).into(), None),
        (rec("empty-file", "images/empty.png", "A.").into(), Some("undecodable_image")),
        (rec("truncated", "images/truncated.png", "A.").into(), Some("undecodable_image")),
        (rec("not-an-image", "images/text.png", "A.").into(), Some("undecodable_image")),
        (rec("bomb", "images/bomb.png", "A.").into(), Some("image_too_large")),
        (rec("dotdot", "../outside.png", "A.").into(), Some("image_outside_folder")),
        (rec("deeper", "images/../../outside.png", "A.").into(), Some("image_outside_folder")),
        (rec("symlink", "images/link.png", "A.").into(), Some("image_outside_folder")),
        (rec("absolute", &absolute, "A.").into(), Some("missing_image")),
        (good(0).into(), Some("duplicate_id")),
        (rec("g1", "images/g2.png", "Something else.").into(), Some("duplicate_id")),
        (rec("empty-answer", "images/g0.png", "  ").into(), Some("empty_text")),
        (
            br#"{"id": "no-rejected", "image": "images/g0.png", "question": "Q", "chosen": "A."}"#.to_vec(),
            Some("missing_field"),
        ),
        (
            br#"{"id": "wrong-type", "image": "images/g0.png", "question": "Q", "chosen": 5, "rejected": "B."}"#.to_vec(),
            Some("malformed"),
        ),
        (b"{\"id\": \"cut".to_vec(), Some("malformed")),
        (b"{\"id\": \"bytes\xff\xfe\"}".to_vec(), Some("not_utf8")),
        (
            br#"{"id": "no-image", "question": "Q", "chosen": "A.", "rejected": "B."}"#.to_vec(),
            Some("missing_image"),
        ),
        (
            br#"{"id": "bad-b64", "image_b64": "%%%", "question": "Q", "chosen": "A.", "rejected": "B."}"#.to_vec(),
            Some("undecodable_image"),
        ),
        (good(2).into(), None),
        (good(3).into(), None),
    ];
    let mut file = Vec::new();
    let mut bad = Vec::new();
    for (i, (line, reason)) in lines.iter().enumerate() {
        file.extend_from_slice(line);
        file.push(b'\n');
        if let Some(r) = reason {
            bad.push((i + 1, *r));
        }
    }
    let path = data.join("pairs.jsonl");
    std::fs::write(&path, file).unwrap();
    BrokenCorpus {
        data: path,
        good: vec!["g0", "g1", "g2", "g3"],
        bad,
        absolute_line: 10,
    }
}

/// (line, reason) of every entry of a `*.skipped.jsonl`.
pub fn skipped_list(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap() as usize,
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// One HTTP request read off a test server's connection: the `Authorization` header's value
/// (empty when absent) and the body (`Content-Length` bytes). The reader is handed back for the
/// reply. Enough HTTP for the stand-in LLM endpoints of the tests, nothing more.
pub fn read_http_request(
    stream: std::net::TcpStream,
) -> (String, Vec<u8>, std::io::BufReader<std::net::TcpStream>) {
    use std::io::{BufRead, Read};
    let mut reader = std::io::BufReader::new(stream);
    let (mut auth, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            auth = line["authorization:".len()..].trim().to_owned();
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (auth, body, reader)
}

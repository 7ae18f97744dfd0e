//! Writes an annotated JSONL dataset of any size for the explorer's end-to-end test and benchmark
//! (web/e2e): RLAIF-V's size is 83,132 pairs. Files are generated at test time, never committed.
//!
//! Each pair has a tiny inline PNG (one of 16 colours, 8×8 px, so that 83k pairs stay ~60 MB),
//! a question, a chosen answer of 2–4 sentences and a rejected one of 1–3, split into those
//! sentences. With `--scored`, every sub-sentence gets a deterministic pseudo-random CLIP-like
//! score and the file is annotated the way `dama-native score` annotates (δ, δ̄, α_D, bands:
//! `dama_data::annotate`, i.e. dama-core), under the model name `elsewhere/clip-vit-l-336`:
//! a dataset "scored elsewhere".
//!
//! `cargo run -p dama-web --example make_scale -- --pairs 83132 --scored --out big.jsonl`

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    use dama_core::Estimator;
    use dama_data::{
        AnnotatedJsonlWriter, ImageOut, ImageRef, PreferencePair, RunInfo, Scores, SubSentences,
    };

    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let pairs: usize = flag("--pairs").context("--pairs N")?.parse()?;
    let out = flag("--out").context("--out FILE")?.clone();
    let scored = args.iter().any(|a| a == "--scored");
    if pairs == 0 {
        bail!("--pairs must be at least 1");
    }

    // SplitMix64: the same file on every machine.
    let mut state = 0x5eed_0000_0000_0001u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let images: Vec<Vec<u8>> = (0..16u8)
        .map(|k| {
            let img = image::RgbImage::from_pixel(8, 8, image::Rgb([k * 16, 255 - k * 16, 96]));
            let mut png = Vec::new();
            image::DynamicImage::ImageRgb8(img)
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .expect("png");
            png
        })
        .collect();
    const COLOURS: [&str; 8] = [
        "red", "blue", "green", "yellow", "purple", "orange", "white", "black",
    ];
    const THINGS: [&str; 8] = [
        "circle", "square", "triangle", "star", "cat", "dog", "car", "cup",
    ];
    const PLACES: [&str; 6] = [
        "on the left",
        "on the right",
        "in the middle",
        "at the top",
        "at the bottom",
        "in a corner",
    ];
    let sentence = |next: &mut dyn FnMut() -> u64| {
        let c = COLOURS[(next() % 8) as usize];
        let t = THINGS[(next() % 8) as usize];
        let p = PLACES[(next() % 6) as usize];
        format!("There is a {c} {t} {p}.")
    };

    let mut list = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let n_chosen = 2 + (next() % 3) as usize;
        let n_rejected = 1 + (next() % 3) as usize;
        let chosen: Vec<String> = (0..n_chosen).map(|_| sentence(&mut next)).collect();
        let rejected: Vec<String> = (0..n_rejected).map(|_| sentence(&mut next)).collect();
        let image = images[(next() % 16) as usize].clone();
        let mut p = PreferencePair::new(
            format!("scale:{i:06}"),
            ImageRef::embedded(None, image),
            "What is in the picture?",
            chosen.join(" "),
            rejected.join(" "),
        );
        if scored {
            let mut score = || 18.0 + (next() % 12_000) as f64 / 1000.0;
            let s = Scores {
                chosen: chosen.iter().map(|_| score()).collect(),
                rejected: rejected.iter().map(|_| score()).collect(),
            };
            p.sub_sentences = Some(SubSentences { chosen, rejected });
            p.set_scores(s, Estimator::Probs)?;
        } else {
            p.sub_sentences = Some(SubSentences { chosen, rejected });
        }
        list.push(p);
    }
    let run = RunInfo {
        clip_model: scored.then(|| "elsewhere/clip-vit-l-336".to_owned()),
        estimator: Some(Estimator::Probs),
        splitter: Some("rules-v1".to_owned()),
    };
    let header = dama_data::annotate(&mut list, &run)?;
    let file = std::io::BufWriter::new(std::fs::File::create(&out).with_context(|| out.clone())?);
    let mut w = AnnotatedJsonlWriter::new(&out, file, header.clone(), ImageOut::Inline)?;
    for p in &list {
        w.write(p)?;
    }
    w.finish()?;
    let bytes = std::fs::metadata(&out)?.len();
    println!(
        "{}",
        serde_json::json!({
            "file": out,
            "pairs": pairs,
            "bytes": bytes,
            "scored": scored,
            "delta_mean": header.delta_mean,
        })
    );
    Ok(())
}

#[cfg(target_arch = "wasm32")]
fn main() {}

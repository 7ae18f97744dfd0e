//! Writes the bundled demo set, `web/demo/demo.jsonl`, and the scores the demo model gives its
//! first pairs, `web/tests/demo_scores.json` (checked natively and in the browser).
//!
//! The pairs are the native demo's synthetic scenes (`dama_world`): coloured
//! shapes on a background, a chosen answer of true sentences and a rejected one with 1–3 false
//! facts (the number is in the tags, `errors:N`). Their simulated scores are left out, so the
//! browser scores them itself; the sub-sentences are the generator's own sentences.
//!
//! `cargo run -p dama-web --example make_demo` (deterministic: the same files every time).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    use dama_core::Estimator;
    use dama_data::{AnnotatedJsonlWriter, ImageOut, PreferencePair, RunInfo};
    use dama_world::{SPLITTER, SyntheticSpec, generate};

    const PAIRS: usize = 48;
    const SCORED: usize = 4;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));

    let spec = SyntheticSpec {
        pairs: PAIRS,
        image_size: 112,
        seed: 6,
    };
    let mut pairs: Vec<PreferencePair> = generate(&spec)
        .into_iter()
        .map(|s| {
            let mut p = s.pair;
            p.id = p.id.replace("synthetic:", "demo:");
            p.scores = None;
            p.delta = None;
            p.delta_edge = None;
            p.alpha_d = None;
            p
        })
        .collect();
    let run = RunInfo {
        clip_model: None,
        estimator: Some(Estimator::Probs),
        splitter: Some(SPLITTER.to_owned()),
    };
    let header = dama_data::annotate(&mut pairs, &run)?;
    let mut w = AnnotatedJsonlWriter::new("demo.jsonl", Vec::new(), header, ImageOut::Inline)?;
    for p in &pairs {
        w.write(p)?;
    }
    let jsonl = w.finish()?;
    std::fs::write(root.join("demo/demo.jsonl"), &jsonl)?;

    let session = dama_web::load::load_picked(vec![("demo.jsonl".into(), jsonl.clone())])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tiny = root.join("../crates/dama-clip/tests/fixtures/tiny-clip");
    let read = |f: &str| std::fs::read(tiny.join(f));
    let scorer = dama_web::scorer::WorkerScorer::from_bytes(
        "tiny-clip",
        &read("config.json")?,
        read("model.safetensors")?,
        &read("tokenizer.json")?,
        &read("preprocessor_config.json")?,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let items: Vec<_> = session.pairs[..SCORED]
        .iter()
        .map(|p| dama_web::scoring::item(p).expect("demo pairs have images"))
        .collect();
    let expected: Vec<(String, dama_data::Scores)> = scorer
        .score(&items)
        .into_iter()
        .map(|r| Ok((r.id, r.scores.map_err(|e| anyhow::anyhow!(e))?)))
        .collect::<anyhow::Result<_>>()?;
    std::fs::write(
        root.join("tests/demo_scores.json"),
        serde_json::to_string_pretty(&expected)? + "\n",
    )?;
    println!(
        "wrote demo/demo.jsonl ({} pairs, {} bytes) and tests/demo_scores.json ({SCORED} pairs)",
        PAIRS,
        jsonl.len()
    );
    Ok(())
}

#[cfg(target_arch = "wasm32")]
fn main() {}

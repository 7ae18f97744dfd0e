//! Records the scores the bundled demo model gives the first pairs of the bundled demo set,
//! `web/tests/demo_scores.json`, which the native and the browser builds are checked against.
//! Both bundled parts, `web/demo/demo.jsonl` and `web/demo/clip/`, are made by
//! `dama-native demo` (seed 0) and copied by `scripts/make-web-demo.sh`, which then runs this.
//!
//! `cargo run -p dama-web --example record_demo_scores` (deterministic: the same file every time).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    const SCORED: usize = 4;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let jsonl = std::fs::read(root.join("demo/demo.jsonl"))?;
    let session = dama_web::load::load_picked(vec![("demo.jsonl".into(), jsonl)])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let clip = root.join("demo/clip");
    let read = |f: &str| std::fs::read(clip.join(f));
    let scorer = dama_web::scorer::WorkerScorer::from_bytes(
        "demo clip",
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
        "wrote tests/demo_scores.json ({SCORED} of the {} demo pairs)",
        session.len()
    );
    Ok(())
}

#[cfg(target_arch = "wasm32")]
fn main() {}

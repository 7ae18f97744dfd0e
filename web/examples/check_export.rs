//! Checks an explorer export against dama-core, for the end-to-end test (web/e2e/e2e.mjs):
//! every kept pair's δ from its scores (`dama_core::delta`), δ̄ over the kept pairs
//! (`dama_core::delta_mean`), α_D (`dama_core::alpha_d`), the bands (`HardnessBands`), and
//! the curation the test made (a dropped pair, an edited sub-sentence).
//!
//! Everything must match bit for bit: dama-core takes `exp`/`ln` from the `libm` crate on
//! every target, so the browser (wasm32) and this native check compute identical numbers.
//!
//! `cargo run -p dama-web --example check_export -- FILE --model NAME --dropped ID --edited ID
//! --text TEXT [--answer ID --answer-text TEXT]`: with `--answer`, that pair's chosen answer
//! must be the edited text and its sub-sentences the rule splitter's split of it.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    use anyhow::{bail, ensure};
    use dama_core::{Estimator, HardnessBands};
    use dama_data::{ImageCheck, NoImages, ReadOptions, Status};

    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> anyhow::Result<String> {
        let at = args.iter().position(|a| a == name);
        match at.and_then(|i| args.get(i + 1)) {
            Some(v) => Ok(v.clone()),
            None => bail!("missing {name}"),
        }
    };
    let file = args.first().cloned().unwrap_or_default();
    let (model, dropped, edited, text) = (
        flag("--model")?,
        flag("--dropped")?,
        flag("--edited")?,
        flag("--text")?,
    );
    let bytes = std::fs::read(&file)?;
    let options = ReadOptions {
        include_dropped: true,
        ..ReadOptions::strict().with_images(ImageCheck::Decode)
    };
    let records = dama_data::read_bytes(&file, bytes, NoImages, options)?;
    let header = records
        .header()
        .cloned()
        .expect("an annotated file has a header");
    let (pairs, _) = records.read_all()?;

    ensure!(
        header.count == pairs.len(),
        "count {} for {} pairs",
        header.count,
        pairs.len()
    );
    ensure!(
        header.clip_model.as_deref() == Some(model.as_str()),
        "clip_model {:?}",
        header.clip_model
    );
    let estimator = header.estimator.unwrap_or(Estimator::Probs);
    let close = |a: f64, b: f64| a.to_bits() == b.to_bits();
    let mut kept = Vec::new();
    for p in &pairs {
        let scores = p.scores.as_ref();
        if !p.is_kept() {
            ensure!(p.alpha_d.is_none(), "{}: a dropped pair carries α_D", p.id);
            continue;
        }
        let s = scores.ok_or_else(|| anyhow::anyhow!("{}: kept but not scored", p.id))?;
        let h = dama_core::delta(&s.chosen, &s.rejected, estimator)?;
        let d = p.delta.ok_or_else(|| anyhow::anyhow!("{}: no δ", p.id))?;
        ensure!(close(d, h.delta), "{}: δ {d} ≠ dama_core {}", p.id, h.delta);
        ensure!(p.delta_edge == Some(h.edge), "{}: edge", p.id);
        kept.push(d);
    }
    let mut sorted = kept.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = dama_core::delta_mean(&sorted)?;
    ensure!(
        header.delta_mean == Some(mean),
        "δ̄ {:?} ≠ dama_core {mean}",
        header.delta_mean
    );
    ensure!(
        header.kept == kept.len() && header.scored == kept.len(),
        "kept/scored counts"
    );
    ensure!(
        header.bands == Some(HardnessBands::from_deltas(&kept)?),
        "bands"
    );
    for p in pairs.iter().filter(|p| p.is_kept()) {
        let want = dama_core::alpha_d(p.delta.unwrap(), mean);
        let have = p
            .alpha_d
            .ok_or_else(|| anyhow::anyhow!("{}: no α_D", p.id))?;
        ensure!(close(have, want), "{}: α_D {have} ≠ {want}", p.id);
    }
    let d: Vec<&str> = pairs
        .iter()
        .filter(|p| p.annotation.status == Status::Drop)
        .map(|p| p.id.as_str())
        .collect();
    ensure!(
        d == [dropped.as_str()],
        "dropped pairs {d:?}, expected [{dropped}]"
    );
    let e = pairs
        .iter()
        .find(|p| p.id == edited)
        .ok_or_else(|| anyhow::anyhow!("no pair {edited}"))?;
    ensure!(e.annotation.edited, "{edited} is not marked edited");
    let subs = e.sub_sentences.as_ref().expect("sub-sentences");
    ensure!(
        subs.chosen.iter().any(|s| s == &text),
        "{edited}: {:?} lacks {text:?}",
        subs.chosen
    );
    ensure!(
        pairs.iter().all(|p| p.image.decoded.is_some()),
        "every image decodes"
    );
    if let Some(at) = args.iter().position(|a| a == "--answer") {
        use dama_data::Splitter;
        let id = args.get(at + 1).cloned().unwrap_or_default();
        let want = flag("--answer-text")?;
        let p = pairs
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| anyhow::anyhow!("no pair {id}"))?;
        ensure!(
            p.chosen == want,
            "{id}: chosen is {:?}, not the edited {want:?}",
            p.chosen
        );
        let split = dama_data::RuleSplitter::new().split(&p.question, &want)?;
        ensure!(
            p.sub_sentences.as_ref().map(|s| &s.chosen) == Some(&split),
            "{id}: the chosen sub-sentences are not the edited answer's split"
        );
        ensure!(p.annotation.edited, "{id} is not marked edited");
    }
    println!(
        "export ok: {} pairs, {} kept, δ̄ = {mean} (dama-core), α_D and δ of every kept pair agree",
        pairs.len(),
        kept.len()
    );
    Ok(())
}

#[cfg(target_arch = "wasm32")]
fn main() {}

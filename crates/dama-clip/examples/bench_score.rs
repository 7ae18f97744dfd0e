//! Scores the pairs `scripts/bench_clip_torch.py prepare` wrote, with our CLIP, and compares
//! with what `bench_clip_torch.py run` measured for transformers on the same machine: pairs/s,
//! the ratio, where our time goes, and how far our scores are from transformers'.
//!
//!     cargo run --release -p dama-clip --example bench_score -- BENCH_DIR [--repeat N]
//!
//! (scripts/bench_clip.sh does all of it.) Images are decoded before timing on both sides.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use dama_clip::{ClipScorer, PairInput, PairScores, ScorerOptions};
use image::DynamicImage;

#[derive(serde::Deserialize)]
struct Record {
    image: PathBuf,
    chosen: Vec<String>,
    rejected: Vec<String>,
}

#[derive(serde::Deserialize)]
struct TorchRun {
    seconds: f64,
    pairs_per_s: f64,
}

#[derive(serde::Deserialize)]
struct TorchResults {
    per_pair_pil: TorchRun,
    per_pair_fast: TorchRun,
    batched_8: TorchRun,
    scores: Vec<TorchScores>,
    threads: usize,
    torch: String,
}

#[derive(serde::Deserialize)]
struct TorchScores {
    chosen: Vec<f32>,
    rejected: Vec<f32>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_score BENCH_DIR [--repeat N]";
    let dir = PathBuf::from(args.get(1).ok_or(usage)?);
    let repeat: usize = match args.get(2).map(String::as_str) {
        Some("--repeat") => args.get(3).ok_or(usage)?.parse()?,
        Some(_) => return Err(usage.into()),
        None => 1,
    };
    let records: Vec<Record> = serde_json::from_slice(&std::fs::read(dir.join("pairs.json"))?)?;
    let images: Vec<DynamicImage> = records
        .iter()
        .map(|r| image::open(&r.image))
        .collect::<Result<_, _>>()?;
    let pairs: Vec<PairInput<'_, String>> = records
        .iter()
        .zip(&images)
        .map(|(r, im)| PairInput {
            image: im,
            chosen: &r.chosen,
            rejected: &r.rejected,
        })
        .collect();
    let n = pairs.len() as f64;
    let texts: usize = records
        .iter()
        .map(|r| r.chosen.len() + r.rejected.len())
        .sum();
    let mut scorer = ClipScorer::load(&dir.join("model"), &Device::Cpu, DType::F32)?;
    println!(
        "{} pairs, {texts} sub-sentences, {}x{} images; {} threads",
        pairs.len(),
        images[0].width(),
        images[0].height(),
        candle_core::utils::get_num_threads()
    );

    scorer.score_pairs(&pairs[..2.min(pairs.len())])?; // warm-up
    // The fastest of `repeat` runs: the machine may be shared.
    let mut timed = |name: &str,
                     opts: ScorerOptions|
     -> Result<(f64, Vec<PairScores>), Box<dyn std::error::Error>> {
        scorer.options = opts;
        let mut best = (f64::MAX, vec![]);
        for _ in 0..repeat.max(1) {
            let (t0, c0) = (Instant::now(), cpu_seconds());
            let scores = scorer.score_pairs(&pairs)?;
            let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
            println!("  ours {name}: wall {wall:.2} s, cpu {cpu:.2} s");
            if wall < best.0 {
                best = (wall, scores);
            }
        }
        Ok(best)
    };
    let (per_pair_s, per_pair) = timed(
        "per pair",
        ScorerOptions {
            pairs_per_batch: 1,
            ..Default::default()
        },
    )?;
    let defaults = ScorerOptions::default();
    let pairs_per_batch = std::env::var("PAIRS_PER_BATCH")
        .ok()
        .and_then(|v| v.parse().ok());
    let opts = ScorerOptions {
        pairs_per_batch: pairs_per_batch.unwrap_or(defaults.pairs_per_batch),
        ..defaults
    };
    let (batched_s, batched) = timed("score_pairs", opts)?;
    println!(
        "ours  per pair        {:7.2} pairs/s ({per_pair_s:.2} s)",
        n / per_pair_s
    );
    println!(
        "ours  score_pairs ({}) {:6.2} pairs/s ({batched_s:.2} s)",
        opts.pairs_per_batch,
        n / batched_s
    );

    breakdown(&scorer, &pairs, repeat)?;

    let torch_path = dir.join("torch.json");
    if !torch_path.exists() {
        println!(
            "(no {}: run bench_clip_torch.py run first for the comparison)",
            torch_path.display()
        );
        return Ok(());
    }
    let torch: TorchResults = serde_json::from_slice(&std::fs::read(&torch_path)?)?;
    println!(
        "\ntransformers (torch {}, {} threads, fp32, no_grad):",
        torch.torch, torch.threads
    );
    for (name, run) in [
        ("per pair, PIL processor", &torch.per_pair_pil),
        ("per pair, torchvision processor", &torch.per_pair_fast),
        ("8 pairs per forward", &torch.batched_8),
    ] {
        println!(
            "torch {name:32} {:7.2} pairs/s ({:.2} s)",
            run.pairs_per_s, run.seconds
        );
    }
    let best_torch = [&torch.per_pair_pil, &torch.per_pair_fast, &torch.batched_8]
        .iter()
        .map(|r| r.pairs_per_s)
        .fold(0.0, f64::max);
    let torch_pp = torch
        .per_pair_pil
        .pairs_per_s
        .max(torch.per_pair_fast.pairs_per_s);
    println!(
        "\nratio, per pair vs per pair:           {:.2}x",
        n / per_pair_s / torch_pp
    );
    println!(
        "ratio, score_pairs vs torch 8 per forward: {:.2}x",
        n / batched_s / torch.batched_8.pairs_per_s
    );
    println!(
        "ratio, score_pairs vs best torch:      {:.2}x",
        n / batched_s / best_torch
    );

    let diff = |ours: &[PairScores]| {
        ours.iter()
            .zip(&torch.scores)
            .flat_map(|(o, t)| {
                o.chosen
                    .iter()
                    .zip(&t.chosen)
                    .chain(o.rejected.iter().zip(&t.rejected))
                    .map(|(a, b)| (a - b).abs())
            })
            .fold(0f32, f32::max)
    };
    println!(
        "max |Γ ours − Γ transformers| (PIL processor): per pair {:.2e}, score_pairs {:.2e}",
        diff(&per_pair),
        diff(&batched)
    );
    Ok(())
}

/// CPU time of this process (all threads), from /proc on Linux; 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<f64> = rest.split(' ').map(|v| v.parse().unwrap_or(0.0)).collect();
    (f[11] + f[12]) / 100.0
}

/// Where the time of `score_pairs` goes: the same work, stage by stage, batched alike; each
/// stage's fastest of `repeat` passes.
fn breakdown(
    scorer: &ClipScorer,
    pairs: &[PairInput<'_, String>],
    repeat: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut best = [f64::MAX; 4];
    let mut tokens = (0usize, 0usize, 0usize, 0usize);
    for pass in 0..repeat.max(1) {
        let mut t = [0.0; 4];
        for chunk in pairs.chunks(scorer.options.pairs_per_batch) {
            let start = Instant::now();
            let ims: Vec<&DynamicImage> = chunk.iter().map(|p| p.image).collect();
            let pv = scorer.processor.to_tensor(&ims, scorer.model.device())?;
            t[0] += start.elapsed().as_secs_f64();
            let start = Instant::now();
            scorer.model.image_embeds(&pv)?;
            t[1] += start.elapsed().as_secs_f64();
            let start = Instant::now();
            let texts: Vec<&String> = chunk
                .iter()
                .flat_map(|p| p.chosen.iter().chain(p.rejected))
                .collect();
            let ids = scorer.tokenizer.encode_ids(&texts)?;
            t[2] += start.elapsed().as_secs_f64();
            let start = Instant::now();
            scorer.text_embeds_ids(&ids)?;
            t[3] += start.elapsed().as_secs_f64();
            if pass == 0 {
                let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
                tokens.0 += lengths.iter().sum::<usize>();
                let o = &scorer.options;
                for group in dama_clip::score::plan_text_batches(
                    &lengths,
                    o.max_texts_per_batch,
                    o.batch_overhead_tokens,
                ) {
                    tokens.1 += group.len() * group.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                    tokens.2 += 1;
                }
                tokens.3 += ids.len() * lengths.iter().max().unwrap_or(&0);
            }
        }
        for (b, v) in best.iter_mut().zip(t) {
            *b = b.min(v);
        }
    }
    let [pre, img, tok, txt] = best;
    let total = pre + img + tok + txt;
    let pct = |x: f64| 100.0 * x / total;
    println!("where score_pairs' time goes (stage by stage, {total:.2} s):");
    println!(
        "  preprocessing (resize, crop, normalise) {pre:6.2} s {:5.1}%",
        pct(pre)
    );
    println!(
        "  image tower                             {img:6.2} s {:5.1}%",
        pct(img)
    );
    println!(
        "  tokenisation                            {tok:6.3} s {:5.1}%",
        pct(tok)
    );
    println!(
        "  text tower                              {txt:6.2} s {:5.1}%",
        pct(txt)
    );
    println!(
        "  text tokens: {} real, {} computed in {} length-grouped batches ({} if each chunk were padded to its longest)",
        tokens.0, tokens.1, tokens.2, tokens.3
    );
    Ok(())
}

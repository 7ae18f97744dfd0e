//! One DAMA step (everything `dama_core::step` does: margins, mask, α_M, β_C, loss, gradient,
//! statistics) for the paper's global batch (N = 16) and a large one (N = 4096), in f32 as the
//! trainer runs it, for both presets. The baseline is the same call in mode `dpo` with no
//! filter: plain DPO maths, so the printed ratios are what the data- and model-aware parts cost.
//!
//! `cargo bench -p dama-core --bench step`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use dama_core::{DamaConfig, DamaState, Filter, Mode, Preset, StepInput, Xoshiro256, step};

/// Log-prob sums that look like a real batch: answers of ~100 tokens at ~−1 nat each, the
/// policy a little away from the reference, α_D around 1.
fn batch(n: usize, seed: u64) -> [Vec<f32>; 5] {
    let mut rng = Xoshiro256::seed_from(seed);
    let mut draw = |scale: f64, offset: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (offset + scale * (rng.open01() - 0.5)) as f32)
            .collect()
    };
    [
        draw(80.0, -110.0),
        draw(80.0, -130.0),
        draw(80.0, -110.0),
        draw(80.0, -130.0),
        draw(0.6, 1.0),
    ]
}

fn configs() -> [(&'static str, DamaConfig<f32>); 3] {
    let dama = DamaConfig::<f32>::default();
    [
        (
            "dpo-baseline",
            DamaConfig {
                mode: Mode::Dpo,
                filter: Filter::None,
                ..dama
            },
        ),
        ("dama-official", dama),
        (
            "dama-paper",
            DamaConfig {
                preset: Preset::Paper,
                ..dama
            },
        ),
    ]
}

/// Runs one step on a fresh copy of the state, as every training step starts from the last.
fn one_step(cfg: &DamaConfig<f32>, state: &DamaState<f32>, input: &StepInput<'_, f32>) {
    let mut s = state.clone();
    black_box(step(cfg, &mut s, black_box(input)).unwrap());
}

fn with_batch(n: usize, f: impl FnOnce(&StepInput<'_, f32>, &DamaState<f32>)) {
    let [pc, pr, rc, rr, ad] = batch(n, n as u64);
    let input = StepInput {
        policy_chosen: &pc,
        policy_rejected: &pr,
        ref_chosen: &rc,
        ref_rejected: &rr,
        alpha_d: Some(&ad),
        forced_mask: None,
    };
    let mut state = DamaState::<f32>::new(0);
    state.ema_gap = 1.5;
    f(&input, &state);
}

/// Median seconds per step over `reps` timed batches of `inner` steps.
fn median_secs(cfg: &DamaConfig<f32>, state: &DamaState<f32>, input: &StepInput<'_, f32>) -> f64 {
    let inner = 1 + 20_000 / input.policy_chosen.len();
    let mut times: Vec<f64> = (0..31)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                one_step(cfg, state, input);
            }
            t.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("dama_step");
    for n in [16usize, 4096] {
        with_batch(n, |input, state| {
            for (name, cfg) in configs() {
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter(|| one_step(&cfg, state, input))
                });
            }
        });
    }
    group.finish();
    c.final_summary();
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` runs each benchmark once; no timing then.
    }

    println!("\nratio to the dpo baseline (same process, median of 31 timed runs):");
    for n in [16usize, 4096] {
        with_batch(n, |input, state| {
            let times: Vec<(&str, f64)> = configs()
                .iter()
                .map(|(name, cfg)| (*name, median_secs(cfg, state, input)))
                .collect();
            let base = times[0].1;
            for (name, t) in times {
                println!(
                    "  N = {n:>4}  {name:<14} {:>10.2} µs  {:>5.2}×",
                    t * 1e6,
                    t / base
                );
            }
        });
    }
}

//! 8-bit AdamW states (`--optim-state 8bit`) on a small LLaVA on the CPU: they track fp32
//! AdamW's loss curve and final weights, with either master layout, where plain
//! round-to-nearest 8-bit moments (one linear scale per tensor, no blocks, no dynamic map)
//! do not; and a run with 8-bit states resumes exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dama_llava::random::{TinySpec, write_tiny_model};
use dama_tests::{config, dataset, max_diff, weights};
use dama_train::dist::{Optimizer, Single};
use dama_train::order::DataOrder;
use dama_train::policy::build_policy;
use dama_train::prepare::prepare;
use dama_train::schedule::CosineSchedule;
use dama_train::step::{BatchRefs, StepSettings, train_step};
use dama_train::{OptimMaster, OptimState, Precision, Silent, TrainConfig, train};

/// A small LLaVA whose language model has tensors on both sides of the 8-bit threshold (4096
/// values): q/o projections 4096, MLP 10240, the projector's second layer 4096 (8-bit); k/v
/// 2048, norms, the projector's first layer (f32); embeddings and head (65536) keep f32
/// moments by rule (`dama_train::optim::keeps_f32_moments`).
fn model(dir: &Path) -> PathBuf {
    let path = dir.join("model");
    std::fs::create_dir_all(&path).unwrap();
    let spec = TinySpec {
        vision_layers: 2,
        image_size: 28,
        ..TinySpec::default()
    };
    write_tiny_model(&path, &spec, 11).unwrap();
    path
}

/// What a run of [`run`] gives.
struct Run {
    losses: Vec<f64>,
    /// Trainable weights by name, in f32.
    weights: BTreeMap<String, Vec<f32>>,
}

/// The moments of every tensor of at least 4096 values replaced by plain round-to-nearest
/// 8-bit: one absmax per tensor, 255 linear levels (m: ±127 steps of absmax/127; v: 0..255
/// steps of absmax/255). What 8-bit states without block-wise dynamic quantisation would do.
fn round_to_nearest_8bit(opt: &mut dama_train::optim::AdamW) {
    let mut st = opt.state_tensors();
    for (key, t) in st.iter_mut() {
        let signed = key.ends_with(".exp_avg");
        if !(signed || key.ends_with(".exp_avg_sq")) || t.elem_count() < 4096 {
            continue;
        }
        let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let absmax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let levels = if signed { 127.0 } else { 255.0 };
        let q: Vec<f32> = x
            .iter()
            .map(|&v| {
                if absmax > 0.0 {
                    (v / absmax * levels).round() * absmax / levels
                } else {
                    0.0
                }
            })
            .collect();
        *t = Tensor::from_vec(q, t.shape(), t.device()).unwrap();
    }
    let steps = opt.steps();
    opt.load_state(&st, steps).unwrap();
}

/// The trainer's loop (`dama_train::run`'s) on `cfg`, the losses of every step; with
/// `control`, the moments are rounded by [`round_to_nearest_8bit`] after each step. A step
/// that fails (a non-finite gradient) ends the run.
fn run(cfg: &TrainConfig, out: &Path, control: bool) -> Run {
    let dev = Device::Cpu;
    let prepared = prepare(cfg, out, false, &dev, &Silent, &Single).unwrap();
    let mut policy = build_policy(cfg, &prepared.identity, None, &dev, &Silent, &Single).unwrap();
    // one rank: the optimizer is the replicated AdamW itself
    let Optimizer::Replicated(opt) = &mut policy.opt else {
        unreachable!("ZeRO-0 on one rank")
    };
    let data = &prepared.data;
    let order = DataOrder {
        len: data.pairs.len(),
        batch_size: cfg.batch_size,
        epochs: cfg.epochs,
        seed: cfg.seed,
        shuffle: cfg.shuffle,
    };
    let schedule = CosineSchedule::with_warmup_ratio(cfg.lr, cfg.warmup_ratio, order.total_steps());
    let settings = StepSettings {
        micro_batch: cfg.micro_batch,
        shared_prefix: cfg.shared_prefix,
        max_grad_norm: cfg.max_grad_norm,
        overlap_grads: cfg.overlap_grads,
    };
    let mut losses = Vec::new();
    let mut cursor = Default::default();
    while let Some((indices, next)) = order.batch_at(cursor) {
        let batch = data.batch(&indices, &prepared.processor, &dev).unwrap();
        let pick = |v: &[f32]| indices.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let (rc, rr) = (pick(&prepared.refs.chosen), pick(&prepared.refs.rejected));
        let refs = BatchRefs {
            ref_chosen: &rc,
            ref_rejected: &rr,
            alpha_d: None,
        };
        let lr = schedule.lr(losses.len() as u64);
        let step = train_step(
            &policy.model,
            opt,
            &batch,
            refs,
            &cfg.dama,
            &mut policy.state.dama,
            &settings,
            lr,
        );
        match step {
            Ok(report) => losses.push(report.outcome.loss as f64),
            Err(e) => {
                eprintln!("step {} failed: {e}", losses.len() + 1);
                break;
            }
        }
        if control {
            round_to_nearest_8bit(opt);
        }
        cursor = next;
    }
    let weights = policy
        .model
        .trainable_vars()
        .iter()
        .map(|(k, v)| {
            let x = v.as_tensor().to_dtype(DType::F32).unwrap();
            (k.clone(), x.flatten_all().unwrap().to_vec1().unwrap())
        })
        .collect();
    Run { losses, weights }
}

/// How far run `b`'s final weights are from run `a`'s: (max |a − b|, ‖a − b‖ / ‖a − init‖,
/// the L2 distance relative to how far `a` travelled from the initial weights).
fn weight_gap(a: &Run, b: &Run, init: &BTreeMap<String, Vec<f32>>) -> (f32, f64) {
    let l2 = |x: &BTreeMap<String, Vec<f32>>, y: &BTreeMap<String, Vec<f32>>| {
        x.iter()
            .flat_map(|(k, v)| {
                v.iter()
                    .zip(&y[k])
                    .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
            })
            .sum::<f64>()
            .sqrt()
    };
    (
        max_diff(&a.weights, &b.weights),
        l2(&a.weights, &b.weights) / l2(&a.weights, init),
    )
}

fn curve_gap(a: &[f64], b: &[f64]) -> (f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let worst = d.iter().copied().fold(0.0, f64::max);
    (worst, d.iter().sum::<f64>() / d.len() as f64)
}

#[test]
fn eight_bit_states_track_fp32_adamw_and_plain_rounding_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let data = dataset(dir.path(), 16, |_, _| {});
    let base = TrainConfig {
        epochs: 8,
        lr: 2e-3,
        ..config(&model, &data)
    };
    let cfg = |precision, master, state| TrainConfig {
        precision,
        optim_master: master,
        optim_state: state,
        ..base.clone()
    };
    let go = |c: &TrainConfig, name: &str, control: bool| run(c, &dir.path().join(name), control);
    let init: BTreeMap<String, Vec<f32>> = {
        let c = cfg(Precision::F32, OptimMaster::F32, OptimState::F32);
        let prepared = prepare(
            &c,
            &dir.path().join("init"),
            false,
            &Device::Cpu,
            &Silent,
            &Single,
        )
        .unwrap();
        let p = build_policy(&c, &prepared.identity, None, &Device::Cpu, &Silent, &Single).unwrap();
        p.model
            .trainable_vars()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                )
            })
            .collect()
    };
    let fp32 = go(
        &cfg(Precision::F32, OptimMaster::F32, OptimState::F32),
        "fp32",
        false,
    );
    let eight = go(
        &cfg(Precision::F32, OptimMaster::F32, OptimState::Dynamic8),
        "8bit",
        false,
    );
    let plain = go(
        &cfg(Precision::F32, OptimMaster::F32, OptimState::F32),
        "rtn",
        true,
    );
    let steps = fp32.losses.len();
    assert_eq!(steps, 32);
    let l0 = fp32.losses[0];
    let tail = |l: &[f64]| l[l.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(
        tail(&fp32.losses) < 0.5 * l0,
        "fp32 learns: {:?}",
        fp32.losses
    );

    let (worst, mean) = curve_gap(&fp32.losses, &eight.losses);
    let (wmax, wrel) = weight_gap(&fp32, &eight, &init);
    eprintln!(
        "8-bit vs fp32 states, f32 weights: loss |Δ| worst {worst:.5} mean {mean:.5} (L0 {l0:.4}, final fp32 {:.4} 8-bit {:.4}); weights max |Δ| {wmax:.2e}, ‖Δ‖ {wrel:.3} of the distance fp32 travelled",
        fp32.losses[steps - 1],
        eight.losses[steps - 1]
    );
    assert_eq!(eight.losses.len(), steps);
    assert!(worst < 0.1 * l0, "loss off by {worst}");
    assert!(mean < 0.03 * l0, "loss off by {mean} on average");
    assert!(
        wrel < 0.2,
        "weights off by {wrel} of the distance travelled"
    );

    // the same with bf16 weights and each master layout, against f32 states with that layout
    for master in [OptimMaster::F32, OptimMaster::Bf16Sr] {
        let bf16_ref = go(
            &cfg(Precision::Bf16, master, OptimState::F32),
            &format!("bf16-{master}"),
            false,
        );
        let r = go(
            &cfg(Precision::Bf16, master, OptimState::Dynamic8),
            &format!("bf16-8bit-{master}"),
            false,
        );
        let (worst, mean) = curve_gap(&bf16_ref.losses, &r.losses);
        let (wmax, wrel) = weight_gap(&bf16_ref, &r, &init);
        eprintln!(
            "8-bit vs f32 states, bf16 weights, master {master}: loss |Δ| worst {worst:.5} mean {mean:.5}; weights max |Δ| {wmax:.2e}, ‖Δ‖ {wrel:.3} of the distance the f32-state run travelled"
        );
        assert_eq!(r.losses.len(), steps);
        assert!(
            worst < 0.005 * l0 && mean < 0.0005 * l0,
            "{master}: {worst} / {mean}"
        );
        assert!(
            wrel < 0.3,
            "{master}: weights off by {wrel} of the distance"
        );
    }

    // plain round-to-nearest: visibly off the fp32 curve (or diverging to a failed step)
    let (worst_p, mean_p) = curve_gap(&fp32.losses, &plain.losses);
    let (wmax_p, wrel_p) = weight_gap(&fp32, &plain, &init);
    eprintln!(
        "plain round-to-nearest 8-bit vs fp32: {} of {steps} steps, loss |Δ| worst {worst_p:.5} mean {mean_p:.5}, final {:?}; weights max |Δ| {wmax_p:.2e}, ‖Δ‖ {wrel_p:.3} of the distance fp32 travelled",
        plain.losses.len(),
        plain.losses.last()
    );
    assert!(
        plain.losses.len() < steps || (mean_p > 5.0 * mean && wrel_p > 1.0),
        "round to nearest tracked fp32: mean {mean_p} vs 8-bit {mean}, weights {wrel_p} vs {wrel}"
    );
}

/// `train` with 8-bit states, resumed from a checkpoint halfway, ends with the weights and
/// metrics of the run that went through, bit for bit; its optimizer file holds u8 codes.
#[test]
fn an_eight_bit_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let data = dataset(dir.path(), 12, |_, _| {});
    let cfg = TrainConfig {
        epochs: 2,
        save_every: 1,
        save_total_limit: 10,
        optim_state: OptimState::Dynamic8,
        optim_master: OptimMaster::Bf16Sr,
        precision: Precision::Bf16,
        ..config(&model, &data)
    };
    let whole = dir.path().join("whole");
    let a = train(&cfg, &whole, false, &Device::Cpu, &Silent).unwrap();
    assert_eq!(a.steps.len(), 6);
    let opt = candle_core::safetensors::load(
        whole.join("checkpoints/step-000003/optimizer.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let codes: Vec<&String> = opt.keys().filter(|k| k.ends_with(".codes")).collect();
    assert!(!codes.is_empty());
    assert!(codes.iter().all(|k| opt[k.as_str()].dtype() == DType::U8));

    // a copy of the run as a kill after step 3 leaves it: checkpoints 1–3, three metric lines
    let cut = dir.path().join("cut");
    copy_dir(&whole, &cut);
    for s in 4..=6 {
        std::fs::remove_dir_all(cut.join(format!("checkpoints/step-{s:06}"))).unwrap();
    }
    std::fs::remove_dir_all(cut.join("final")).unwrap();
    std::fs::write(cut.join("checkpoints/latest"), "step-000003").unwrap();
    let metrics = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    let first3: Vec<&str> = metrics.lines().take(3).collect();
    std::fs::write(cut.join("metrics.jsonl"), first3.join("\n") + "\n").unwrap();

    let b = train(&cfg, &cut, true, &Device::Cpu, &Silent).unwrap();
    assert_eq!(b.steps.len(), 6);
    assert_eq!(weights(&whole.join("final")), weights(&cut.join("final")));
    for (x, y) in a.steps.iter().zip(&b.steps) {
        assert_eq!(x.loss, y.loss, "step {}", x.step);
        assert_eq!(x.grad_norm, y.grad_norm, "step {}", x.step);
    }
    // resuming with f32 states instead is refused
    let other = TrainConfig {
        optim_state: OptimState::F32,
        ..cfg.clone()
    };
    let err = train(&other, &cut, true, &Device::Cpu, &Silent)
        .expect_err("other settings are refused")
        .to_string();
    assert!(err.contains("other settings"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

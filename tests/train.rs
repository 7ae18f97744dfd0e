//! The trainer on a tiny LLaVA: learning, micro-batch equivalence, plain DPO, the reference
//! cache, bad input.

use candle_core::Device;
use dama_core::Mode;
use dama_tests::{config, dataset, max_diff, tiny_model, weights};
use dama_train::{Silent, TrainConfig, train};

#[test]
fn dpo_lowers_the_loss_and_widens_the_margin() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 1);
    let data = dataset(dir.path(), 16, |_, _| {});
    let cfg = TrainConfig {
        epochs: 6,
        lr: 3e-3,
        ..config(&model, &data)
    };
    let summary = train(&cfg, &dir.path().join("run"), false, &Device::Cpu, &Silent).unwrap();
    let steps = &summary.steps;
    assert_eq!(steps.len(), 24);
    // The policy starts as the reference: every margin is 0 and the loss ln 2.
    assert!(
        (steps[0].loss - std::f64::consts::LN_2).abs() < 1e-5,
        "{}",
        steps[0].loss
    );
    assert!(steps[0].rewards_margins.abs() < 1e-5);
    let last: f64 = steps[20..].iter().map(|m| m.loss).sum::<f64>() / 4.0;
    assert!(last < 0.3, "loss ln 2 → {last}");
    let margin_first = steps[0].rewards_margins;
    let margin_last: f64 = steps[20..].iter().map(|m| m.rewards_margins).sum::<f64>() / 4.0;
    assert!(
        margin_last > margin_first + 0.5,
        "margin {margin_first} → {margin_last}"
    );
    // Every step is in the metrics log.
    assert_eq!(
        dama_train::MetricsLog::read(&dir.path().join("run/metrics.jsonl"))
            .unwrap()
            .len(),
        24
    );
    assert!(summary.final_dir.join("model.safetensors").is_file());
}

#[test]
fn micro_batches_give_the_weights_of_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 2);
    let data = dataset(dir.path(), 12, |_, _| {});
    let base = TrainConfig {
        dama: dama_core::DamaConfig {
            mode: Mode::Mdpo,
            ..Default::default()
        },
        batch_size: 4,
        // Adam turns a gradient that is mostly rounding noise (a few k_proj entries get
        // ~1e-9) into a step of up to ±lr; eps = 1e-6 damps those, real gradients still move
        // every weight by ~lr per step.
        adam_eps: 1e-6,
        ..config(&model, &data)
    };
    let one = train(&base, &dir.path().join("one"), false, &Device::Cpu, &Silent).unwrap();
    let micro = TrainConfig {
        micro_batch: 2,
        ..base.clone()
    };
    let two = train(
        &micro,
        &dir.path().join("two"),
        false,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_eq!(one.steps.len(), 3);
    for (a, b) in one.steps.iter().zip(&two.steps) {
        assert!(
            (a.grad_norm - b.grad_norm).abs() < 1e-5 * a.grad_norm,
            "{} vs {}",
            a.grad_norm,
            b.grad_norm
        );
        assert!((a.loss - b.loss).abs() < 1e-6, "{} vs {}", a.loss, b.loss);
    }
    let (wa, wb) = (weights(&one.final_dir), weights(&two.final_dir));
    let d = max_diff(&wa, &wb);
    assert!(d < 1e-5, "weights differ by {d}");
    // And the runs did move the weights.
    assert!(max_diff(&weights(&one.final_dir), &weights(&model)) > 1e-4);
}

#[test]
fn activation_checkpointing_gives_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 2);
    let data = dataset(dir.path(), 8, |_, _| {});
    let base = TrainConfig {
        batch_size: 4,
        ..config(&model, &data)
    };
    let plain = train(
        &base,
        &dir.path().join("plain"),
        false,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    let recomputed = TrainConfig {
        recompute_activations: true,
        ..base.clone()
    };
    let ckpt = train(
        &recomputed,
        &dir.path().join("ckpt"),
        false,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_eq!(plain.steps.len(), 2);
    for (a, b) in plain.steps.iter().zip(&ckpt.steps) {
        assert_eq!(a.loss, b.loss);
        assert_eq!(a.grad_norm, b.grad_norm);
    }
    let d = max_diff(&weights(&plain.final_dir), &weights(&ckpt.final_dir));
    assert_eq!(d, 0.0, "weights differ by {d}");
    assert!(max_diff(&weights(&plain.final_dir), &weights(&model)) > 0.0);
}

#[test]
fn a_stale_reference_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 4, |_, _| {});
    let cache = dir.path().join("ref.jsonl");
    let first = TrainConfig {
        ref_cache: Some(cache.clone()),
        ..config(&tiny_model(dir.path(), 3), &data)
    };
    train(&first, &dir.path().join("a"), false, &Device::Cpu, &Silent).unwrap();
    let other = TrainConfig {
        model: tiny_model(dir.path(), 4),
        ..first
    };
    let err = train(&other, &dir.path().join("b"), false, &Device::Cpu, &Silent)
        .unwrap_err()
        .chain();
    assert!(err.contains("reference model weights differ"), "{err}");
}

#[test]
fn bad_records_stop_the_run_with_their_name_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 5);
    let data = dataset(dir.path(), 8, |i, rec| {
        if i == 3 {
            rec["image"] = "missing.png".into();
        }
        if i == 5 {
            rec["rejected"] = "".into();
        }
    });
    let cfg = config(&model, &data);
    let err = train(
        &cfg,
        &dir.path().join("strict"),
        false,
        &Device::Cpu,
        &Silent,
    )
    .unwrap_err()
    .chain();
    assert!(err.contains("pair3") && err.contains("--skip-bad"), "{err}");
    let lenient = TrainConfig {
        skip_bad: true,
        ..cfg.clone()
    };
    let summary = train(
        &lenient,
        &dir.path().join("lenient"),
        false,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_eq!(summary.steps.len(), 2, "6 good pairs in batches of 4");

    // An answer that leaves no scored token once cut to max_length.
    let tight = TrainConfig {
        max_length: Some(40),
        skip_bad: false,
        data: dataset(&dir.path().join("d2"), 4, |_, _| {}),
        ..cfg
    };
    let err = train(
        &tight,
        &dir.path().join("tight"),
        false,
        &Device::Cpu,
        &Silent,
    )
    .unwrap_err()
    .chain();
    assert!(err.contains("pair0") && err.contains("scored"), "{err}");
}

#[test]
fn modes_that_need_alpha_d_refuse_an_unscored_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 4, |_, _| {});
    let cfg = TrainConfig {
        dama: dama_core::DamaConfig {
            mode: Mode::Dama,
            ..Default::default()
        },
        ..config(&tiny_model(dir.path(), 6), &data)
    };
    let err = train(&cfg, &dir.path().join("r"), false, &Device::Cpu, &Silent)
        .unwrap_err()
        .chain();
    assert!(err.contains("dama-native score"), "{err}");
}

#[test]
fn dpo_mode_is_plain_dpo() {
    // One step of the trainer in mode dpo against DPO written directly with candle ops:
    // loss = mean −log σ(β·h), backpropagated as is, then the same AdamW.
    use dama_llava::{LlavaModel, LlavaProcessor, LoadOptions, Trainable};
    use dama_train::TrainData;
    use dama_train::optim::{AdamW, AdamWConfig, Param};
    use dama_train::step::{BatchRefs, StepSettings, gradients};

    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path(), 8);
    let data_path = dataset(dir.path(), 6, |_, _| {});
    let load = || {
        let opts = LoadOptions {
            trainable: Trainable::Full,
            ..LoadOptions::default()
        };
        let m = LlavaModel::load(&model_dir, &opts).unwrap();
        let params: Vec<Param> = m
            .trainable_vars()
            .iter()
            .map(|(n, v)| Param {
                name: n.clone(),
                var: v.clone(),
            })
            .collect();
        (m, AdamW::new(params, AdamWConfig::default()).unwrap())
    };
    let (model, opt) = load();
    let processor = LlavaProcessor::load(&model_dir, model.config()).unwrap();
    let data = TrainData::load(&data_path, &processor, dama_train::DataOptions::default()).unwrap();
    let idx: Vec<usize> = (0..6).collect();
    let batch = data.batch(&idx, &processor, &Device::Cpu).unwrap();
    // Reference log-probs that differ from the policy's, so that margins are not all zero.
    let rc: Vec<f32> = (0..6).map(|i| -20.0 - i as f32).collect();
    let rr: Vec<f32> = (0..6).map(|i| -25.0 + 2.0 * i as f32).collect();
    let beta = 0.1f32;
    let dama = dama_core::DamaConfig {
        mode: Mode::Dpo,
        beta,
        ..Default::default()
    };
    let mut state = dama_core::DamaState::new(0);
    let settings = StepSettings {
        micro_batch: 6,
        shared_prefix: true,
        max_grad_norm: None,
        overlap_grads: false,
    };
    let refs = BatchRefs {
        ref_chosen: &rc,
        ref_rejected: &rr,
        alpha_d: None,
    };
    let ours = gradients(
        &model,
        opt.params(),
        &batch,
        refs,
        &dama,
        &mut state,
        &settings,
    )
    .unwrap();

    let (plain, _) = load();
    let logps = plain.pair_logps(&batch, true).unwrap();
    let rc_t = candle_core::Tensor::new(rc.as_slice(), &Device::Cpu).unwrap();
    let rr_t = candle_core::Tensor::new(rr.as_slice(), &Device::Cpu).unwrap();
    let h = ((&logps.chosen - &rc_t).unwrap() - (&logps.rejected - &rr_t).unwrap()).unwrap();
    // −log σ(βh) = log(1 + e^{−βh})
    let loss = (h * -(beta as f64))
        .unwrap()
        .exp()
        .unwrap()
        .affine(1.0, 1.0)
        .unwrap()
        .log()
        .unwrap()
        .mean_all()
        .unwrap();
    assert!((loss.to_scalar::<f32>().unwrap() - ours.outcome.loss).abs() < 1e-6);
    let grads = loss.backward().unwrap();
    for ((p, ours), plain_var) in opt
        .params()
        .iter()
        .zip(&ours.grads)
        .zip(plain.trainable_vars().values())
    {
        let ours = ours.as_ref().unwrap();
        let theirs = grads.get(plain_var.as_tensor()).unwrap();
        let scale = theirs
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1e-12);
        let d = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-5 * scale, "{}: {d} (largest entry {scale})", p.name);
    }
}

/// Notices a run gives, for the tests to read.
#[derive(Default)]
struct Notices(std::cell::RefCell<Vec<String>>);

impl dama_train::Observer for Notices {
    fn notice(&self, message: &str) {
        self.0.borrow_mut().push(message.to_owned());
    }
}

#[test]
fn cut_conversations_and_positions_past_the_model_are_named() {
    use dama_train::prepare::load_processor;
    use dama_train::{DataOptions, TrainData};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 3);
    let data = dataset(dir.path(), 4, |_, _| {});
    // The longest conversation, uncut, and its prompt.
    let (processor, positions) = load_processor(&model, true, None).unwrap();
    let full = TrainData::load(&data, &processor, DataOptions::default()).unwrap();
    let longest = full
        .pairs
        .iter()
        .map(|p| p.encoded.rejected.input_ids.len())
        .max()
        .unwrap();
    let prompt = full
        .pairs
        .iter()
        .map(|p| p.encoded.shared_prefix)
        .max()
        .unwrap();
    assert!(!full.pairs.iter().any(|p| p.encoded.rejected.truncated));

    // Cut one token short of the longest: it is still trained on, and said to be cut.
    let (processor, _) = load_processor(&model, true, Some(longest - 1)).unwrap();
    assert!(longest - 1 > prompt + 1, "room for a scored token");
    let cut = TrainData::load(&data, &processor, DataOptions::default()).unwrap();
    assert_eq!(cut.pairs.len(), 4);
    let notices = Notices::default();
    cut.report(&notices, None, Some(longest - 1));
    let said = notices.0.borrow().join("\n");
    assert!(said.contains("were cut to --max-length"), "{said}");

    // A model that saw fewer positions than these sequences have.
    let options = DataOptions {
        max_positions: Some(longest - 2),
        ..DataOptions::default()
    };
    let (processor, _) = load_processor(&model, true, None).unwrap();
    let long = TrainData::load(&data, &processor, options).unwrap();
    let notices = Notices::default();
    long.report(&notices, None, None);
    let said = notices.0.borrow().join("\n");
    assert!(said.contains("max_position_embeddings"), "{said}");
    assert!(positions >= longest, "the tiny model itself has room");
}

//! What training needs beyond equality with transformers: the shared-prefix layout equals two
//! separate forwards (values and gradients), every trainable weight gets a gradient, gradients
//! equal finite differences, LoRA behaves, and a saved model reloads to the same numbers.

mod common;

use candle_core::{DType, Tensor, Var};
use common::*;
use dama_llava::{
    Images, LlavaModel, LoadOptions, LoraConfig, PairBatch, PairLogps, Projection, Trainable,
};

fn objective(l: &PairLogps) -> Tensor {
    (l.chosen.sum_all().unwrap() - l.rejected.sum_all().unwrap()).unwrap()
}

#[test]
fn shared_prefix_equals_two_separate_forwards_in_values_and_gradients() {
    let exp = expected();
    for dir in ["llava-tiny", "llava-tiny-mha"] {
        let (model, processor) = load(dir, DType::F32, Trainable::Full);
        let batch = batch(&processor, &exp);
        let sep = model.pair_logps(&batch, false).unwrap();
        let shr = model.pair_logps(&batch, true).unwrap();
        let err = max_rel(&vec1(&shr.chosen), &vec1(&sep.chosen), 1e-3).max(max_rel(
            &vec1(&shr.rejected),
            &vec1(&sep.rejected),
            1e-3,
        ));
        eprintln!("{dir}: shared vs separate log-prob sums, max relative difference {err:e}");
        assert!(err < 1e-5, "{err:e}");
        assert_eq!(shr.chosen_tokens, sep.chosen_tokens);
        let gs = objective(&sep).backward().unwrap();
        let gp = objective(&shr).backward().unwrap();
        let mut worst = 0f32;
        for (name, var) in model.trainable_vars() {
            let a = vec1(gs.get(var.as_tensor()).unwrap());
            let b = vec1(gp.get(var.as_tensor()).unwrap());
            let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            let e = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
                / scale;
            assert!(e < 1e-4, "{dir} {name}: {e:e}");
            worst = worst.max(e);
        }
        eprintln!("{dir}: shared vs separate gradients, max |Δ| / max |g| = {worst:e}");
    }
}

#[test]
fn every_trainable_tensor_gets_a_finite_nonzero_gradient() {
    let exp = expected();
    let (model, processor) = load("llava-tiny", DType::F32, Trainable::Full);
    let vars = model.trainable_vars();
    // projector (2 weights + 2 biases), embeddings, 2 layers × 9, final norm, lm_head
    assert_eq!(vars.len(), 4 + 1 + 2 * 9 + 1 + 1);
    let grads = objective(&model.pair_logps(&batch(&processor, &exp), true).unwrap())
        .backward()
        .unwrap();
    for (name, var) in vars {
        let g = vec1(
            grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient")),
        );
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|&x| x != 0.0), "{name}: zero gradient");
    }
    // the vision tower is frozen: none of its weights is a variable
    assert!(vars.keys().all(|k| !k.starts_with("vision_tower")));
}

#[test]
fn gradients_equal_central_finite_differences_in_f64() {
    let exp = expected();
    let tensors = expected_tensors();
    let (model, processor) = load("llava-tiny", DType::F64, Trainable::Full);
    let batch = PairBatch {
        images: Images::Features(tensors["vision_features"].to_dtype(DType::F64).unwrap()),
        pairs: batch(&processor, &exp).pairs,
    };
    let f = |m: &LlavaModel| -> f64 {
        objective(&m.pair_logps_no_grad(&batch, true).unwrap())
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = objective(&model.pair_logps(&batch, true).unwrap())
        .backward()
        .unwrap();
    let vars = model.trainable_vars();
    let names = [
        "multi_modal_projector.linear_1.weight",
        "multi_modal_projector.linear_2.bias",
        "language_model.model.embed_tokens.weight",
        "language_model.model.layers.0.self_attn.q_proj.weight",
        "language_model.model.layers.0.self_attn.v_proj.weight",
        "language_model.model.layers.1.self_attn.k_proj.weight",
        "language_model.model.layers.1.mlp.gate_proj.weight",
        "language_model.model.layers.1.post_attention_layernorm.weight",
        "language_model.model.norm.weight",
        "language_model.lm_head.weight",
    ];
    let h = 1e-5;
    let mut worst = 0f64;
    for name in names {
        let var: &Var = &vars[name];
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // the entry with the largest gradient and one a fixed stride away
        let top = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        for idx in [top, (top + g.len() / 3) % g.len()] {
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let shape = var.as_tensor().shape().clone();
            let at = |delta: f64| {
                let mut v = base.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, shape.clone(), var.device()).unwrap())
                    .unwrap();
                f(&model)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base, shape.clone(), var.device()).unwrap())
                .unwrap();
            let err = (fd - g[idx]).abs() / g[idx].abs().max(1e-3);
            assert!(
                err < 1e-5,
                "{name}[{idx}]: analytic {} vs finite difference {fd} ({err:e})",
                g[idx]
            );
            worst = worst.max(err);
        }
    }
    eprintln!("finite differences (f64, h = {h}): worst relative error {worst:e}");
}

#[test]
fn no_grad_scoring_records_no_graph() {
    let exp = expected();
    let (model, processor) = load("llava-tiny", DType::F32, Trainable::Full);
    let l = model
        .pair_logps_no_grad(&batch(&processor, &exp), true)
        .unwrap();
    let grads = objective(&l).backward().unwrap();
    for var in model.trainable_vars().values() {
        assert!(grads.get(var.as_tensor()).is_none());
    }
}

#[test]
fn optimizer_updates_through_vars_reach_the_model() {
    let exp = expected();
    let (model, processor) = load("llava-tiny", DType::F32, Trainable::Full);
    let batch = batch(&processor, &exp);
    let before = vec1(&model.pair_logps_no_grad(&batch, true).unwrap().chosen);
    let var = &model.trainable_vars()["language_model.model.layers.0.mlp.up_proj.weight"];
    var.set(&(var.as_tensor() * 1.5).unwrap()).unwrap();
    let after = vec1(&model.pair_logps_no_grad(&batch, true).unwrap().chosen);
    assert!(before.iter().zip(&after).all(|(a, b)| a != b));
}

fn lora() -> Trainable {
    Trainable::Lora(LoraConfig::new(4, 8.0, Projection::ALL.to_vec()))
}

#[test]
fn lora_starts_at_the_base_model_and_trains_only_adapters() {
    let exp = expected();
    let (base, processor) = load("llava-tiny", DType::F32, Trainable::Frozen);
    let (model, _) = load("llava-tiny", DType::F32, lora());
    let batch = batch(&processor, &exp);
    let want = base.pair_logps_no_grad(&batch, true).unwrap();
    let got = model.pair_logps(&batch, true).unwrap();
    assert_eq!(
        vec1(&got.chosen),
        vec1(&want.chosen),
        "B = 0 must leave the model unchanged"
    );
    assert_eq!(vec1(&got.rejected), vec1(&want.rejected));

    let vars = model.trainable_vars();
    assert_eq!(vars.len(), 2 * 7 * 2, "A and B for 7 targets in 2 layers");
    assert!(
        vars.keys()
            .all(|k| k.contains(".lora_A.") || k.contains(".lora_B."))
    );
    let grads = objective(&got).backward().unwrap();
    for (name, var) in vars {
        let g = vec1(grads.get(var.as_tensor()).unwrap());
        assert!(g.iter().all(|x| x.is_finite()));
        // dL/dA = scale·Bᵀ(...) vanishes while B = 0; dL/dB does not
        assert_eq!(
            g.iter().any(|&x| x != 0.0),
            name.contains("lora_B"),
            "{name}"
        );
    }
    // once B moves, A trains too
    for (name, var) in vars.iter().filter(|(n, _)| n.contains("lora_B")) {
        let (out, r) = var.as_tensor().dims2().unwrap();
        let v: Vec<f32> = (0..out * r)
            .map(|i| ((i * 7 + name.len()) % 11) as f32 / 50.0 - 0.1)
            .collect();
        var.set(&Tensor::from_vec(v, (out, r), var.device()).unwrap())
            .unwrap();
    }
    let grads = objective(&model.pair_logps(&batch, true).unwrap())
        .backward()
        .unwrap();
    for (name, var) in vars {
        let g = vec1(grads.get(var.as_tensor()).unwrap());
        assert!(g.iter().any(|&x| x != 0.0), "{name}");
    }
}

#[test]
fn lora_is_merged_on_save_and_reloads_to_the_same_logps() {
    let exp = expected();
    let (model, processor) = load("llava-tiny", DType::F32, lora());
    let batch = batch(&processor, &exp);
    for (name, var) in model
        .trainable_vars()
        .iter()
        .filter(|(n, _)| n.contains("lora_B"))
    {
        let (out, r) = var.as_tensor().dims2().unwrap();
        let v: Vec<f32> = (0..out * r)
            .map(|i| ((i * 5 + name.len()) % 13) as f32 / 40.0 - 0.15)
            .collect();
        var.set(&Tensor::from_vec(v, (out, r), var.device()).unwrap())
            .unwrap();
    }
    let want = model.pair_logps_no_grad(&batch, true).unwrap();
    let (base, _) = load("llava-tiny", DType::F32, Trainable::Frozen);
    let before = base.pair_logps_no_grad(&batch, true).unwrap();
    let moved = max_rel(&vec1(&want.chosen), &vec1(&before.chosen), 1e-3);
    eprintln!("trained adapters moved the log-prob sums by {moved:e} (relative)");
    assert!(
        moved > 1e-3,
        "the adapters must change the model for this test to mean anything"
    );
    let tmp = tempfile::tempdir().unwrap();
    model.save_pretrained(tmp.path()).unwrap();
    let reloaded = LlavaModel::load(tmp.path(), &LoadOptions::default()).unwrap();
    let got = reloaded.pair_logps_no_grad(&batch, true).unwrap();
    let err = max_rel(&vec1(&got.chosen), &vec1(&want.chosen), 1e-3).max(max_rel(
        &vec1(&got.rejected),
        &vec1(&want.rejected),
        1e-3,
    ));
    eprintln!("LoRA merged on save: max relative difference {err:e}");
    assert!(err < 1e-5, "{err:e}");
    let ckpt = dama_llava::WeightFiles::open_dir(tmp.path()).unwrap();
    assert!(ckpt.names().all(|n| !n.contains("lora")));
}

#[test]
fn a_saved_model_reloads_to_identical_logps_in_the_llava_hf_layout() {
    let exp = expected();
    let (model, processor) = load("llava-tiny-new", DType::F32, Trainable::Full);
    let batch = batch(&processor, &exp);
    // move away from the fixture's weights so the test sees the trained values
    let var = &model.trainable_vars()["multi_modal_projector.linear_2.weight"];
    var.set(&(var.as_tensor() * 0.5).unwrap()).unwrap();
    let want = model.pair_logps_no_grad(&batch, false).unwrap();
    for max_shard in [usize::MAX, 100_000] {
        let tmp = tempfile::tempdir().unwrap();
        model
            .save_pretrained_sharded(tmp.path(), max_shard)
            .unwrap();
        let sharded = tmp.path().join("model.safetensors.index.json").is_file();
        assert_eq!(sharded, max_shard != usize::MAX);
        let reloaded = LlavaModel::load(tmp.path(), &LoadOptions::default()).unwrap();
        let got = reloaded.pair_logps_no_grad(&batch, false).unwrap();
        assert_eq!(vec1(&got.chosen), vec1(&want.chosen));
        assert_eq!(vec1(&got.rejected), vec1(&want.rejected));
        let ckpt = dama_llava::WeightFiles::open_dir(tmp.path()).unwrap();
        assert_eq!(
            reloaded.config().raw,
            model.config().raw,
            "config.json written back"
        );
        assert!(ckpt.contains("language_model.lm_head.weight"));
        assert!(ckpt.contains("vision_tower.vision_model.pre_layrnorm.weight"));
        assert!(ckpt.contains("multi_modal_projector.linear_1.weight"));
        for side in [
            "tokenizer.json",
            "tokenizer_config.json",
            "processor_config.json",
        ] {
            assert!(tmp.path().join(side).is_file(), "{side} copied");
        }
        let processor = dama_llava::LlavaProcessor::load(tmp.path(), reloaded.config()).unwrap();
        assert_eq!(
            processor.encoder.source(),
            tmp.path().join("tokenizer.json")
        );
    }
    // saving over the folder a model is memory-mapped from would corrupt it
    let src = copy_fixture("llava-tiny");
    let m = LlavaModel::load(src.path(), &LoadOptions::default()).unwrap();
    let e = m.save_pretrained(src.path()).unwrap_err();
    assert!(e.to_string().contains("refusing"), "{e}");
}

#[test]
fn bf16_runs_forward_and_backward_and_sums_in_f32() {
    let exp = expected();
    let (model, processor) = load("llava-tiny", DType::BF16, Trainable::Full);
    let batch = batch(&processor, &exp);
    let l = model.pair_logps(&batch, true).unwrap();
    assert_eq!(l.chosen.dtype(), DType::F32);
    let want = &exp.models["llava-tiny"];
    let err = max_rel(&vec1(&l.chosen), &want.chosen_logps, 1.0).max(max_rel(
        &vec1(&l.rejected),
        &want.rejected_logps,
        1.0,
    ));
    eprintln!("bf16 vs transformers f32: max relative error {err:e}");
    assert!(err < 5e-2, "{err:e}");
    let grads = objective(&l).backward().unwrap();
    for (name, var) in model.trainable_vars() {
        let g = grads.get(var.as_tensor()).unwrap();
        assert_eq!(g.dtype(), DType::BF16);
        assert!(vec1(g).iter().all(|x| x.is_finite()), "{name}");
    }
}

#[test]
fn a_batch_whose_features_do_not_fit_is_an_error() {
    let exp = expected();
    let (model, processor) = load("llava-tiny", DType::F32, Trainable::Frozen);
    let mut b = batch(&processor, &exp);
    b.images = Images::Features(Tensor::zeros((2, 16, 32), DType::F32, model.device()).unwrap());
    let e = model.pair_logps_no_grad(&b, true).unwrap_err().to_string();
    assert!(
        e.contains("[2, 16, 32]") && e.contains("[3, 16, 32]"),
        "{e}"
    );
}

/// Options the fixtures do not exercise (tied embeddings, attention and MLP biases, LoRA with a
/// trainable projector), on a random model built in memory.
#[test]
fn tied_embeddings_biases_and_lora_with_projector_on_a_random_model() {
    let text = r#"{"image_token_index": 1000, "pad_token_id": 1001, "tie_word_embeddings": true,
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        "text_config": {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 1024,
                        "attention_bias": true, "mlp_bias": true}}"#;
    let cfg = dama_llava::LlavaConfig::from_json_str(text, std::path::Path::new("inline")).unwrap();
    let encoder = dama_llava::PairEncoder::from_file(
        &fixtures().join("llava-tiny/tokenizer.json"),
        1000,
        cfg.num_image_tokens(),
    )
    .unwrap();
    let pairs = vec![
        encoder
            .encode_pair(0, "What is it?", "A red square.", "Two dogs.")
            .unwrap(),
        encoder
            .encode_pair(1, "Colours?", "Yellow and black.", "Blue.")
            .unwrap(),
    ];
    let px = Tensor::randn(0f32, 1.0, (2, 3, 28, 28), &candle_core::Device::Cpu).unwrap();
    let batch = PairBatch {
        images: Images::Pixels(px),
        pairs,
    };
    let full = LoadOptions {
        trainable: Trainable::Full,
        ..LoadOptions::default()
    };
    let ckpt = dama_llava::random::random_weights(&cfg, 11).unwrap();
    assert!(!ckpt.contains("language_model.lm_head.weight"));
    let model = LlavaModel::from_weights(cfg.clone(), ckpt, &full).unwrap();
    assert!(
        !model
            .trainable_vars()
            .contains_key("language_model.lm_head.weight")
    );
    let sep = model.pair_logps(&batch, false).unwrap();
    let shr = model.pair_logps(&batch, true).unwrap();
    assert!(max_rel(&vec1(&sep.chosen), &vec1(&shr.chosen), 1e-3) < 1e-5);
    // a micro-batch of one pair gives that pair's numbers
    let one = model
        .pair_logps_no_grad(&batch.narrow(1, 1).unwrap(), true)
        .unwrap();
    assert!(max_rel(&vec1(&one.chosen), &vec1(&sep.chosen)[1..], 1e-3) < 1e-5);
    let grads = objective(&shr).backward().unwrap();
    for (name, var) in model.trainable_vars() {
        let g = vec1(grads.get(var.as_tensor()).unwrap());
        assert!(
            g.iter().all(|x| x.is_finite()) && g.iter().any(|&x| x != 0.0),
            "{name}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    model.save_pretrained(tmp.path()).unwrap();
    let reloaded = LlavaModel::load(tmp.path(), &LoadOptions::default()).unwrap();
    let again = reloaded.pair_logps_no_grad(&batch, false).unwrap();
    assert_eq!(vec1(&again.rejected), vec1(&sep.rejected));

    let mut lora = LoraConfig::new(2, 4.0, vec![Projection::Q, Projection::Down]);
    lora.train_projector = true;
    let opts = LoadOptions {
        trainable: Trainable::Lora(lora),
        ..LoadOptions::default()
    };
    let ckpt = dama_llava::random::random_weights(&cfg, 11).unwrap();
    let model = LlavaModel::from_weights(cfg, ckpt, &opts).unwrap();
    let names: Vec<&String> = model.trainable_vars().keys().collect();
    assert_eq!(
        names.len(),
        4 + 2 * 2 * 2,
        "projector + A, B for 2 targets in 2 layers"
    );
    assert!(
        names
            .iter()
            .any(|n| *n == "multi_modal_projector.linear_1.weight")
    );
}

//! Equality with transformers' `LlavaForConditionalGeneration` (the oracle), on the tiny random
//! models of `scripts/fixtures/llava.py`: token ids, pixel values, answer log-prob sums and
//! gradients, for every key layout transformers has written, GQA and MHA.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use dama_llava::{Images, LlavaModel, LoadOptions, PairBatch, Trainable};

/// The acceptance tolerance of the issue: 1e-4 relative, in f32.
const TOL: f32 = 1e-4;

#[test]
fn token_ids_and_answer_spans_equal_the_llava_processor() {
    let exp = expected();
    let (_, processor) = load("llava-tiny", DType::F32, Trainable::Frozen);
    for (i, c) in exp.cases.iter().enumerate() {
        let p = processor
            .encoder
            .encode_pair(i, &c.question, &c.chosen.text, &c.rejected.text)
            .unwrap();
        for (ours, theirs) in [(&p.chosen, &c.chosen), (&p.rejected, &c.rejected)] {
            assert_eq!(ours.input_ids, theirs.input_ids, "case {i}");
            assert_eq!(ours.answer_start, theirs.answer_start, "case {i}");
            assert!(!ours.boundary_merged && !ours.truncated);
        }
    }
}

#[test]
fn pixel_values_equal_the_pil_clip_processor_in_both_aspect_modes() {
    let exp = expected();
    let want = expected_tensors()["pixel_values"].clone();
    let (_, processor) = load("llava-tiny", DType::F32, Trainable::Frozen);
    let batch = batch(&processor, &exp);
    let Images::Pixels(ours) = &batch.images else {
        unreachable!()
    };
    let diff = (ours - &want).unwrap().abs().unwrap().max_all().unwrap();
    let diff = diff.to_scalar::<f32>().unwrap();
    eprintln!("pixel values: max |Δ| {diff:e}");
    assert!(diff <= 1e-6, "max |Δ pixel_values| = {diff}");
}

fn check_logps(dir: &str, model_key: &str) {
    let exp = expected();
    let want = &exp.models[model_key];
    let (model, processor) = load(dir, DType::F32, Trainable::Frozen);
    let batch = batch(&processor, &exp);
    for shared in [false, true] {
        let got = model.pair_logps_no_grad(&batch, shared).unwrap();
        let (c, r) = (vec1(&got.chosen), vec1(&got.rejected));
        let err =
            max_rel(&c, &want.chosen_logps, 1e-3).max(max_rel(&r, &want.rejected_logps, 1e-3));
        eprintln!("{dir} shared={shared}: max relative error of the log-prob sums {err:e}");
        assert!(
            err < TOL,
            "{dir} shared={shared}: {c:?} {r:?} vs {:?} {:?} (rel {err:e})",
            want.chosen_logps,
            want.rejected_logps
        );
        assert_eq!(got.chosen_tokens, want.chosen_tokens);
        assert_eq!(got.rejected_tokens, want.rejected_tokens);
    }
}

#[test]
fn logps_equal_transformers_in_the_transformers_5_layout() {
    check_logps("llava-tiny", "llava-tiny");
}

#[test]
fn logps_equal_transformers_in_the_original_llava_hf_layout() {
    check_logps("llava-tiny-legacy", "llava-tiny");
}

#[test]
fn logps_equal_transformers_in_the_in_memory_layout() {
    check_logps("llava-tiny-new", "llava-tiny");
}

#[test]
fn logps_equal_transformers_with_multi_head_attention() {
    check_logps("llava-tiny-mha", "llava-tiny-mha");
}

#[test]
fn vision_features_equal_transformers_and_can_be_passed_precomputed() {
    let exp = expected();
    let tensors = expected_tensors();
    let (model, processor) = load("llava-tiny", DType::F32, Trainable::Frozen);
    let feats = model.image_features(&tensors["pixel_values"]).unwrap();
    let want = &tensors["vision_features"];
    let (f, w) = (vec1(&feats), vec1(want));
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = f
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale;
    eprintln!("vision features: max |Δ| / max |x| = {err:e}");
    assert!(err < TOL, "vision features rel err {err:e}");
    let batch = PairBatch {
        images: Images::Features(want.clone()),
        pairs: batch(&processor, &exp).pairs,
    };
    let got = model.pair_logps_no_grad(&batch, false).unwrap();
    let err = max_rel(
        &vec1(&got.chosen),
        &exp.models["llava-tiny"].chosen_logps,
        1e-3,
    );
    assert!(err < TOL, "{err:e}");
}

#[test]
fn gradients_equal_transformers() {
    let exp = expected();
    let tensors = expected_tensors();
    let (model, processor) = load("llava-tiny", DType::F32, Trainable::Full);
    let batch = batch(&processor, &exp);
    let got = model.pair_logps(&batch, false).unwrap();
    let objective = (got.chosen.sum_all().unwrap() - got.rejected.sum_all().unwrap()).unwrap();
    let grads = objective.backward().unwrap();
    let vars = model.trainable_vars();
    let mut checked = 0;
    for (key, want) in &tensors {
        let Some(name) = key.strip_prefix("grad.") else {
            continue;
        };
        let g = grads
            .get(vars[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let (g, w) = (vec1(g), vec1(want));
        // relative to the tensor's largest entry: entries of a gradient span many magnitudes
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        eprintln!("gradient {name}: max |Δ| / max |g| = {err:e}");
        assert!(err < TOL, "{name}: max |Δ| / max |g| = {err:e}");
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn sharded_checkpoints_load_through_their_index() {
    let tmp = copy_fixture("llava-tiny");
    let dir = tmp.path();
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let shard: std::collections::HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), all[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let model = LlavaModel::load(dir, &LoadOptions::default()).unwrap();
    let exp = expected();
    let processor = dama_llava::LlavaProcessor::load(dir, model.config()).unwrap();
    let got = model
        .pair_logps_no_grad(&batch(&processor, &exp), true)
        .unwrap();
    let err = max_rel(
        &vec1(&got.rejected),
        &exp.models["llava-tiny"].rejected_logps,
        1e-3,
    );
    assert!(err < TOL);

    // an index naming a shard that is gone
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = LlavaModel::load(dir, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn a_missing_or_misshaped_tensor_is_an_error_naming_it() {
    for (edit, needle) in [
        (
            "drop",
            "missing tensor `language_model.model.layers.1.mlp.up_proj.weight`",
        ),
        (
            "reshape",
            "tensor `language_model.model.layers.1.mlp.up_proj.weight` has shape [36, 64], expected [72, 32]",
        ),
        (
            "drop_vision",
            "vision_tower.encoder.layers.1.mlp.fc1.weight",
        ),
    ] {
        let tmp = copy_fixture("llava-tiny");
        let path = tmp.path().join("model.safetensors");
        let mut all = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        match edit {
            "drop" => {
                all.remove("language_model.model.layers.1.mlp.up_proj.weight");
            }
            "reshape" => {
                let k = "language_model.model.layers.1.mlp.up_proj.weight".to_string();
                let t = all[&k].reshape((36, 64)).unwrap();
                all.insert(k, t);
            }
            _ => {
                all.remove("vision_tower.encoder.layers.1.mlp.fc1.weight");
            }
        }
        candle_core::safetensors::save(&all, &path).unwrap();
        let e = LlavaModel::load(tmp.path(), &LoadOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(needle) && e.contains("model.safetensors"),
            "{edit}: {e}"
        );
    }
}

//! SFT of a tiny LLaVA on a small world's true descriptions: the loss falls, the held-out
//! descriptions' loss falls, and on held-out images the true description gains log-prob over
//! the hallucinated one (the answer-only batches score exactly what a pair's chosen side does).

use candle_core::Device;
use dama_clip::train::preprocessor_config;
use dama_clip::{TinyClipSpec, TrainableClip, word_level_tokenizer_json};
use dama_llava::random::{TinySpec, write_llava_from_clip};
use dama_llava::{EncodedPair, LlavaModel, LoadOptions};
use dama_train::prepare::load_processor;
use dama_train::sft::answer_loss;
use dama_train::{DataOptions, ReferencePass, SftConfig, Silent, TrainData, reference_logps, sft};
use dama_world::{World, WorldSpec, vocabulary, write_pairs};

#[test]
fn sft_learns_true_descriptions() {
    let size = 32;
    let world = World::build(&WorldSpec {
        train: 192,
        preference: 0,
        heldout: 48,
        image_size: size as u32,
        seed: 3,
    });
    let dir = tempfile::tempdir().unwrap();
    // The vision tower of a CLIP of the world's shape (random: SFT does not train it).
    let clip_spec = TinyClipSpec {
        vocab_size: vocabulary().len() + 3,
        max_positions: 16,
        text_hidden: 32,
        text_layers: 1,
        vision_hidden: 32,
        vision_layers: 2,
        heads: 4,
        image_size: size,
        patch_size: 8,
        projection_dim: 32,
    };
    let clip_dir = dir.path().join("clip");
    TrainableClip::random(&clip_spec.config(), 1, &Device::Cpu)
        .unwrap()
        .save(
            &clip_dir,
            &word_level_tokenizer_json(&vocabulary()),
            &preprocessor_config(size).to_string(),
        )
        .unwrap();
    let init = dir.path().join("init");
    write_llava_from_clip(&init, &clip_dir, &TinySpec::default(), 0).unwrap();
    let data_dir = dir.path().join("data");
    let train = write_pairs(&data_dir, "train", &world.pairs(&world.train, "train")).unwrap();
    let held = write_pairs(
        &data_dir,
        "heldout",
        &world.pairs(&world.heldout, "heldout"),
    )
    .unwrap();

    let cfg = SftConfig {
        epochs: 20,
        batch_size: 32,
        micro_batch: 16,
        lr: 3e-3,
        warmup_ratio: 0.05,
        max_length: Some(512),
        ..SftConfig::llava(init.clone(), train)
    };
    let out = dir.path().join("sft");
    let summary = sft(&cfg, &out, &Device::Cpu, &Silent).unwrap();
    assert_eq!(summary.steps.len(), 20 * 6);
    let (first, last) = (summary.steps[0].loss, summary.steps.last().unwrap().loss);
    assert!(last < 0.4 * first, "loss {first:.3} → {last:.3}");
    // A second run into the same folder is refused, naming it.
    let err = sft(&cfg, &out, &Device::Cpu, &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a fine-tuned model"), "{err}");

    let (processor, _) = load_processor(&summary.final_dir, true, Some(512)).unwrap();
    let data = TrainData::load(&held, &processor, DataOptions::default()).unwrap();
    let (before, after) = (
        answer_loss(&init, &data, &cfg, &Device::Cpu).unwrap(),
        answer_loss(&summary.final_dir, &data, &cfg, &Device::Cpu).unwrap(),
    );
    assert!(
        after < 0.5 * before,
        "held-out loss {before:.3} → {after:.3}"
    );

    let gaps = |model: &std::path::Path, name: &str| -> Vec<f32> {
        let cache = dir.path().join(format!("{name}.jsonl"));
        let pass = ReferencePass {
            model_dir: model,
            max_length: Some(512),
            cache: &cache,
            device: &Device::Cpu,
            dtype: candle_core::DType::F32,
            batch: 16,
            shared_prefix: true,
        };
        let l = reference_logps(&pass, &data, &processor, &Silent).unwrap();
        l.chosen
            .iter()
            .zip(&l.rejected)
            .map(|(c, r)| c - r)
            .collect()
    };
    // Pairs whose rejected answer has as many sentences as the chosen one (an attribute made
    // false, no sentence added): their log-probs compare answers of about the same length.
    let same_length: Vec<usize> = (0..data.pairs.len())
        .filter(|&i| {
            let s = data.pairs[i].chosen.matches('.').count();
            s == data.pairs[i].rejected.matches('.').count()
        })
        .collect();
    assert!(same_length.len() >= 10, "{}", same_length.len());
    let share = |g: &[f32]| {
        same_length.iter().filter(|&&i| g[i] > 0.0).count() as f64 / same_length.len() as f64
    };
    let (g0, g1) = (gaps(&init, "init"), gaps(&summary.final_dir, "sft"));
    let (a0, a1) = (share(&g0), share(&g1));
    assert!(
        a1 >= 0.75 && a1 > a0 + 0.15,
        "true beats hallucinated: {a0:.2} → {a1:.2}"
    );

    // An answer-only batch scores the answer exactly as its pair's chosen side.
    let model = LlavaModel::load(&summary.final_dir, &LoadOptions::default()).unwrap();
    let mut b = data.batch(&[0, 1, 2], &processor, &Device::Cpu).unwrap();
    let pairs = model.pair_logps_no_grad(&b, true).unwrap();
    b.pairs = b
        .pairs
        .iter()
        .map(|p| EncodedPair::answer_only(p.chosen.clone()))
        .collect();
    let alone = model.pair_logps_no_grad(&b, true).unwrap();
    let (p, a) = (
        pairs.chosen.to_vec1::<f32>().unwrap(),
        alone.chosen.to_vec1::<f32>().unwrap(),
    );
    for (x, y) in p.iter().zip(&a) {
        assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "{x} vs {y}");
    }
    assert_eq!(alone.rejected.to_vec1::<f32>().unwrap(), [0.0; 3]);
    assert_eq!(alone.rejected_tokens, [0; 3]);
}

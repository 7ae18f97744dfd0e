//! A tiny CLIP trained on a small world: the loss falls, and on held-out images a sentence of
//! the image scores higher than another image's sentence that is false of it; saved in the
//! Hugging Face layout, it scores through `ClipScorer` (the `score` command's path) as it
//! trained.

use candle_core::{DType, Device};
use dama_clip::train::preprocessor_config;
use dama_clip::{
    ClipScorer, ClipTokenizer, ImageProcessor, TinyClipSpec, TrainableClip,
    word_level_tokenizer_json,
};
use dama_train::{ClipTrainConfig, ClipTrainData, Silent, train_clip};
use dama_world::{World, WorldSpec, count_hallucinations, vocabulary};

#[test]
fn clip_learns_the_world() {
    let size = 32;
    let world = World::build(&WorldSpec {
        train: 768,
        preference: 0,
        heldout: 96,
        image_size: size as u32,
        seed: 11,
    });
    let spec = TinyClipSpec {
        vocab_size: vocabulary().len() + 3,
        max_positions: 16,
        text_hidden: 32,
        text_layers: 2,
        vision_hidden: 32,
        vision_layers: 2,
        heads: 4,
        image_size: size,
        patch_size: 8,
        projection_dim: 32,
    };
    let tokenizer_json = word_level_tokenizer_json(&vocabulary());
    let pre_json = preprocessor_config(size).to_string();
    let tokenizer = ClipTokenizer::from_bytes("words", tokenizer_json.as_bytes()).unwrap();
    let processor = ImageProcessor::from_json("pre", pre_json.as_bytes()).unwrap();
    let decode = |split: &[dama_world::Example]| -> Vec<image::DynamicImage> {
        split
            .iter()
            .map(|e| dama_data::decode_rgb(&e.image).unwrap())
            .collect()
    };
    let images = decode(&world.train);
    let captions = world.captions();
    let data = ClipTrainData::new(
        &images,
        &processor,
        &tokenizer,
        captions
            .iter()
            .map(|c| (c.image, c.text.as_str(), Some(c.negative.as_str()))),
        &Device::Cpu,
    )
    .unwrap();
    let model = TrainableClip::random(&spec.config(), 0, &Device::Cpu).unwrap();
    let cfg = ClipTrainConfig {
        epochs: 8,
        batch_size: 96,
        lr: 3e-3,
        warmup_ratio: 0.1,
        weight_decay: 0.0,
        max_grad_norm: Some(1.0),
        seed: 0,
    };
    let steps = train_clip(&model, &data, &cfg, "clip", &Silent).unwrap();
    let mean =
        |xs: &[dama_train::ClipStep]| xs.iter().map(|s| s.loss).sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&steps[..4]), mean(&steps[steps.len() - 4..]));
    // Not towards 0: a sentence true of many images ("the background is blue") has them all as
    // positives, which puts the loss's floor near 4 here.
    assert!(last < 0.85 * first, "loss {first:.3} → {last:.3}");

    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path(), &tokenizer_json, &pre_json).unwrap();
    let scorer = ClipScorer::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let held = decode(&world.heldout);
    let refs: Vec<&image::DynamicImage> = held.iter().collect();
    // For each held-out image: its first sentence, and the first sentence of the next image
    // that is false of it.
    let mut texts = Vec::new();
    for (i, e) in world.heldout.iter().enumerate() {
        let other = &world.heldout[(i + 1) % world.heldout.len()];
        let wrong = other
            .sentences()
            .into_iter()
            .find(|s| {
                let h = count_hallucinations(s, &e.scene);
                h.hallucinated + h.false_statements > 0
            })
            .unwrap_or_else(|| panic!("{other:?} says something false of {e:?}"));
        texts.push((e.sentences()[0].clone(), wrong));
    }
    let mut wins = 0;
    for (i, (right, wrong)) in texts.iter().enumerate() {
        let s = scorer
            .score_pair(refs[i], &[right.as_str()], &[wrong.as_str()])
            .unwrap();
        wins += usize::from(s.chosen[0] > s.rejected[0]);
    }
    let share = wins as f64 / texts.len() as f64;
    assert!(
        share >= 0.7,
        "matched beat mismatched in {share:.2} of held-out images"
    );

    // The saved model scores as the trainable one computes.
    let px = processor.to_tensor(&refs[..4], &Device::Cpu).unwrap();
    let ids = tokenizer
        .encode_ids(&texts[..4].iter().map(|t| t.0.as_str()).collect::<Vec<_>>())
        .unwrap();
    let trained = model
        .logits(
            &model.image_embeds(&px).unwrap(),
            &model.text_embeds(&ids).unwrap(),
        )
        .unwrap();
    let loaded = scorer
        .model
        .logits_from_embeds(
            &scorer.image_embeds(&refs[..4]).unwrap(),
            &scorer.text_embeds_ids(&ids).unwrap(),
        )
        .unwrap();
    let diff = (trained - loaded)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-3, "{diff}");
}

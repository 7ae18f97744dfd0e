//! Forward + backward of a preference-pair batch, with and without the shared prefix, on the
//! tiny fixture model and on a ~100M-parameter LLaMA-shaped random model (generated in memory).
//!
//! ```text
//! cargo run -p dama-llava --release --example bench_pair -- [--model tiny|100m|all] [--iters N] [--pairs B] [--lora]
//! ```
//!
//! The 100M model sees LLaVA-1.5's real sequence shape: 576 image tokens, the vicuna_v1 prompt,
//! answers of about a hundred tokens. Its vision tower is a one-layer stand-in, run once
//! outside the timed region (it is frozen and identical in both layouts); what is timed is the
//! projector, the language model and the log-prob head, forward and backward. A second table
//! times the shared-prefix layout with the decoder layers' gradients from candle's autograd and
//! from their hand-written backward.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use dama_llava::{
    Images, LayerBackward, LlavaConfig, LlavaModel, LlavaProcessor, LoadOptions, LoraConfig,
    PairBatch, PairEncoder, PairExample, Projection, Trainable, random::random_weights,
};

const ANSWER_WORDS: &str = "The image shows a small kitchen with a white table near the window . \
    Two red apples and a cup of coffee are on the table , and a black cat sits on a chair \
    on the left . The wall is yellow and the floor is made of wood . Through the window we can \
    see a green garden with many flowers , a tall tree and a blue sky with a few white clouds . \
    A lamp hangs from the ceiling and a clock on the wall shows nine in the morning . There is \
    also a bowl of bread , an open book and a pair of glasses next to the cup .";

struct Args {
    model: String,
    iters: usize,
    pairs: usize,
    /// LoRA (rank 64 on every projection) instead of full fine-tuning.
    lora: bool,
}

fn args() -> Args {
    let mut a = Args {
        model: "all".into(),
        iters: 3,
        pairs: 1,
        lora: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--model" => a.model = val,
            "--iters" => a.iters = val.parse().expect("--iters N"),
            "--pairs" => a.pairs = val.parse().expect("--pairs B"),
            "--lora" => {
                a.lora = true;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// One forward + backward: (forward seconds, backward seconds).
fn step(model: &LlavaModel, batch: &PairBatch, shared: bool) -> (f64, f64) {
    let t0 = Instant::now();
    let l = model.pair_logps(batch, shared).unwrap();
    let loss = (l.chosen.sum_all().unwrap() - l.rejected.sum_all().unwrap()).unwrap();
    let _ = loss.to_scalar::<f32>().unwrap();
    let t1 = Instant::now();
    drop(loss.backward().unwrap());
    (
        t1.duration_since(t0).as_secs_f64(),
        t1.elapsed().as_secs_f64(),
    )
}

/// Fastest (forward, backward) seconds of each setting over `iters` runs after a warm-up:
/// `(shared prefix, layer backward)`. The settings alternate and the minimum is kept, so that
/// load from other processes on a shared machine distorts the ratio as little as possible.
fn time(
    model: &mut LlavaModel,
    batch: &PairBatch,
    iters: usize,
    settings: [(bool, LayerBackward); 2],
) -> [(f64, f64); 2] {
    let mut runs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for i in 0..=iters {
        for (k, (shared, mode)) in settings.into_iter().enumerate() {
            model.set_layer_backward(mode);
            let r = step(model, batch, shared);
            if i > 0 {
                runs[k].push(r);
            }
        }
    }
    model.set_layer_backward(LayerBackward::default());
    runs.map(|v| {
        let min = |x: Vec<f64>| x.into_iter().fold(f64::INFINITY, f64::min);
        (
            min(v.iter().map(|r| r.0).collect()),
            min(v.iter().map(|r| r.1).collect()),
        )
    })
}

fn report(name: &str, model: &mut LlavaModel, batch: &PairBatch, iters: usize) {
    let params: usize = model
        .trainable_vars()
        .values()
        .map(|v| v.as_tensor().elem_count())
        .sum();
    let tokens = |shared: bool| {
        let l = dama_llava::layout::Layout::build(
            &batch.pairs,
            shared,
            model.config().image_token_id,
            0,
        )
        .unwrap();
        (l.tokens(), l.score_positions.len())
    };
    let (ts, scored) = tokens(false);
    let (tp, _) = tokens(true);
    println!(
        "{name}: {:.1}M trainable parameters, {} pair(s), {scored} scored tokens; tokens through the LM: separate {ts}, shared prefix {tp}",
        params as f64 / 1e6,
        batch.pairs.len()
    );
    let manual = LayerBackward::Manual;
    let [(sf, sb), (pf, pb)] = time(model, batch, iters, [(false, manual), (true, manual)]);
    println!(
        "  separate      : forward {:8.1} ms  backward {:8.1} ms  total {:8.1} ms",
        sf * 1e3,
        sb * 1e3,
        (sf + sb) * 1e3
    );
    println!(
        "  shared prefix : forward {:8.1} ms  backward {:8.1} ms  total {:8.1} ms",
        pf * 1e3,
        pb * 1e3,
        (pf + pb) * 1e3
    );
    println!(
        "  ratio separate / shared: {:.2}x (forward {:.2}x, backward {:.2}x)",
        (sf + sb) / (pf + pb),
        sf / pf,
        sb / pb
    );
    let [(af, ab), (mf, mb)] = time(
        model,
        batch,
        iters,
        [(true, LayerBackward::Autograd), (true, manual)],
    );
    println!(
        "  decoder layers through candle's autograd: forward {:8.1} ms  backward {:8.1} ms  total {:8.1} ms",
        af * 1e3,
        ab * 1e3,
        (af + ab) * 1e3
    );
    println!(
        "  decoder layers with the hand-written backward: forward {:8.1} ms  backward {:8.1} ms  total {:8.1} ms",
        mf * 1e3,
        mb * 1e3,
        (mf + mb) * 1e3
    );
    println!(
        "  ratio autograd / hand-written: {:.2}x (forward {:.2}x, backward {:.2}x)",
        (af + ab) / (mf + mb),
        af / mf,
        ab / mb
    );
}

/// Full fine-tuning, or LoRA rank 64 (α 16) on every projection of the language model.
fn trainable(a: &Args) -> Trainable {
    if !a.lora {
        return Trainable::Full;
    }
    let targets = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    .iter()
    .map(|t| Projection::parse(t).unwrap())
    .collect();
    Trainable::Lora(LoraConfig::new(64, 16.0, targets))
}

fn tiny(a: &Args) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava-tiny");
    let opts = LoadOptions {
        trainable: trainable(a),
        ..LoadOptions::default()
    };
    let mut model = LlavaModel::load(&dir, &opts).unwrap();
    let processor = LlavaProcessor::load(&dir, model.config()).unwrap();
    let image = image::open(dir.join("../images/red_square.png")).unwrap();
    let words: Vec<&str> = ANSWER_WORDS.split(' ').collect();
    let chosen = words[..60].join(" ");
    let rejected = words[20..90].join(" ");
    let examples: Vec<PairExample<'_>> = (0..a.pairs)
        .map(|_| PairExample {
            image: &image,
            question: "Describe the image in detail.",
            chosen: &chosen,
            rejected: &rejected,
        })
        .collect();
    let mut batch = processor.batch(&examples, &Device::Cpu).unwrap();
    if let Images::Pixels(px) = &batch.images {
        batch.images = Images::Features(model.image_features(px).unwrap());
    }
    report(
        "tiny fixture model (16 image tokens)",
        &mut model,
        &batch,
        a.iters,
    );
}

fn hundred_m(a: &Args) {
    // LLaMA-shaped: 12 layers of width 640, SwiGLU 1728, vocab 32064 (LLaVA's), untied head.
    let config = serde_json::json!({
        "model_type": "llava",
        "image_token_index": 1000,
        "pad_token_id": 1001,
        "vision_feature_layer": -2,
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "image_size": 336, "patch_size": 14},
        "text_config": {"model_type": "llama", "hidden_size": 640, "intermediate_size": 1728,
                        "num_hidden_layers": 12, "num_attention_heads": 10,
                        "num_key_value_heads": 10, "vocab_size": 32064, "rms_norm_eps": 1e-5}
    });
    let cfg = LlavaConfig::from_json_str(&config.to_string(), Path::new("bench config")).unwrap();
    let t0 = Instant::now();
    let ckpt = random_weights(&cfg, 7).unwrap();
    let opts = LoadOptions {
        trainable: trainable(a),
        ..LoadOptions::default()
    };
    let mut model = LlavaModel::from_weights(cfg, ckpt, &opts).unwrap();
    eprintln!(
        "random 100M model built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // The fixture's small LLaMA-style tokenizer: its ids are valid in any larger vocabulary.
    let tok =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava-tiny/tokenizer.json");
    let encoder = PairEncoder::from_file(&tok, 1000, model.config().num_image_tokens()).unwrap();
    let words: Vec<&str> = ANSWER_WORDS.split(' ').collect();
    let chosen = words[..75].join(" ");
    let rejected = words[15..95].join(" ");
    let pairs = (0..a.pairs)
        .map(|i| {
            encoder
                .encode_pair(i, "Describe the image in detail.", &chosen, &rejected)
                .unwrap()
        })
        .collect();
    let px = Tensor::randn(0f32, 1.0, (a.pairs, 3, 336, 336), &Device::Cpu).unwrap();
    let t1 = Instant::now();
    let features = model.image_features(&px).unwrap();
    eprintln!(
        "stand-in vision tower: {:.1} ms (frozen, outside the timed region)",
        t1.elapsed().as_secs_f64() * 1e3
    );
    let batch = PairBatch {
        images: Images::Features(features.to_dtype(DType::F32).unwrap()),
        pairs,
    };
    report(
        "~100M LLaMA-shaped model (576 image tokens)",
        &mut model,
        &batch,
        a.iters,
    );
}

fn main() {
    let a = args();
    if a.model == "tiny" || a.model == "all" {
        tiny(&a);
    }
    if a.model == "100m" || a.model == "all" {
        hundred_m(&a);
    }
}

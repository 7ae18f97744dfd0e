//! The cached decoding against recomputing every sequence whole through the training path
//! (`Llama::forward` with its fused attention and a causal mask), on a small random model:
//! left padding, beams sharing a prefix, reordering and questions leaving the batch.

use candle_core::{DType, Device, Tensor};
use dama_kernels::AttnMask;

use super::session::{Session, host_rows};
use super::*;
use crate::llama::AttentionInputs;
use crate::params::Grad;
use crate::random::random_weights;
use crate::{LlavaConfig, LoadOptions, ops};

const IMAGE: u32 = 60;

fn model() -> LlavaModel {
    let text = r#"{"image_token_index": 60, "pad_token_id": 0,
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        "text_config": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64}}"#;
    let cfg = LlavaConfig::from_json_str(text, std::path::Path::new("inline")).unwrap();
    let ckpt = random_weights(&cfg, 11).unwrap();
    LlavaModel::from_weights(cfg, ckpt, &LoadOptions::default()).unwrap()
}

/// `<s>`, the image, then `extra` text tokens.
fn prompt(m: &LlavaModel, extra: &[u32]) -> Vec<u32> {
    let mut ids = vec![1];
    ids.extend(std::iter::repeat_n(IMAGE, m.config().num_image_tokens()));
    ids.extend(extra);
    ids
}

fn features(m: &LlavaModel, n: usize, seed: u64) -> Tensor {
    let cfg = m.config();
    let mut rng = dama_core::Xoshiro256::seed_from(seed);
    let len = n * cfg.num_image_tokens() * cfg.projector_in();
    let v: Vec<f32> = (0..len)
        .map(|_| (2.0 * rng.open01() - 1.0) as f32)
        .collect();
    Tensor::from_vec(
        v,
        (n, cfg.num_image_tokens(), cfg.projector_in()),
        &Device::Cpu,
    )
    .unwrap()
}

/// Next-token logits after every position of `ids` (one sequence, its image `features`
/// `(1, np, in)`), from the whole sequence at once.
fn full_logits(m: &LlavaModel, ids: &[u32], features: &Tensor) -> Vec<Vec<f32>> {
    let n = ids.len();
    let np = m.config().num_image_tokens();
    let mut tokens = ids.to_vec();
    let mut image_rows = Vec::new();
    for (i, t) in tokens.iter_mut().enumerate() {
        if *t == IMAGE {
            image_rows.push((i, image_rows.len()));
            *t = m.pad_token();
        }
    }
    assert_eq!(image_rows.len(), np);
    let x = m
        .embed_with_images(tokens, &image_rows, features, Grad::Off)
        .unwrap();
    let positions: Vec<u32> = (0..n as u32).collect();
    let hd = m.config().text.head_dim;
    let (cos, sin) = ops::rope_tables(&positions, &m.inv_freq, DType::F32, &Device::Cpu).unwrap();
    let att = AttentionInputs {
        rows: 1,
        seq_len: n,
        cos: cos.reshape((1, 1, n, hd)).unwrap(),
        sin: sin.reshape((1, 1, n, hd)).unwrap(),
        mask: AttnMask::causal(n, &[n]).unwrap(),
    };
    let h = m.llama.forward(&x, &att, Grad::Off).unwrap();
    host_rows(&m.llama.logits(&h).unwrap()).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TOL: f32 = 2e-5;

#[test]
fn cached_steps_equal_the_whole_sequence_with_left_padding() {
    let m = model();
    let prompts = [prompt(&m, &[5, 9, 12, 7, 3]), prompt(&m, &[8])];
    let f = features(&m, 2, 3);
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let (mut s, logits) = Session::prefill(&m, &refs, &f, 8).unwrap();
    let forced = [[10u32, 20], [11, 21], [12, 22], [13, 23]];
    let mut got = vec![host_rows(&logits).unwrap()];
    for t in forced {
        got.push(host_rows(&s.step(&t).unwrap()).unwrap());
    }
    for (r, p) in prompts.iter().enumerate() {
        let mut ids = p.clone();
        ids.extend(forced.iter().map(|t| t[r]));
        let full = full_logits(&m, &ids, &f.narrow(0, r, 1).unwrap());
        for (step, rows) in got.iter().enumerate() {
            let want = &full[p.len() - 1 + step];
            let err = max_abs(&rows[r], want);
            assert!(err < TOL, "row {r} step {step}: {err:e}");
        }
    }
}

#[test]
fn beams_share_the_prefix_and_follow_their_parents() {
    let m = model();
    let prompts = [prompt(&m, &[5, 9]), prompt(&m, &[8, 4, 4])];
    let f = features(&m, 2, 4);
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let (mut s, _) = Session::prefill(&m, &refs, &f, 8).unwrap();
    s.set_beams(3).unwrap();
    // history per row (question-major, 3 beams each)
    let mut hist: Vec<Vec<u32>> = (0..6).map(|_| Vec::new()).collect();
    let feed = |s: &mut Session, hist: &mut Vec<Vec<u32>>, t: &[u32]| {
        for (h, &x) in hist.iter_mut().zip(t) {
            h.push(x);
        }
        host_rows(&s.step(t).unwrap()).unwrap()
    };
    feed(&mut s, &mut hist, &[10, 11, 12, 20, 21, 22]);
    feed(&mut s, &mut hist, &[30, 31, 32, 40, 41, 42]);
    // beams change parents: question 0's rows continue 2, 2, 0; question 1's 4, 3, 3
    let sources = [2u32, 2, 0, 4, 3, 3];
    s.reorder(&sources).unwrap();
    hist = sources.iter().map(|&i| hist[i as usize].clone()).collect();
    let rows = feed(&mut s, &mut hist, &[50, 51, 52, 53, 54, 55]);
    for (r, h) in hist.iter().enumerate() {
        let q = r / 3;
        let mut ids = prompts[q].clone();
        ids.extend(h);
        let full = full_logits(&m, &ids, &f.narrow(0, q, 1).unwrap());
        let err = max_abs(&rows[r], full.last().unwrap());
        assert!(err < TOL, "row {r}: {err:e}");
    }
    // a row may not continue another question's beam
    assert!(s.reorder(&[3, 1, 2, 0, 4, 5]).is_err());
    // question 0 leaves; question 1 goes on alone
    s.retain(&[1]).unwrap();
    hist.drain(..3);
    let rows = feed(&mut s, &mut hist, &[60 - 1, 2, 3]);
    for (r, h) in hist.iter().enumerate() {
        let mut ids = prompts[1].clone();
        ids.extend(h);
        let full = full_logits(&m, &ids, &f.narrow(0, 1, 1).unwrap());
        let err = max_abs(&rows[r], full.last().unwrap());
        assert!(err < TOL, "after retain, row {r}: {err:e}");
    }
}

fn run(m: &LlavaModel, prompts: &[Prompt], f: &Tensor, strategy: Strategy) -> Vec<Generation> {
    let cfg = GenerateConfig {
        strategy,
        eos_token_ids: vec![2],
    };
    m.generate(prompts, &Images::Features(f.clone()), &cfg, &mut |_| {})
        .unwrap()
}

#[test]
fn a_batch_gives_each_prompt_its_answer_alone_in_every_strategy() {
    let m = model();
    let prompts = vec![
        Prompt::new(prompt(&m, &[5, 9, 12, 7]), 6),
        Prompt::new(prompt(&m, &[8]), 9),
        Prompt::new(prompt(&m, &[3, 3]), 4),
    ];
    let f = features(&m, 3, 5);
    let sampling = SampleConfig {
        temperature: 0.8,
        top_k: Some(20),
        top_p: Some(0.9),
        seed: 17,
    };
    for strategy in [
        Strategy::Greedy,
        Strategy::Beam {
            num_beams: 3,
            length_penalty: 1.0,
        },
        Strategy::Sample(sampling),
    ] {
        let batch = run(&m, &prompts, &f, strategy);
        for (i, p) in prompts.iter().enumerate() {
            let alone = run(
                &m,
                std::slice::from_ref(p),
                &f.narrow(0, i, 1).unwrap(),
                strategy,
            );
            assert_eq!(batch[i].tokens, alone[0].tokens, "{strategy:?} prompt {i}");
            assert_eq!(batch[i].finish, alone[0].finish);
            assert!((batch[i].score - alone[0].score).abs() < 1e-4);
            assert!(batch[i].tokens.len() <= p.max_new_tokens);
        }
    }
}

#[test]
fn sampling_repeats_by_seed_and_top_k_1_is_greedy() {
    let m = model();
    let prompts = vec![
        Prompt::new(prompt(&m, &[5, 9]), 12),
        Prompt {
            seed: 1,
            ..Prompt::new(prompt(&m, &[7]), 12)
        },
    ];
    let f = features(&m, 2, 6);
    let s = |seed, top_k| {
        Strategy::Sample(SampleConfig {
            temperature: 1.5,
            top_k,
            top_p: None,
            seed,
        })
    };
    let a = run(&m, &prompts, &f, s(3, None));
    assert_eq!(a, run(&m, &prompts, &f, s(3, None)));
    let others: Vec<_> = (4..8)
        .map(|seed| run(&m, &prompts, &f, s(seed, None)))
        .collect();
    assert!(others.iter().any(|o| o[0].tokens != a[0].tokens));
    let greedy = run(&m, &prompts, &f, Strategy::Greedy);
    assert_eq!(
        run(&m, &prompts, &f, s(9, Some(1)))
            .iter()
            .map(|g| &g.tokens)
            .collect::<Vec<_>>(),
        greedy.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
}

#[test]
fn bad_settings_are_refused() {
    let m = model();
    let f = features(&m, 1, 1);
    let cfg = |strategy| GenerateConfig {
        strategy,
        eos_token_ids: vec![2],
    };
    let p = [Prompt::new(prompt(&m, &[5]), 4)];
    let images = Images::Features(f);
    let sample = |temperature, top_p| {
        Strategy::Sample(SampleConfig {
            temperature,
            top_k: None,
            top_p,
            seed: 0,
        })
    };
    for s in [
        sample(0.0, None),
        sample(1.0, Some(0.0)),
        Strategy::Beam {
            num_beams: 0,
            length_penalty: 1.0,
        },
    ] {
        assert!(
            m.generate(&p, &images, &cfg(s), &mut |_| {}).is_err(),
            "{s:?}"
        );
    }
    let no_image = [Prompt::new(vec![1, 5, 6], 4)];
    let e = m
        .generate(&no_image, &images, &cfg(Strategy::Greedy), &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("image tokens"), "{e}");
}

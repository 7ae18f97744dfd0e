//! Γ scores of pairs: equal to transformers' `logits_per_image` for the same image and texts,
//! independent of batching, grouping and deduplication; then δ through dama-core.

mod common;

use candle_core::{DType, Device};
use common::*;
use dama_clip::{ClipScorer, PairInput, PairScores, ScorerOptions};

fn scorer() -> ClipScorer {
    ClipScorer::load(&tiny_dir(), &Device::Cpu, DType::F32).unwrap()
}

fn texts() -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        single: Vec<Single>,
    }
    #[derive(serde::Deserialize)]
    struct Single {
        text: String,
    }
    let t: Tokens =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap())
            .unwrap();
    t.single.into_iter().map(|s| s.text).collect()
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn pair_scores_are_logits_per_image() {
    // The image of row 0 (a PNG: decoded exactly like PIL) against all fixture texts, split into
    // "chosen" and "rejected": transformers' logits_per_image row.
    let s = scorer();
    let texts = texts();
    let want: Vec<f32> = expect("model.logits_per_image")
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let (chosen, rejected) = texts.split_at(7);
    let got = s
        .score_pair(&open_image(IMAGES[0]), chosen, rejected)
        .unwrap();
    assert!(
        close(&got.chosen, &want[..7], 1e-4),
        "{:?} vs {:?}",
        got.chosen,
        &want[..7]
    );
    assert!(
        close(&got.rejected, &want[7..], 1e-4),
        "{:?} vs {:?}",
        got.rejected,
        &want[7..]
    );
}

#[test]
fn batching_grouping_and_dedup_do_not_change_scores() {
    let s = scorer();
    let texts = texts();
    let images: Vec<_> = IMAGES.iter().map(|n| open_image(n)).collect();
    // Pairs of varied sizes, some sharing sentences (in-pair and across pairs), one empty side,
    // one pair with nothing at all.
    let spans: [(&[String], &[String]); 6] = [
        (&texts[0..3], &texts[3..5]),
        (&texts[2..9], &texts[2..4]),
        (&texts[10..11], &texts[0..0]),
        (&texts[0..0], &texts[0..0]),
        (&texts[11..19], &texts[5..6]),
        (&texts[16..18], &texts[16..18]),
    ];
    let pairs: Vec<PairInput<'_, String>> = spans
        .iter()
        .enumerate()
        .map(|(i, (c, r))| PairInput {
            image: &images[i],
            chosen: c,
            rejected: r,
        })
        .collect();
    let alone: Vec<PairScores> = pairs
        .iter()
        .map(|p| s.score_pair(p.image, p.chosen, p.rejected).unwrap())
        .collect();
    assert_eq!(
        alone[3],
        PairScores {
            chosen: vec![],
            rejected: vec![]
        }
    );
    assert_eq!(alone[2].rejected.len(), 0);
    for opts in [
        ScorerOptions::default(),
        ScorerOptions {
            pairs_per_batch: 4,
            max_texts_per_batch: 3,
            batch_overhead_tokens: 0,
        },
        ScorerOptions {
            pairs_per_batch: 1,
            max_texts_per_batch: 64,
            batch_overhead_tokens: 10_000,
        },
    ] {
        let mut s2 = scorer();
        s2.options = opts;
        let batched = s2.score_pairs(&pairs).unwrap();
        assert_eq!(batched.len(), pairs.len());
        for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
            assert!(
                close(&a.chosen, &b.chosen, 1e-4) && close(&a.rejected, &b.rejected, 1e-4),
                "{opts:?} pair {i}"
            );
        }
    }
    // A sentence shared by both answers scores the same on both sides.
    assert_eq!(alone[5].chosen, alone[5].rejected);
}

#[test]
fn text_embeds_keep_input_order() {
    let s = scorer();
    let ids = s.tokenizer.encode_ids(&texts()).unwrap();
    let got = s.text_embeds_ids(&ids).unwrap();
    assert_close(
        "grouped text embeds",
        &got,
        expect("model.text_embeds"),
        1e-4,
    );
}

#[test]
fn scores_feed_dama_core_delta() {
    let s = scorer();
    let t = texts();
    let sc = s
        .score_pair(&open_image("rgb_exact"), &t[0..3], &t[3..6])
        .unwrap();
    let h = dama_core::data_aware::delta(
        &sc.chosen,
        &sc.rejected,
        dama_core::data_aware::Estimator::Probs,
    )
    .unwrap();
    assert!((-1.0..=1.0).contains(&h.delta));
    // And the same Γ from the model's own logits.
    let m = &s.model;
    let pv = s
        .processor
        .to_tensor(&[&open_image("rgb_exact")], &Device::Cpu)
        .unwrap();
    let ids = s
        .tokenizer
        .encode_batch_tensor(&t[0..3], &Device::Cpu)
        .unwrap();
    let want: Vec<f32> = m
        .logits_per_image(&pv, &ids)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(close(&sc.chosen, &want, 1e-4));
}

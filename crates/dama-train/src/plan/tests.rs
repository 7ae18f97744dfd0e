//! The planner's arithmetic on LLaVA-1.5-7B's config.json: parameter counts, the model states
//! of every optimizer layout and ZeRO stage (ZeRO's 16Ψ accounting), LoRA, the
//! activation model's scaling, and the suggestions.

use super::*;
use crate::config::LoraSettings;

fn llava7b() -> LlavaConfig {
    LlavaConfig::from_json_str(
        include_str!("configs/llava-1.5-7b.json"),
        std::path::Path::new("llava-1.5-7b.json"),
    )
    .unwrap()
}

fn settings() -> PlanSettings {
    PlanSettings {
        precision: Precision::Bf16,
        master: OptimMaster::F32,
        state: OptimState::F32,
        lora: None,
        batch_size: 4,
        micro_batch: 4,
        sequence: Sequence {
            prefix: 640,
            answer: 192,
        },
        shared_prefix: true,
        recompute_activations: false,
        world_size: 1,
        zero: ZeroStage::Zero0,
        reference_resident: false,
        cuda: true,
    }
}

#[test]
fn seven_b_counts_and_model_states() {
    let cfg = llava7b();
    let p = plan(&cfg, &settings()).unwrap();
    let psi = p.params.trainable;
    // projector (21 M) + language model (6.74 B); the vision tower (303 M) is frozen
    assert!((6.75e9..6.77e9).contains(&(psi as f64)), "{psi}");
    assert!((7.05e9..7.07e9).contains(&(p.params.total as f64)));
    assert_eq!(p.weights, 2 * p.params.total);
    assert_eq!(p.gradients, 2 * psi);
    assert_eq!(p.master, 4 * psi);
    assert_eq!(p.moments, 8 * psi);
    assert_eq!(p.reference, 0);
    // ZeRO-1 shards master and moments, ZeRO-2 the gradients too
    let z1 = plan(
        &cfg,
        &PlanSettings {
            world_size: 4,
            zero: ZeroStage::Zero1,
            ..settings()
        },
    )
    .unwrap();
    assert_eq!(z1.master, (4 * psi).div_ceil(4));
    assert_eq!(z1.moments, (8 * psi).div_ceil(4));
    assert_eq!(z1.gradients, 2 * psi);
    let z2 = plan(
        &cfg,
        &PlanSettings {
            world_size: 8,
            zero: ZeroStage::Zero2,
            ..settings()
        },
    )
    .unwrap();
    assert_eq!(z2.gradients, (2 * psi).div_ceil(8));
    assert_eq!(z2.moments, (8 * psi).div_ceil(8));
    // the same activations on every rank
    assert_eq!(z1.activations, p.activations);
    // a resident reference holds another copy of the weights
    let r = plan(
        &cfg,
        &PlanSettings {
            reference_resident: true,
            ..settings()
        },
    )
    .unwrap();
    assert_eq!(r.reference, p.weights);
    assert_eq!(r.peak, p.peak + p.weights);
}

#[test]
fn masters_and_eight_bit_moments() {
    let cfg = llava7b();
    let psi = plan(&cfg, &settings()).unwrap().params.trainable;
    let sr = plan(
        &cfg,
        &PlanSettings {
            master: OptimMaster::Bf16Sr,
            ..settings()
        },
    )
    .unwrap();
    assert_eq!(sr.master, 0);
    let f32w = plan(
        &cfg,
        &PlanSettings {
            precision: Precision::F32,
            ..settings()
        },
    )
    .unwrap();
    assert_eq!(f32w.master, 0, "f32 weights are their own master");
    let e = plan(
        &cfg,
        &PlanSettings {
            master: OptimMaster::Bf16Sr,
            state: OptimState::Dynamic8,
            ..settings()
        },
    )
    .unwrap();
    let p = e.params;
    // embeddings and head (2 × 32064 × 4096) and the tensors under 4096 values keep f32
    let vocab = 2 * 32064 * 4096u64;
    let small = psi - p.moments_8bit - vocab;
    assert!(small < 1_000_000, "norms and biases: {small}");
    assert_eq!(
        e.moments,
        2 * p.moments_8bit + 8 * (psi - p.moments_8bit) + 8 * p.absmax_blocks
    );
    // bf16 weights + bf16 gradients + 8-bit moments: ~6 bytes per parameter of model state
    let states = e.weights + e.gradients + e.master + e.moments;
    assert!((40e9..45e9).contains(&(states as f64)), "{states}");
}

#[test]
fn lora_trains_only_its_matrices() {
    let cfg = llava7b();
    let lora = plan(
        &cfg,
        &PlanSettings {
            lora: Some(LoraSettings::llava()),
            ..settings()
        },
    )
    .unwrap();
    // rank 64 on q, k, v, o (4096 → 4096) and gate, up, down (4096 ↔ 11008), 32 layers
    let per_layer = 64 * (4 * (4096 + 4096) + 3 * (4096 + 11008));
    assert_eq!(lora.params.trainable, 32 * per_layer);
    let full = plan(&cfg, &settings()).unwrap();
    assert_eq!(lora.params.total, full.params.total + 32 * per_layer);
    assert_eq!(lora.moments, 8 * 32 * per_layer);
    assert!(lora.peak < full.peak / 2);
}

#[test]
fn activations_scale_with_the_micro_batch_and_checkpointing() {
    let cfg = llava7b();
    let four = plan(&cfg, &settings()).unwrap();
    let two = plan(
        &cfg,
        &PlanSettings {
            micro_batch: 2,
            batch_size: 2,
            ..settings()
        },
    )
    .unwrap();
    let ratio = four.activations as f64 / two.activations as f64;
    assert!((1.95..2.05).contains(&ratio), "{ratio}");
    let ckpt = plan(
        &cfg,
        &PlanSettings {
            recompute_activations: true,
            ..settings()
        },
    )
    .unwrap();
    // per layer only its input stays: about a tenth of the saved set at LLaMA's shapes
    assert!(ckpt.activations * 5 < four.activations);
    // accumulating micro-batches keeps f32 sums beside one pass's gradients
    let acc = plan(
        &cfg,
        &PlanSettings {
            batch_size: 16,
            ..settings()
        },
    )
    .unwrap();
    assert_eq!(acc.gradients, four.gradients + 4 * four.params.trainable);
    assert!(
        plan(
            &cfg,
            &PlanSettings {
                world_size: 0,
                ..settings()
            }
        )
        .is_err()
    );
}

#[test]
fn suggestions_fit_and_prefer_exact_changes() {
    let cfg = llava7b();
    let cap = 80_000_000_000;
    // the paper's layout at 16 pairs of 2048 tokens: nothing exact is enough on one card
    let big = PlanSettings {
        batch_size: 16,
        micro_batch: 16,
        sequence: Sequence {
            prefix: 640,
            answer: 1408,
        },
        ..settings()
    };
    assert!(!plan(&cfg, &big).unwrap().fits(cap));
    let s = suggest(&cfg, &big, cap, 5).unwrap();
    assert!(!s.is_empty());
    assert!(s.iter().all(|x| x.plan.fits(cap)));
    assert!(s.windows(2).all(|w| w[0].cost <= w[1].cost));
    // with bf16-sr and 8-bit moments already chosen, checkpointing alone does it
    let lean = PlanSettings {
        master: OptimMaster::Bf16Sr,
        state: OptimState::Dynamic8,
        ..big.clone()
    };
    let s = suggest(&cfg, &lean, cap, 3).unwrap();
    assert_eq!(s[0].flags, ["--recompute-activations"]);
    // the table names every category and the peak
    let text = plan(&cfg, &lean).unwrap().to_string();
    for word in [
        "weights",
        "gradients",
        "master",
        "moments",
        "activations",
        "reference",
        "workspace",
        "peak",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }
}

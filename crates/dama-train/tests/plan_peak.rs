//! The memory planner against measured peaks on the CPU: the tiny and a ~100M LLaVA, each
//! training step of the trainer (`dama_train::step::train_step`) measured by a counting global
//! allocator (this test binary's: every heap byte allocated and freed, the running total and
//! its maximum), and compared with `dama_train::plan` for the same settings and token layout.
//!
//! What is measured: the allocator's peak during loading the model, building the optimizer and
//! running the steps, minus what was allocated before (the encoded pairs, the pixels, the
//! tokenizer). The load's own transient (a checkpoint tensor and its copy) is excluded by
//! restarting the peak once the model and optimizer exist, so that the number is the step's
//! peak over everything it holds. One test function runs every case in turn: a second test in
//! this binary would allocate in parallel and blur the count. A warm-up case runs first and is
//! not counted: the GEMM library keeps per-thread packing buffers from its first call on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Device, Tensor};
use dama_core::{DamaConfig, DamaState, Mode};
use dama_llava::random::{TINY_TOKENIZER_JSON, TinySpec, random_weights};
use dama_llava::{Images, LlavaConfig, LlavaModel, LoadOptions, PairBatch, PairEncoder, Trainable};
use dama_train::optim::{AdamW, Param};
use dama_train::plan::{PlanSettings, Sequence, ZeroStage, plan};
use dama_train::policy::adamw_config;
use dama_train::step::{BatchRefs, StepSettings, train_step};
use dama_train::{OptimMaster, OptimState, Precision, TrainConfig};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

fn restart_peak() {
    PEAK.store(current(), Ordering::Relaxed);
}

/// One case: a model config, pairs per step, and the run's settings.
struct Case<'a> {
    name: &'a str,
    config: serde_json::Value,
    pairs: usize,
    micro_batch: usize,
    precision: Precision,
    master: OptimMaster,
    state: OptimState,
    checkpointing: bool,
    answer_words: usize,
    steps: usize,
}

const WORDS: &str = "the image shows a small kitchen with a white table near the window and two red \
    apples and a cup of coffee are on the table while a black cat sits on a chair on the left \
    the wall is yellow and the floor is made of wood and through the window we can see a green \
    garden with many flowers a tall tree and a blue sky with a few white clouds";

/// Measured and planned peak bytes of `case`.
fn measure(case: &Case<'_>, dir: &Path) -> (usize, u64) {
    let cfg = LlavaConfig::from_json_str(&case.config.to_string(), Path::new(case.name)).unwrap();
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, TINY_TOKENIZER_JSON).unwrap();
    let encoder = PairEncoder::from_file(&tok, cfg.image_token_id, cfg.num_image_tokens()).unwrap();
    let words: Vec<&str> = WORDS.split(' ').filter(|w| !w.is_empty()).collect();
    let n = case.answer_words.min(words.len());
    let pairs: Vec<_> = (0..case.pairs)
        .map(|i| {
            let chosen = words[..n].join(" ");
            let rejected = words[words.len() - n..].join(" ");
            encoder
                .encode_pair(i, "Describe the image in detail.", &chosen, &rejected)
                .unwrap()
        })
        .collect();
    let v = &cfg.vision;
    let px = Tensor::randn(
        0f32,
        1.0,
        (case.pairs, 3, v.image_size, v.image_size),
        &Device::Cpu,
    )
    .unwrap();
    let batch = PairBatch {
        images: Images::Pixels(px),
        pairs,
    };
    let ckpt = random_weights(&cfg, 7).unwrap();
    let train = TrainConfig {
        precision: case.precision,
        optim_master: case.master,
        optim_state: case.state,
        recompute_activations: case.checkpointing,
        batch_size: case.pairs,
        micro_batch: case.micro_batch,
        ..TrainConfig::paper("m".into(), "d".into())
    };

    let before = current();
    let opts = LoadOptions {
        dtype: case.precision.dtype(),
        device: Device::Cpu,
        trainable: Trainable::Full,
    };
    let mut model = LlavaModel::from_weights(cfg.clone(), ckpt, &opts).unwrap();
    model.set_recompute_activations(case.checkpointing);
    let params = Param::all(model.trainable_vars());
    let mut opt = AdamW::new(params, adamw_config(&train)).unwrap();
    restart_peak();
    let loaded = current() - before;
    let dama = DamaConfig {
        mode: Mode::Dpo,
        ..Default::default()
    };
    let mut state = DamaState::new(1);
    let refs = vec![-50f32; case.pairs];
    let settings = StepSettings {
        micro_batch: case.micro_batch,
        shared_prefix: true,
        max_grad_norm: Some(1.0),
        overlap_grads: false,
    };
    for t in 0..case.steps {
        let r = BatchRefs {
            ref_chosen: &refs,
            ref_rejected: &refs,
            alpha_d: None,
        };
        train_step(
            &model,
            &mut opt,
            &batch,
            r,
            &dama,
            &mut state,
            &settings,
            1e-4 * (t + 1) as f64,
        )
        .unwrap();
    }
    let measured = PEAK.load(Ordering::Relaxed) - before;
    drop((opt, model));

    // the planner, for the same settings and the layout of these pairs
    let prefix = batch.pairs.iter().map(|p| p.shared_prefix).max().unwrap();
    let answers = batch
        .pairs
        .iter()
        .map(|p| p.chosen.input_ids.len() + p.rejected.input_ids.len() - 2 * p.shared_prefix)
        .max()
        .unwrap();
    let s = PlanSettings {
        sequence: Sequence {
            prefix,
            answer: answers.div_ceil(2),
        },
        world_size: 1,
        zero: ZeroStage::Zero0,
        ..PlanSettings::of_run(&train, &cfg, None, false)
    };
    let p = plan(&cfg, &s).unwrap();
    eprintln!(
        "{}: loaded {:.1} MiB, measured peak {:.1} MiB, planned {:.1} MiB ({:+.1}%)\n{p}",
        case.name,
        loaded as f64 / 1048576.0,
        measured as f64 / 1048576.0,
        p.peak as f64 / 1048576.0,
        100.0 * (p.peak as f64 / measured as f64 - 1.0)
    );
    let mib: Vec<String> = p
        .categories()
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", *v as f64 / 1048576.0))
        .collect();
    eprintln!("  MiB: {} ({:?})", mib.join(", "), p.peak_at);
    let mib: Vec<String> = p
        .categories()
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", *v as f64 / 1048576.0))
        .collect();
    eprintln!("  MiB: {} ({:?})", mib.join(", "), p.peak_at);
    (measured, p.peak)
}

fn tiny() -> serde_json::Value {
    TinySpec::default().config_json()
}

/// bench_pair's ~100M LLaMA-shaped model: 12 layers of width 640, SwiGLU 1728, vocabulary
/// 32064, 576 image tokens from a two-layer stand-in vision tower.
fn hundred_m() -> serde_json::Value {
    serde_json::json!({
        "model_type": "llava", "image_token_index": 1000, "pad_token_id": 1001,
        "vision_feature_layer": -2,
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "image_size": 336, "patch_size": 14},
        "text_config": {"model_type": "llama", "hidden_size": 640, "intermediate_size": 1728,
                        "num_hidden_layers": 12, "num_attention_heads": 10,
                        "num_key_value_heads": 10, "vocab_size": 32064, "rms_norm_eps": 1e-5}
    })
}

#[test]
fn planned_peaks_are_within_ten_percent_of_measured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let base = |name, config, pairs| Case {
        name,
        config,
        pairs,
        micro_batch: pairs,
        precision: Precision::F32,
        master: OptimMaster::F32,
        state: OptimState::F32,
        checkpointing: false,
        answer_words: 60,
        steps: 1,
    };
    let cases = [
        Case {
            steps: 2,
            ..base("tiny, f32", tiny(), 4)
        },
        Case {
            checkpointing: true,
            steps: 2,
            ..base("tiny, f32, checkpointing", tiny(), 4)
        },
        Case {
            micro_batch: 2,
            steps: 2,
            ..base("tiny, f32, micro-batches of 2", tiny(), 4)
        },
        Case {
            precision: Precision::Bf16,
            master: OptimMaster::Bf16Sr,
            state: OptimState::Dynamic8,
            steps: 2,
            ..base("tiny, bf16-sr, 8-bit", tiny(), 4)
        },
        base("100M, f32, 3 pairs", hundred_m(), 3),
        Case {
            checkpointing: true,
            ..base("100M, f32, 3 pairs, checkpointing", hundred_m(), 3)
        },
        Case {
            checkpointing: true,
            ..base("100M, f32, 1 pair, checkpointing", hundred_m(), 1)
        },
    ];
    // Warm-up, not measured: the first matrix products of a process allocate the GEMM
    // library's per-thread packing buffers and keep them, ~2 MiB that would count against
    // whichever case ran first.
    measure(&base("warm-up", tiny(), 4), dir.path());
    let mut worst = 0f64;
    let mut report = Vec::new();
    for case in &cases {
        let (measured, planned) = measure(case, dir.path());
        let err = planned as f64 / measured as f64 - 1.0;
        worst = worst.max(err.abs());
        report.push(format!("{}: {:+.1}%", case.name, 100.0 * err));
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        worst <= 0.10,
        "off by more than 10%:\n{}",
        report.join("\n")
    );
}

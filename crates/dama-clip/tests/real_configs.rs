//! The four OpenAI checkpoints' configs (as transformers' `CLIPConfig` writes them) build a
//! model that asks for exactly transformers' parameters, names and shapes, without allocating
//! their weights.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use common::*;
use dama_clip::{Activation, ClipConfig, ClipModel};

/// Hands out stride-0 zero tensors of the requested shape after checking it against the
/// parameter list transformers produced, and records what was asked for.
struct Recorder {
    expected: BTreeMap<String, Vec<usize>>,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(want) = self.expected.get(name) else {
            candle_core::bail!("transformers has no parameter {name}");
        };
        if want.as_slice() != s.dims() {
            candle_core::bail!(
                "{name}: we ask for {:?}, transformers has {want:?}",
                s.dims()
            );
        }
        self.seen.lock().unwrap().insert(name.to_string());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unchecked get of {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.expected.contains_key(name)
    }
}

#[test]
fn real_configs_parse_and_match_transformers_parameters() {
    let cases = [
        (
            "openai-clip-vit-base-patch32",
            224,
            32,
            50,
            512,
            151_277_313usize,
        ),
        (
            "openai-clip-vit-base-patch16",
            224,
            16,
            197,
            512,
            149_620_737,
        ),
        (
            "openai-clip-vit-large-patch14",
            224,
            14,
            257,
            768,
            427_616_513,
        ),
        (
            "openai-clip-vit-large-patch14-336",
            336,
            14,
            577,
            768,
            427_944_193,
        ),
    ];
    for (name, image, patch, positions, proj, n_params) in cases {
        let dir = fixtures().join("configs");
        let cfg = ClipConfig::from_file(&dir.join(format!("{name}.json"))).unwrap();
        let v = &cfg.vision_config;
        assert_eq!(
            (
                v.image_size,
                v.patch_size,
                v.num_positions(),
                cfg.projection_dim
            ),
            (image, patch, positions, proj),
            "{name}"
        );
        assert_eq!(
            (v.hidden_act, cfg.text_config.hidden_act),
            (Activation::QuickGelu, Activation::QuickGelu)
        );
        // The openai repos' legacy ids: argmax pooling.
        assert_eq!(cfg.text_config.eos_token_id, Some(2), "{name}");

        let text = std::fs::read_to_string(dir.join(format!("{name}.params.json"))).unwrap();
        let expected: BTreeMap<String, Vec<usize>> = serde_json::from_str(&text).unwrap();
        let total: usize = expected.values().map(|s| s.iter().product::<usize>()).sum();
        assert_eq!(total, n_params, "{name}: parameter count of the fixture");
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let backend = Recorder {
            expected: expected.clone(),
            seen: seen.clone(),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
        ClipModel::new(vb, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        let seen = seen.lock().unwrap();
        let missing: Vec<&String> = expected.keys().filter(|k| !seen.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "{name}: parameters we never read: {missing:?}"
        );
    }
}

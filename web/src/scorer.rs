//! What the worker runs: a `dama_clip::ClipScorer` built from the bytes of a model's files, and
//! the scoring of a batch of [`ScoreItem`]s. Plain Rust, so the same code is tested natively
//! (`cargo test`) and in the browser (wasm-bindgen-test) against the same expected numbers.

use candle_core::{DType, Device};
use dama_clip::{ClipScorer, PairInput};
use dama_data::Scores;

use crate::protocol::{ScoreItem, ScoreResult};

/// A loaded CLIP and the name the annotated header records for it.
pub struct WorkerScorer {
    pub name: String,
    scorer: ClipScorer,
}

impl WorkerScorer {
    /// From the bytes of `config.json`, `model.safetensors`, `tokenizer.json` and
    /// `preprocessor_config.json`; CPU, f32 (wasm has no other device).
    pub fn from_bytes(
        name: impl Into<String>,
        config: &[u8],
        weights: Vec<u8>,
        tokenizer: &[u8],
        preprocessor: &[u8],
    ) -> Result<Self, String> {
        let scorer = ClipScorer::from_bytes(
            config,
            weights,
            tokenizer,
            preprocessor,
            &Device::Cpu,
            DType::F32,
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.into(),
            scorer,
        })
    }

    /// The dama-clip scorer itself (for [`crate::bench`]).
    pub fn clip(&self) -> &ClipScorer {
        &self.scorer
    }

    /// Scores the items in one call of `score_pairs` (their images form one batch); an item
    /// whose image does not decode gets an error of its own and the others are still scored.
    pub fn score(&self, items: &[ScoreItem]) -> Vec<ScoreResult> {
        let decoded: Vec<Result<image::DynamicImage, String>> = items
            .iter()
            .map(|it| dama_data::decode_rgb(&it.image).map_err(|e| format!("image: {e}")))
            .collect();
        let inputs: Vec<PairInput<'_, String>> = items
            .iter()
            .zip(&decoded)
            .filter_map(|(it, img)| {
                img.as_ref().ok().map(|image| PairInput {
                    image,
                    chosen: &it.chosen,
                    rejected: &it.rejected,
                })
            })
            .collect();
        let mut scored = match self.scorer.score_pairs(&inputs) {
            Ok(s) => s.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(format!("CLIP: {e}")); inputs.len()],
        }
        .into_iter();
        items
            .iter()
            .zip(decoded)
            .map(|(it, img)| ScoreResult {
                id: it.id.clone(),
                subs_key: it.subs_key,
                scores: match img {
                    Err(e) => Err(e),
                    Ok(_) => scored
                        .next()
                        .expect("one result per decoded image")
                        .map(|s| Scores {
                            chosen: s.chosen.into_iter().map(f64::from).collect(),
                            rejected: s.rejected.into_iter().map(f64::from).collect(),
                        }),
                },
            })
            .collect()
    }
}

/// The bundled demo model's files, for tests on both targets.
#[cfg(test)]
pub(crate) mod fixture {
    use super::WorkerScorer;

    pub const CONFIG: &[u8] = include_bytes!("../demo/clip/config.json");
    pub const WEIGHTS: &[u8] = include_bytes!("../demo/clip/model.safetensors");
    pub const TOKENIZER: &[u8] = include_bytes!("../demo/clip/tokenizer.json");
    pub const PREPROCESSOR: &[u8] = include_bytes!("../demo/clip/preprocessor_config.json");

    pub fn demo_model() -> WorkerScorer {
        WorkerScorer::from_bytes(
            "demo clip",
            CONFIG,
            WEIGHTS.to_vec(),
            TOKENIZER,
            PREPROCESSOR,
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::demo_session;

    fn items(n: usize) -> Vec<ScoreItem> {
        let s = demo_session();
        s.pairs[..n]
            .iter()
            .map(|p| crate::scoring::item(p).unwrap())
            .collect()
    }

    #[test]
    fn a_batch_scores_like_pairs_one_at_a_time() {
        let scorer = fixture::demo_model();
        let items = items(3);
        let batch = scorer.score(&items);
        for (item, got) in items.iter().zip(&batch) {
            let alone = scorer.score(std::slice::from_ref(item)).remove(0);
            let (a, b) = (got.scores.as_ref().unwrap(), alone.scores.as_ref().unwrap());
            assert_eq!(
                (got.id.as_str(), got.subs_key),
                (item.id.as_str(), item.subs_key)
            );
            assert_eq!(a.chosen.len(), item.chosen.len());
            for (x, y) in a
                .chosen
                .iter()
                .chain(&a.rejected)
                .zip(b.chosen.iter().chain(&b.rejected))
            {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn the_demo_scores_match_the_recorded_ones() {
        // web/tests/demo_scores.json was recorded by `cargo run -p dama-web --example record_demo_scores`;
        // the wasm test checks the browser build against the same file.
        let expected = crate::scorer::expected::load();
        let got = fixture::demo_model().score(&items(expected.len()));
        crate::scorer::expected::assert_close(&expected, &got);
    }

    #[test]
    fn an_undecodable_image_fails_alone() {
        let mut items = items(2);
        items[0].image = b"not an image".to_vec();
        let out = fixture::demo_model().score(&items);
        assert!(out[0].scores.as_ref().unwrap_err().starts_with("image:"));
        assert!(out[1].scores.is_ok());
    }
}

/// The recorded scores of the first demo pairs under the demo model.
#[cfg(test)]
pub(crate) mod expected {
    use crate::protocol::ScoreResult;
    use dama_data::Scores;

    pub fn load() -> Vec<(String, Scores)> {
        serde_json::from_str(include_str!("../tests/demo_scores.json")).unwrap()
    }

    pub fn assert_close(expected: &[(String, Scores)], got: &[ScoreResult]) {
        assert_eq!(expected.len(), got.len());
        for ((id, want), r) in expected.iter().zip(got) {
            assert_eq!(id, &r.id);
            let have = r.scores.as_ref().unwrap();
            let (w, h): (Vec<f64>, Vec<f64>) = (
                want.chosen.iter().chain(&want.rejected).copied().collect(),
                have.chosen.iter().chain(&have.rejected).copied().collect(),
            );
            assert_eq!(w.len(), h.len(), "{id}");
            for (a, b) in w.iter().zip(&h) {
                // f32 CLIP logits near |Γ| ≈ 10: summation order differs between builds.
                assert!((a - b).abs() < 1e-3 * a.abs().max(1.0), "{id}: {a} vs {b}");
            }
        }
    }
}

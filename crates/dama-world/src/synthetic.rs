//! Preference pairs with *simulated* CLIP scores, for the browser explorer's bundled set and for
//! anything that needs hardness without a CLIP model.
//!
//! Each sub-sentence gets a score drawn from what ViT-L/14's `logits_per_image` (100·cos) gives
//! a caption: a true sentence N([`TRUE_SCORE_MEAN`], [`SCORE_SD`]²) = N(26, 1.2²), a false one
//! N([`FALSE_SCORE_MEAN`], [`SCORE_SD`]²) = N(22.5, 1.2²). δ comes from those by
//! `dama_core::delta` (Eqs. 4–5), so a rejected answer with more false sentences has, on
//! average, a larger δ: an easier pair. The header says `clip_model: "simulated (dama demo)"`
//! so that nobody mistakes them for real. The demo itself scores its pairs with a CLIP it
//! trains ([`crate::World`]).

use std::f64::consts::TAU;
use std::path::{Path, PathBuf};

use dama_core::{Estimator, Xoshiro256};
use dama_data::{DataError, RunInfo, Scores};

use crate::example::Example;
use crate::grammar::Fact;
use crate::pairs::{LabelledPair, true_vs_hallucinated};
use crate::write::write_dataset;

/// Mean simulated CLIP score Γ(I, s) of a sentence that is true of the image.
pub const TRUE_SCORE_MEAN: f64 = 26.0;
/// Mean simulated CLIP score of a hallucinated sentence.
pub const FALSE_SCORE_MEAN: f64 = 22.5;
/// Standard deviation of both.
pub const SCORE_SD: f64 = 1.2;
/// The annotated header's `clip_model` for this data.
pub const CLIP_MODEL: &str = "simulated (dama demo)";
/// The annotated header's `splitter`: the generator knows its own sentences.
pub const SPLITTER: &str = "sentences (synthetic)";

/// How much data to make. `Default`: 320 pairs of 64×64 images, seed 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub pairs: usize,
    /// Side of the square images, in pixels (at least 16).
    pub image_size: u32,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            pairs: 320,
            image_size: 64,
            seed: 0,
        }
    }
}

/// Makes `spec.pairs` pairs with simulated scores (δ set, α_D on writing). Pair `i` depends
/// only on the seed and the pairs before it, so a smaller `pairs` yields a prefix of a larger
/// one.
pub fn generate(spec: &SyntheticSpec) -> Vec<LabelledPair> {
    let mut rng = Xoshiro256::seed_from(spec.seed);
    (0..spec.pairs)
        .map(|i| {
            let example = Example::draw(&mut rng, "synthetic", i, spec.image_size);
            let mut labelled = true_vs_hallucinated(&mut rng, &example);
            let scores = simulated_scores(&mut rng, &labelled);
            labelled
                .pair
                .set_scores(scores, Estimator::Probs)
                .expect("simulated scores are finite and both answers have sentences");
            labelled
        })
        .collect()
}

fn simulated_scores(rng: &mut Xoshiro256, labelled: &LabelledPair) -> Scores {
    let facts = |facts: &[Fact], rng: &mut Xoshiro256| -> Vec<f64> {
        facts
            .iter()
            .map(|f| {
                let mean = if f.holds(&labelled.scene) {
                    TRUE_SCORE_MEAN
                } else {
                    FALSE_SCORE_MEAN
                };
                normal(rng, mean, SCORE_SD)
            })
            .collect()
    };
    let chosen = facts(&labelled.chosen_facts, rng);
    Scores {
        chosen,
        rejected: facts(&labelled.rejected_facts, rng),
    }
}

/// A normal draw by Box–Muller (the cosine half), from the crate-wide seeded PRNG.
fn normal(rng: &mut Xoshiro256, mean: f64, sd: f64) -> f64 {
    let (u1, u2) = (rng.open01(), rng.open01());
    mean + sd * (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// What produced the simulated scores, for the annotated header.
pub fn run_info() -> RunInfo {
    RunInfo {
        clip_model: Some(CLIP_MODEL.to_owned()),
        estimator: Some(Estimator::Probs),
        splitter: Some(SPLITTER.to_owned()),
    }
}

/// Writes `<dir>/<name>.jsonl` (annotated: δ̄ over these pairs in the header, α_D on each pair)
/// and the images into `<dir>/<name>_images/`; returns the JSONL's path. Write the training and
/// the held-out pairs under different names: each file gets the δ̄ of its own pairs.
pub fn write_annotated(
    dir: &Path,
    name: &str,
    pairs: &[LabelledPair],
) -> Result<PathBuf, DataError> {
    write_dataset(dir, name, pairs.iter().map(|p| &p.pair), &run_info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{Colour, Kind, Place, Scene, Size};
    use crate::{OBJECT_ERRORS, count_hallucinations};
    use dama_data::{PreferencePair, SubSentences};
    use dama_data::{ReadOptions, RuleSplitter, Splitter, open_dataset};

    fn spec(pairs: usize, seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            pairs,
            seed,
            ..SyntheticSpec::default()
        }
    }

    /// Reads a sentence's claim back from its words alone (not from the generator's facts) and
    /// checks it against the scene: the text must say what the picture shows.
    fn true_of(scene: &Scene, sentence: &str) -> bool {
        let words: Vec<String> = sentence
            .trim_end_matches('.')
            .split(' ')
            .map(str::to_lowercase)
            .collect();
        let has = |w: &str| words.iter().any(|x| x == w);
        let one = |found: Vec<usize>| -> usize {
            assert_eq!(found.len(), 1, "{sentence:?}");
            found[0]
        };
        let find = |names: &[&str]| -> usize {
            one((0..names.len()).filter(|&i| has(names[i])).collect())
        };
        let colours: Vec<&str> = Colour::ALL.iter().map(|c| c.name()).collect();
        if has("background") {
            return Colour::ALL[find(&colours)] == scene.background;
        }
        if has("shape") || has("shapes") {
            return find(&["one", "two", "three", "four"]) + 1 == scene.shapes.len();
        }
        let colour = Colour::ALL[find(&colours)];
        let kind = Kind::ALL[find(&["circle", "square", "triangle"])];
        let size = [Size::Big, Size::Small][find(&["big", "small"])];
        let place = Place::ALL[find(&["left", "right", "top", "bottom", "middle"])];
        scene
            .shapes
            .iter()
            .any(|s| (s.colour, s.kind, s.size, s.place) == (colour, kind, size, place))
    }

    fn subs(p: &LabelledPair) -> &SubSentences {
        p.pair.sub_sentences.as_ref().unwrap()
    }

    fn read_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn same_seed_same_files_other_seed_other_files() {
        let write = |seed| {
            let dir = tempfile::tempdir().unwrap();
            let path = write_annotated(dir.path(), "train", &generate(&spec(24, seed))).unwrap();
            assert_eq!(path, dir.path().join("train.jsonl"));
            let jsonl = std::fs::read(&path).unwrap();
            let images = read_dir(&dir.path().join("train_images"));
            assert_eq!(images.len(), 24);
            (jsonl, images)
        };
        let (a, b, c) = (write(7), write(7), write(8));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        assert_ne!(a.1, c.1);
        // A smaller set is a prefix of a larger one.
        let (small, large) = (generate(&spec(5, 3)), generate(&spec(9, 3)));
        for (s, l) in small.iter().zip(&large) {
            assert_eq!((&s.pair, &s.scene), (&l.pair, &l.scene));
        }
    }

    #[test]
    fn chosen_sentences_are_true_and_each_error_is_one_false_sentence() {
        let pairs = generate(&SyntheticSpec::default());
        let splitter = RuleSplitter::new();
        let mut kinds = std::collections::BTreeSet::new();
        for p in &pairs {
            let s = subs(p);
            assert!((2..=4).contains(&s.chosen.len()), "{:?}", s.chosen);
            assert!(s.chosen.iter().all(|x| true_of(&p.scene, x)), "{p:?}");
            let false_ones = s.rejected.iter().filter(|x| !true_of(&p.scene, x)).count();
            assert!((1..=3).contains(&p.errors));
            assert_eq!(false_ones, p.errors, "{p:?}");
            assert!(s.rejected.len() <= 5);
            assert_eq!(p.pair.chosen, s.chosen.join(" "));
            assert_eq!(p.pair.rejected, s.rejected.join(" "));
            // The project's own splitter cuts the answers into the same sub-sentences.
            assert_eq!(splitter.split_pair(&p.pair).unwrap(), *s);
            let tags = &p.pair.annotation.tags;
            assert_eq!(tags[0], format!("errors:{}", p.errors));
            assert_eq!(tags.len(), p.errors + 1);
            kinds.extend(tags[1..].iter().cloned());
            // The hallucination counter, reading the text alone, finds exactly the object
            // errors the generator made, and none in the chosen answer.
            let objects = tags[1..]
                .iter()
                .filter(|k| OBJECT_ERRORS.contains(&k.as_str()))
                .count();
            let rejected = count_hallucinations(&p.pair.rejected, &p.scene);
            assert_eq!(rejected.hallucinated, objects, "{p:?}");
            assert_eq!(rejected.false_statements, p.errors - objects, "{p:?}");
            let chosen = count_hallucinations(&p.pair.chosen, &p.scene);
            assert_eq!((chosen.hallucinated, chosen.false_statements), (0, 0));
            assert_eq!(chosen.mentions.len(), p.scene.shapes.len());
            // Scenes: 1–3 shapes at distinct places, none the colour of the background.
            assert!((1..=3).contains(&p.scene.shapes.len()));
            for (i, a) in p.scene.shapes.iter().enumerate() {
                assert_ne!(a.colour, p.scene.background);
                assert!(p.scene.shapes[i + 1..].iter().all(|b| b.place != a.place));
            }
        }
        // Every kind of hallucination occurs.
        assert_eq!(kinds.len(), 7, "{kinds:?}");
        let errors: Vec<usize> = (1..=3)
            .map(|e| pairs.iter().filter(|p| p.errors == e).count())
            .collect();
        assert!(errors.iter().all(|&n| n > 80), "{errors:?}");
    }

    #[test]
    fn the_written_file_reads_back_strictly_with_delta_and_alpha() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = generate(&spec(40, 1));
        let path = write_annotated(dir.path(), "demo", &pairs).unwrap();
        let mut records =
            open_dataset(&path, None, ReadOptions::strict()).expect("opens the annotated file");
        let header = records.header().unwrap().clone();
        assert_eq!(header.clip_model.as_deref(), Some(CLIP_MODEL));
        assert_eq!(header.splitter.as_deref(), Some(SPLITTER));
        assert_eq!(header.estimator, Some(Estimator::Probs));
        assert_eq!(header.images.as_deref(), Some("demo_images"));
        assert_eq!((header.count, header.kept, header.scored), (40, 40, 40));
        let read: Vec<PreferencePair> = records.by_ref().map(Result::unwrap).collect();
        assert_eq!(read.len(), 40);
        let mut deltas: Vec<f64> = read.iter().map(|p| p.delta.unwrap()).collect();
        let mean = header.delta_mean.unwrap();
        let in_order = dama_core::delta_mean(&deltas).unwrap();
        assert!((mean - in_order).abs() < 1e-12, "{mean} vs {in_order}");
        deltas.sort_by(f64::total_cmp); // dama-data sums in ascending order: equal to the bit
        assert_eq!(mean, dama_core::delta_mean(&deltas).unwrap());
        for (r, g) in read.iter().zip(&pairs) {
            let g = &g.pair;
            assert_eq!(r.alpha_d, Some(dama_core::alpha_d(r.delta.unwrap(), mean)));
            let h = dama_core::delta(
                &r.scores.as_ref().unwrap().chosen,
                &r.scores.as_ref().unwrap().rejected,
                Estimator::Probs,
            )
            .unwrap();
            assert_eq!((r.delta, r.delta_edge), (Some(h.delta), Some(h.edge)));
            assert_eq!(
                (&r.id, &r.question, &r.chosen, &r.rejected),
                (&g.id, &g.question, &g.chosen, &g.rejected)
            );
            assert_eq!((&r.sub_sentences, &r.scores), (&g.sub_sentences, &g.scores));
            assert_eq!((r.delta, &r.annotation), (g.delta, &g.annotation));
            assert_eq!(r.image.bytes, g.image.bytes);
            let img = r.image.decoded.as_ref().unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
        }
        assert!(records.summary().errors.is_empty());
    }

    #[test]
    fn more_errors_make_easier_pairs() {
        let mut scores = (Vec::new(), Vec::new());
        for seed in 0..3 {
            let pairs = generate(&spec(320, seed));
            let mean_delta = |e: usize| {
                let d: Vec<f64> = pairs
                    .iter()
                    .filter(|p| p.errors == e)
                    .map(|p| p.pair.delta.unwrap())
                    .collect();
                d.iter().sum::<f64>() / d.len() as f64
            };
            let by_errors = [mean_delta(1), mean_delta(2), mean_delta(3)];
            assert!(
                by_errors[0] < by_errors[1] && by_errors[1] < by_errors[2],
                "seed {seed}: mean δ by errors {by_errors:?}"
            );
            let all: f64 = pairs.iter().map(|p| p.pair.delta.unwrap()).sum();
            assert!(all > 0.0, "on average the chosen answer wins");
            for p in &pairs {
                let s = subs(p);
                let c = p.pair.scores.as_ref().unwrap();
                let side = s.chosen.iter().zip(&c.chosen);
                for (text, &score) in side.chain(s.rejected.iter().zip(&c.rejected)) {
                    if true_of(&p.scene, text) {
                        scores.0.push(score);
                    } else {
                        scores.1.push(score);
                    }
                }
            }
        }
        // The simulated CLIP scores follow the documented distributions.
        for (xs, mean) in [(&scores.0, TRUE_SCORE_MEAN), (&scores.1, FALSE_SCORE_MEAN)] {
            let n = xs.len() as f64;
            let m = xs.iter().sum::<f64>() / n;
            let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            assert!(n > 1000.0 && (m - mean).abs() < 0.1, "n {n}, mean {m}");
            assert!((sd - SCORE_SD).abs() < 0.06, "sd {sd}");
        }
    }
}

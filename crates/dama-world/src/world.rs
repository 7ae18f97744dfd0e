//! The demo's world in three splits: `train` (the images CLIP and the SFT model learn from),
//! `preference` (the images of the preference pairs DPO and DAMA train on) and `heldout` (images
//! no stage trains on, for evaluation). Each split has its own seeded stream, so that changing
//! one split's size leaves the others as they are, and no held-out scene appears in the other
//! two splits.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use dama_core::Xoshiro256;
use dama_core::hash::fnv1a;
use dama_data::{DataError, RunInfo};

use crate::example::Example;
use crate::grammar::{Fact, OBJECT_TEMPLATES};
use crate::pairs::{LabelledPair, true_vs_hallucinated};
use crate::scene::{Scene, pick};
use crate::synthetic::SPLITTER;
use crate::write::write_dataset;

/// How big the world is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorldSpec {
    pub train: usize,
    pub preference: usize,
    pub heldout: usize,
    /// Side of the square images, in pixels (at least 16).
    pub image_size: u32,
    pub seed: u64,
}

impl Default for WorldSpec {
    /// The demo's world: 768 training images, 256 preference pairs, 64 held out, 56×56
    /// pixels (7×7 patches of 8 for the demo's CLIP: every place's centre falls inside a patch).
    fn default() -> Self {
        Self {
            train: 768,
            preference: 256,
            heldout: 64,
            image_size: 56,
            seed: 0,
        }
    }
}

/// The examples of the three splits.
#[derive(Debug, Clone)]
pub struct World {
    pub spec: WorldSpec,
    pub train: Vec<Example>,
    pub preference: Vec<Example>,
    pub heldout: Vec<Example>,
}

/// One image–sentence pair for contrastive training: a true sentence of a training image, and
/// a hard negative (the same sentence with one attribute made false, NegCLIP-style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    /// Index into [`World::train`].
    pub image: usize,
    pub text: String,
    pub negative: String,
}

/// A seeded stream of its own for each use, derived from the world's seed and a name.
fn stream(seed: u64, name: &str) -> Xoshiro256 {
    Xoshiro256::seed_from(seed ^ fnv1a(name))
}

impl World {
    pub fn build(spec: &WorldSpec) -> Self {
        let draw = |name: &str, n: usize| -> Vec<Example> {
            let mut rng = stream(spec.seed, name);
            (0..n)
                .map(|i| Example::draw(&mut rng, name, i, spec.image_size))
                .collect()
        };
        let train = draw("train", spec.train);
        let preference = draw("preference", spec.preference);
        let seen: HashSet<&Scene> = train.iter().chain(&preference).map(|e| &e.scene).collect();
        let mut rng = stream(spec.seed, "heldout");
        let heldout = (0..spec.heldout)
            .map(|i| {
                let scene = loop {
                    let s = Scene::random(&mut rng);
                    if !seen.contains(&s) {
                        break s;
                    }
                };
                Example::of_scene(&mut rng, scene, "heldout", i, spec.image_size)
            })
            .collect();
        Self {
            spec: *spec,
            train,
            preference,
            heldout,
        }
    }

    /// The preference pair of every example of `split` ([`true_vs_hallucinated`]), from a
    /// stream named after it.
    pub fn pairs(&self, split: &[Example], name: &str) -> Vec<LabelledPair> {
        let mut rng = stream(self.spec.seed, &format!("pairs/{name}"));
        split
            .iter()
            .map(|e| true_vs_hallucinated(&mut rng, e))
            .collect()
    }

    /// Every true fact of every training image as a sentence (a random template each), with a
    /// hard negative: a false variant of the same fact (a kind of hallucination drawn first,
    /// then one of its variants, as the pair builder does).
    pub fn captions(&self) -> Vec<Caption> {
        self.captions_of(&self.train, "train")
    }

    /// [`Self::captions`] of any split (`Caption::image` indexes into `split`), from a stream
    /// named after it.
    pub fn captions_of(&self, split: &[Example], name: &str) -> Vec<Caption> {
        let mut rng = stream(self.spec.seed, &format!("captions/{name}"));
        let mut out = Vec::new();
        for (image, example) in split.iter().enumerate() {
            for fact in example.scene.facts() {
                let template = rng.below(OBJECT_TEMPLATES as u64) as usize;
                let negative = false_variant(&mut rng, &fact, &example.scene);
                out.push(Caption {
                    image,
                    text: fact.sentence(template),
                    negative: negative.sentence(template),
                });
            }
        }
        out
    }
}

fn false_variant(rng: &mut Xoshiro256, fact: &Fact, scene: &Scene) -> Fact {
    let variants = fact.false_variants(scene);
    let mut kinds: Vec<&str> = variants.iter().map(|(k, _)| *k).collect();
    kinds.dedup();
    let kind = pick(rng, &kinds);
    let of_kind: Vec<Fact> = variants
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, f)| *f)
        .collect();
    pick(rng, &of_kind)
}

/// The header of a dataset the world writes before any CLIP scored it.
pub fn unscored_run_info() -> RunInfo {
    RunInfo {
        clip_model: None,
        estimator: None,
        splitter: Some(SPLITTER.to_owned()),
    }
}

/// Writes unscored pairs as `<dir>/<name>.jsonl` with `<dir>/<name>_images/` (what `score`
/// reads; the sub-sentences are the generator's, which `score` keeps).
pub fn write_pairs(dir: &Path, name: &str, pairs: &[LabelledPair]) -> Result<PathBuf, DataError> {
    write_dataset(
        dir,
        name,
        pairs.iter().map(|p| &p.pair),
        &unscored_run_info(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count_hallucinations;
    use dama_data::{ReadOptions, open_dataset};

    fn small(seed: u64) -> WorldSpec {
        WorldSpec {
            train: 40,
            preference: 16,
            heldout: 12,
            image_size: 32,
            seed,
        }
    }

    #[test]
    fn splits_are_seeded_independent_and_held_out_is_unseen() {
        let (a, b) = (World::build(&small(1)), World::build(&small(1)));
        assert_eq!(
            (a.train.len(), a.preference.len(), a.heldout.len()),
            (40, 16, 12)
        );
        assert_eq!(a.train, b.train);
        assert_eq!(a.heldout, b.heldout);
        let other = World::build(&small(2));
        assert_ne!(a.train, other.train);
        // A larger training split leaves the preference split as it is.
        let more = World::build(&WorldSpec {
            train: 80,
            ..small(1)
        });
        assert_eq!(more.preference, a.preference);
        assert_eq!(&more.train[..40], &a.train[..]);
        // No held-out scene is in another split (checked on a world where repeats are likely).
        let big = World::build(&WorldSpec {
            train: 2000,
            preference: 500,
            heldout: 200,
            image_size: 16,
            seed: 3,
        });
        let seen: HashSet<&Scene> = big
            .train
            .iter()
            .chain(&big.preference)
            .map(|e| &e.scene)
            .collect();
        assert!(big.heldout.iter().all(|e| !seen.contains(&e.scene)));
        let ids: HashSet<&str> = big
            .train
            .iter()
            .chain(&big.preference)
            .chain(&big.heldout)
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids.len(), 2700);
        // Descriptions are true: no hallucinated object, no false statement, every object named.
        for e in big.train.iter().chain(&big.heldout) {
            let h = count_hallucinations(&e.description(), &e.scene);
            assert_eq!((h.hallucinated, h.false_statements), (0, 0), "{e:?}");
            assert_eq!(h.mentions.len(), e.scene.shapes.len());
        }
    }

    #[test]
    fn captions_are_true_and_their_negatives_false() {
        let world = World::build(&small(4));
        let captions = world.captions();
        let facts: usize = world.train.iter().map(|e| e.scene.facts().len()).sum();
        assert_eq!(captions.len(), facts);
        for c in &captions {
            let scene = &world.train[c.image].scene;
            let (t, n) = (
                count_hallucinations(&c.text, scene),
                count_hallucinations(&c.negative, scene),
            );
            assert_eq!(t.hallucinated + t.false_statements, 0, "{c:?}");
            assert_eq!(n.hallucinated + n.false_statements, 1, "{c:?}");
            assert_ne!(c.text, c.negative);
        }
    }

    #[test]
    fn unscored_pairs_read_back_with_their_sentences() {
        let world = World::build(&small(5));
        let pairs = world.pairs(&world.preference, "preference");
        assert_eq!(pairs, world.pairs(&world.preference, "preference"));
        let dir = tempfile::tempdir().unwrap();
        let path = write_pairs(dir.path(), "pairs", &pairs).unwrap();
        let records = open_dataset(&path, None, ReadOptions::strict()).unwrap();
        let header = records.header().unwrap().clone();
        assert_eq!((header.clip_model, header.scored), (None, 0));
        let (read, summary) = records.read_all().unwrap();
        assert!(summary.errors.is_empty());
        assert_eq!(read.len(), 16);
        for (r, p) in read.iter().zip(&pairs) {
            assert_eq!(
                (&r.id, &r.chosen, &r.rejected),
                (&p.pair.id, &p.pair.chosen, &p.pair.rejected)
            );
            assert_eq!(r.sub_sentences, p.pair.sub_sentences);
            assert_eq!((r.delta, r.alpha_d), (None, None));
            let img = r.image.decoded.as_ref().unwrap();
            assert_eq!((img.width(), img.height()), (32, 32));
        }
    }
}

//! Preference pairs built from the ground truth: chosen = an example's true description,
//! rejected = the same description with 1–3 of its facts made false. This is the pair builder
//! until answers sampled from an SFT model (labelled by
//! [`count_hallucinations`](crate::count_hallucinations)) replace it; it is a function of its
//! own so that they can.

use dama_core::Xoshiro256;
use dama_data::{ImageRef, PreferencePair, Source, SubSentences};

use crate::example::Example;
use crate::grammar::Fact;
use crate::scene::{Kind, Place, Scene, Shape, Size, pick};

/// A preference pair with the ground truth behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledPair {
    /// Image bytes (PNG), question, both answers and their sub-sentences (the generator's own
    /// sentences), tags `errors:N` and the kinds of hallucination; no scores.
    pub pair: PreferencePair,
    /// What the image shows.
    pub scene: Scene,
    /// Hallucinated facts in the rejected answer (1–3), each one false sentence. More errors:
    /// an easier pair.
    pub errors: usize,
    /// The facts behind each sub-sentence of the chosen and the rejected answer.
    pub chosen_facts: Vec<Fact>,
    pub rejected_facts: Vec<Fact>,
}

/// The pair of `example`: its true description against the same with 1–3 false facts (drawn
/// from `rng`: the number of errors, then each error), in the description's template.
pub fn true_vs_hallucinated(rng: &mut Xoshiro256, example: &Example) -> LabelledPair {
    let chosen = example.facts();
    let errors = 1 + rng.below(3) as usize;
    let (rejected, kinds) = hallucinate(rng, &example.scene, &chosen, errors);
    let text = |facts: &[Fact]| -> Vec<String> {
        facts.iter().map(|f| f.sentence(example.template)).collect()
    };
    let (chosen_subs, rejected_subs) = (text(&chosen), text(&rejected));
    let image = ImageRef::embedded(Some(example.file_name.clone()), example.image.clone());
    let mut pair = PreferencePair::new(
        example.id.clone(),
        image,
        example.question_text(),
        chosen_subs.join(" "),
        rejected_subs.join(" "),
    );
    pair.sub_sentences = Some(SubSentences {
        chosen: chosen_subs,
        rejected: rejected_subs,
    });
    // The ground truth travels in the file too, for inspecting the data in the browser.
    pair.annotation.tags = std::iter::once(format!("errors:{errors}"))
        .chain(kinds.into_iter().map(str::to_owned))
        .collect();
    pair.source = Source {
        ds_name: Some("synthetic".to_owned()),
        idx: Some(example.index as i64),
        ..Source::default()
    };
    LabelledPair {
        pair,
        scene: example.scene.clone(),
        errors,
        chosen_facts: chosen,
        rejected_facts: rejected,
    }
}

/// The tags of hallucinations that make an object mention false (the others are about the
/// background or the count).
pub const OBJECT_ERRORS: [&str; 5] = [
    "wrong_colour",
    "wrong_shape",
    "wrong_position",
    "wrong_size",
    "absent_object",
];

/// The rejected answer: the chosen facts with `errors` of them made false, each a different
/// sentence, either by changing one attribute of a stated fact or by adding an object at an empty
/// place; returns the facts and the kind of each error.
fn hallucinate(
    rng: &mut Xoshiro256,
    scene: &Scene,
    chosen: &[Fact],
    errors: usize,
) -> (Vec<Fact>, Vec<&'static str>) {
    let mut facts = chosen.to_vec();
    let mut changed = vec![false; facts.len()];
    let mut kinds = Vec::with_capacity(errors);
    for _ in 0..errors {
        let stated = |facts: &[Fact], p: Place| {
            facts
                .iter()
                .any(|f| matches!(f, Fact::Object(s) if s.place == p))
        };
        let empty: Vec<Place> = Place::ALL
            .into_iter()
            .filter(|&p| scene.shapes.iter().all(|s| s.place != p) && !stated(&facts, p))
            .collect();
        // Choices: each unchanged sentence, and one more "absent object" sentence (answers stay
        // at 5 sentences or fewer). Never none: a 2-fact answer has 1 shape, so 4 empty places.
        let mut options: Vec<Option<usize>> = (0..facts.len())
            .filter(|&i| !changed[i])
            .map(Some)
            .collect();
        if !empty.is_empty() && facts.len() < 5 {
            options.push(None);
        }
        match pick(rng, &options) {
            Some(i) => {
                let variants = facts[i].false_variants(scene);
                let kind_names: Vec<&str> = dedup(variants.iter().map(|(k, _)| *k));
                let kind = pick(rng, &kind_names);
                let of_kind: Vec<Fact> = variants
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, f)| *f)
                    .collect();
                facts[i] = pick(rng, &of_kind);
                changed[i] = true;
                kinds.push(kind);
            }
            None => {
                let phantom = Fact::Object(Shape {
                    kind: pick(rng, &Kind::ALL),
                    colour: pick(rng, &Scene::shape_colours(scene.background)),
                    place: pick(rng, &empty),
                    size: pick(rng, &Size::ALL),
                });
                let at = rng.below(facts.len() as u64 + 1) as usize;
                facts.insert(at, phantom);
                changed.insert(at, true);
                kinds.push("absent_object");
            }
        }
    }
    (facts, kinds)
}

fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

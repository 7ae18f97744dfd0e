//! Preference pairs from answers a model sampled, as the paper's data is built (RLAIF-V: several
//! answers per image from the model being aligned, ranked by their hallucinations): each answer
//! is labelled by [`errors_of`] against the image's exact ground truth, the most faithful one is
//! chosen and the least faithful one rejected. Images whose answers all tie give no pair.
//!
//! An answer that names no object of the scene hallucinates nothing, yet says nothing either:
//! it may be rejected but never chosen (else empty or garbled samples would win every image).

use dama_data::{ImageRef, PreferencePair, Source};

use crate::example::Example;
use crate::hallucination::count_hallucinations;
use crate::scene::Scene;

/// A pair of sampled answers with the ground truth behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledPair {
    /// Image, question and the two answers; no sub-sentences (`score`'s splitter makes them, as
    /// for any user's data); tags `sampled`, `chosen_errors:N`, `rejected_errors:M`.
    pub pair: PreferencePair,
    pub scene: Scene,
    pub chosen_errors: usize,
    pub rejected_errors: usize,
}

impl SampledPair {
    /// How many more errors the rejected answer makes: the larger, the easier the pair.
    pub fn gap(&self) -> usize {
        self.rejected_errors - self.chosen_errors
    }
}

/// An answer's errors against `scene`: hallucinated objects (a kind, colour, size or place the
/// scene does not have) and false statements about the background or the number of shapes.
pub fn errors_of(answer: &str, scene: &Scene) -> usize {
    let h = count_hallucinations(answer, scene);
    h.hallucinated + h.false_statements
}

/// The pair of `example` from `answers` (its samples, in order): the first of the fewest errors
/// among the answers that name an object of the scene, against the first of the most errors;
/// `None` when no answer can be chosen or none makes more errors than the chosen one.
pub fn pair_from_samples(example: &Example, answers: &[String]) -> Option<SampledPair> {
    let labelled: Vec<(usize, usize, bool)> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let h = count_hallucinations(a, &example.scene);
            (i, h.hallucinated + h.false_statements, h.faithful() > 0)
        })
        .collect();
    let &(c, chosen_errors, _) = labelled
        .iter()
        .filter(|(_, _, names_an_object)| *names_an_object)
        .min_by_key(|(i, e, _)| (*e, *i))?;
    let &(r, rejected_errors, _) = labelled
        .iter()
        .min_by_key(|(i, e, _)| (usize::MAX - e, *i))?;
    if rejected_errors <= chosen_errors {
        return None;
    }
    let image = ImageRef::embedded(Some(example.file_name.clone()), example.image.clone());
    let mut pair = PreferencePair::new(
        example.id.clone(),
        image,
        example.question_text(),
        answers[c].clone(),
        answers[r].clone(),
    );
    pair.annotation.tags = vec![
        "sampled".to_owned(),
        format!("chosen_errors:{chosen_errors}"),
        format!("rejected_errors:{rejected_errors}"),
    ];
    pair.source = Source {
        ds_name: Some("sampled".to_owned()),
        idx: Some(example.index as i64),
        ..Source::default()
    };
    Some(SampledPair {
        pair,
        scene: example.scene.clone(),
        chosen_errors,
        rejected_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{World, WorldSpec};

    fn example() -> Example {
        let world = World::build(&WorldSpec {
            train: 4,
            preference: 0,
            heldout: 0,
            image_size: 32,
            seed: 5,
        });
        world.train[0].clone()
    }

    #[test]
    fn the_most_faithful_answer_is_chosen_and_errors_are_counted() {
        let e = example();
        let truth = e.description();
        assert_eq!(errors_of(&truth, &e.scene), 0);
        // every false variant of the description's facts adds one error
        let facts = e.facts();
        let mut wrong = Vec::new();
        for f in &facts {
            let variants = f.false_variants(&e.scene);
            wrong.push(variants.first().map_or(*f, |(_, v)| *v));
        }
        let false_text: Vec<String> = wrong.iter().map(|f| f.sentence(e.template)).collect();
        let all_wrong = false_text.join(" ");
        let n = errors_of(&all_wrong, &e.scene);
        assert!(n >= 1, "{all_wrong}");
        let one_wrong = std::iter::once(false_text[0].clone())
            .chain(facts[1..].iter().map(|f| f.sentence(e.template)))
            .collect::<Vec<_>>()
            .join(" ");
        let answers = vec![
            one_wrong.clone(),
            all_wrong.clone(),
            truth.clone(),
            String::new(),
        ];
        let p = pair_from_samples(&e, &answers).unwrap();
        assert_eq!(p.pair.chosen, truth);
        assert_eq!(p.pair.rejected, all_wrong);
        assert_eq!((p.chosen_errors, p.rejected_errors, p.gap()), (0, n, n));
        assert!(
            p.pair
                .annotation
                .tags
                .contains(&format!("rejected_errors:{n}"))
        );
    }

    #[test]
    fn ties_and_answers_without_objects_give_no_pair() {
        let e = example();
        let truth = e.description();
        assert_eq!(pair_from_samples(&e, &[truth.clone(), truth.clone()]), None);
        // an empty answer has no error but is never chosen
        assert_eq!(
            pair_from_samples(&e, &[String::new(), "the the".into()]),
            None
        );
        let p = pair_from_samples(&e, &[String::new(), truth.clone()]);
        assert_eq!(
            p, None,
            "the empty answer makes no more errors than the truth"
        );
    }
}

//! The world's language: the facts an answer can state about a scene, the one sentence each
//! becomes, the questions, which facts a truthful answer to each states, and the false variants
//! of a fact that a hallucination can produce. Every word the grammar can emit is in
//! [`vocabulary`].

use crate::scene::{Colour, Kind, Place, Scene, Shape, Size};

/// One statement an answer can make; each becomes one sentence (one sub-sentence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fact {
    Object(Shape),
    Background(Colour),
    Count(usize),
}

/// The questions, and which facts a truthful answer to each states (in order: see
/// [`Scene::facts_for`]).
pub const QUESTIONS: [&str; 5] = [
    "What is in the image?",
    "Describe the image.",
    "What shapes can you see?",
    "What colour is the background?",
    "How many shapes are there?",
];

/// Sentence templates for an object: "There is a big red circle on the left." The rejected
/// answer of a pair uses the chosen one's template, so the two differ only in their facts.
pub const OBJECT_TEMPLATES: usize = 3;

/// Number words for counts 1–4 (a hallucinated count may say four).
const NUMBERS: [&str; 4] = ["one", "two", "three", "four"];

impl Fact {
    /// Whether the fact is true of `scene`.
    pub fn holds(&self, scene: &Scene) -> bool {
        match self {
            Fact::Object(shape) => scene.shapes.contains(shape),
            Fact::Background(colour) => *colour == scene.background,
            Fact::Count(n) => *n == scene.shapes.len(),
        }
    }

    /// The fact's sentence; `template` picks one of [`OBJECT_TEMPLATES`] object phrasings.
    pub fn sentence(&self, template: usize) -> String {
        match *self {
            Fact::Object(Shape {
                kind,
                colour,
                place,
                size,
            }) => {
                let (size, colour, kind, place) =
                    (size.name(), colour.name(), kind.name(), place.phrase());
                match template % OBJECT_TEMPLATES {
                    0 => format!("There is a {size} {colour} {kind} {place}."),
                    1 => format!("The image shows a {size} {colour} {kind} {place}."),
                    _ => format!("A {size} {colour} {kind} is {place}."),
                }
            }
            Fact::Background(colour) => format!("The background is {}.", colour.name()),
            Fact::Count(1) => "There is one shape.".to_owned(),
            Fact::Count(n) => format!("There are {} shapes.", NUMBERS[n - 1]),
        }
    }

    /// Every false variant of this fact that one hallucination of each kind could produce, with
    /// the kind's name (recorded as a tag of a pair).
    pub fn false_variants(&self, scene: &Scene) -> Vec<(&'static str, Fact)> {
        let mut out = Vec::new();
        match *self {
            Fact::Object(s) => {
                for colour in Colour::ALL {
                    out.push(("wrong_colour", Fact::Object(Shape { colour, ..s })));
                }
                for kind in Kind::ALL {
                    out.push(("wrong_shape", Fact::Object(Shape { kind, ..s })));
                }
                for place in Place::ALL {
                    out.push(("wrong_position", Fact::Object(Shape { place, ..s })));
                }
                for size in Size::ALL {
                    out.push(("wrong_size", Fact::Object(Shape { size, ..s })));
                }
            }
            Fact::Background(_) => {
                out.extend(Colour::ALL.map(|c| ("wrong_background", Fact::Background(c))));
            }
            Fact::Count(_) => out.extend((1..=4).map(|n| ("wrong_count", Fact::Count(n)))),
        }
        // Moving a shape to a place where an identical one sits would state a truth.
        out.retain(|(_, fact)| !fact.holds(scene));
        out
    }
}

impl Scene {
    /// What a truthful answer to question `question` (an index into [`QUESTIONS`]) says: 2–4
    /// facts.
    pub fn facts_for(&self, question: usize) -> Vec<Fact> {
        let objects = self.shapes.iter().map(|&s| Fact::Object(s));
        let background = Fact::Background(self.background);
        let count = Fact::Count(self.shapes.len());
        match question {
            0 => objects.chain([background]).collect(),
            1 if self.shapes.len() < 3 => [count]
                .into_iter()
                .chain(objects)
                .chain([background])
                .collect(),
            1 => objects.chain([background]).collect(),
            2 | 4 => [count].into_iter().chain(objects).collect(),
            _ => [background].into_iter().chain(objects).collect(),
        }
    }

    /// Every true fact of the scene: its objects, its background and its count.
    pub fn facts(&self) -> Vec<Fact> {
        self.shapes
            .iter()
            .map(|&s| Fact::Object(s))
            .chain([
                Fact::Background(self.background),
                Fact::Count(self.shapes.len()),
            ])
            .collect()
    }
}

/// Every word the grammar emits (questions and answers), lowercased, each once, in a fixed
/// order: the vocabulary of a word-level tokenizer for this world.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = Vec::new();
    let mut add = |w: &'static str| {
        if !words.contains(&w) {
            words.push(w);
        }
    };
    const GLUE: [&str; 21] = [
        "there",
        "is",
        "are",
        "a",
        "the",
        "image",
        "shows",
        "background",
        "shape",
        "shapes",
        "on",
        "at",
        "in",
        "what",
        "describe",
        "can",
        "you",
        "see",
        "colour",
        "how",
        "many",
    ];
    GLUE.into_iter().for_each(&mut add);
    Colour::ALL.into_iter().map(Colour::name).for_each(&mut add);
    Kind::ALL.into_iter().map(Kind::name).for_each(&mut add);
    Kind::ALL.into_iter().map(Kind::plural).for_each(&mut add);
    Size::ALL.into_iter().map(Size::name).for_each(&mut add);
    Place::ALL.into_iter().map(Place::word).for_each(&mut add);
    NUMBERS.into_iter().for_each(&mut add);
    [".", "?"].into_iter().for_each(&mut add);
    words
}

/// Lowercased words and punctuation marks of `text`, as [`vocabulary`] spells them.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::Scene;
    use dama_core::Xoshiro256;

    #[test]
    fn every_sentence_and_question_is_in_the_vocabulary() {
        let vocab = vocabulary();
        let mut rng = Xoshiro256::seed_from(4);
        let mut texts: Vec<String> = QUESTIONS.iter().map(|q| q.to_string()).collect();
        for _ in 0..200 {
            let scene = Scene::random(&mut rng);
            for fact in scene.facts() {
                for t in 0..OBJECT_TEMPLATES {
                    texts.push(fact.sentence(t));
                    for (_, f) in fact.false_variants(&scene) {
                        texts.push(f.sentence(t));
                    }
                }
            }
        }
        for text in &texts {
            for w in words(text) {
                assert!(vocab.contains(&w.as_str()), "{w:?} of {text:?}");
            }
        }
        let mut sorted = vocab.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), vocab.len());
    }

    #[test]
    fn words_split_punctuation_and_lowercase() {
        assert_eq!(
            words("There is a Big red circle on the left. Two?"),
            [
                "there", "is", "a", "big", "red", "circle", "on", "the", "left", ".", "two", "?"
            ]
        );
        assert!(words("  ").is_empty());
    }

    #[test]
    fn true_facts_hold_and_false_variants_do_not() {
        let mut rng = Xoshiro256::seed_from(5);
        for _ in 0..200 {
            let scene = Scene::random(&mut rng);
            for q in 0..QUESTIONS.len() {
                let facts = scene.facts_for(q);
                assert!((2..=4).contains(&facts.len()));
                assert!(facts.iter().all(|f| f.holds(&scene)));
            }
            for fact in scene.facts() {
                assert!(fact.holds(&scene));
                let variants = fact.false_variants(&scene);
                assert!(!variants.is_empty());
                assert!(variants.iter().all(|(_, f)| !f.holds(&scene)));
            }
        }
    }
}

//! Counting the hallucinated objects of any answer text against a scene's exact ground truth,
//! word by word with the world's vocabulary: what labels sampled answers (chosen = the more
//! faithful one) and what CHAIR counts.
//!
//! An object mention is a kind word (`circle`, `squares`…). Its stated attributes are the size
//! and colour words right before it and the first place word after it, before the next kind word
//! or the end of its sentence: "a big red circle on the left", "a small blue square is at the
//! top". A mention is hallucinated when no object of the scene has its kind and every attribute
//! it states; attributes it leaves out are not held against it ("a circle" is true of any
//! circle). Any text can be counted: words the world does not know are ignored, so a garbled
//! sampled answer has fewer mentions, not an error.
//!
//! Statements about the background ("the background is blue") and the count ("there are two
//! shapes") are not objects; they are counted apart, in [`Hallucinations::false_statements`].

use crate::grammar::words;
use crate::scene::{Colour, Kind, Place, Scene, Size};

/// One object an answer names, with the attributes it states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mention {
    pub kind: Kind,
    pub colour: Option<Colour>,
    pub size: Option<Size>,
    pub place: Option<Place>,
}

impl Mention {
    /// Whether some object of `scene` is what this mention says.
    pub fn is_true_of(&self, scene: &Scene) -> bool {
        scene.shapes.iter().any(|s| {
            s.kind == self.kind
                && self.colour.is_none_or(|c| c == s.colour)
                && self.size.is_none_or(|z| z == s.size)
                && self.place.is_none_or(|p| p == s.place)
        })
    }
}

/// What [`count_hallucinations`] found in one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hallucinations {
    /// Every object mention, in the text's order.
    pub mentions: Vec<Mention>,
    /// Mentions no object of the scene matches: the hallucinated objects.
    pub hallucinated: usize,
    /// Sentences about the background or the number of shapes that are false.
    pub false_statements: usize,
}

impl Hallucinations {
    /// Mentions of objects that are in the scene.
    pub fn faithful(&self) -> usize {
        self.mentions.len() - self.hallucinated
    }
}

fn kind_of(word: &str) -> Option<Kind> {
    Kind::ALL
        .into_iter()
        .find(|k| k.name() == word || k.plural() == word)
}

fn colour_of(word: &str) -> Option<Colour> {
    Colour::ALL.into_iter().find(|c| c.name() == word)
}

fn size_of(word: &str) -> Option<Size> {
    Size::ALL.into_iter().find(|s| s.name() == word)
}

fn place_of(word: &str) -> Option<Place> {
    Place::ALL.into_iter().find(|p| p.word() == word)
}

fn number_of(word: &str) -> Option<usize> {
    ["one", "two", "three", "four", "five"]
        .iter()
        .position(|&n| n == word)
        .map(|i| i + 1)
}

/// The object mentions of `text` (see the module docs).
pub fn object_mentions(text: &str) -> Vec<Mention> {
    let mut out = Vec::new();
    for sentence in sentences(text) {
        out.extend(sentence_mentions(&sentence));
    }
    out
}

fn sentences(text: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for w in words(text) {
        if matches!(w.as_str(), "." | "?" | "!") {
            out.push(Vec::new());
        } else {
            out.last_mut().expect("never empty").push(w);
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn sentence_mentions(words: &[String]) -> Vec<Mention> {
    let kinds: Vec<(usize, Kind)> = words
        .iter()
        .enumerate()
        .filter_map(|(i, w)| kind_of(w).map(|k| (i, k)))
        .collect();
    kinds
        .iter()
        .enumerate()
        .map(|(n, &(i, kind))| {
            let (mut colour, mut size) = (None, None);
            for w in words[..i].iter().rev() {
                match (colour_of(w), size_of(w)) {
                    (Some(c), _) if colour.is_none() => colour = Some(c),
                    (_, Some(s)) if size.is_none() => size = Some(s),
                    _ => break,
                }
            }
            let end = kinds.get(n + 1).map_or(words.len(), |&(j, _)| j);
            let place = words[i + 1..end].iter().find_map(|w| place_of(w));
            Mention {
                kind,
                colour,
                size,
                place,
            }
        })
        .collect()
}

/// Counts the object mentions of `text` and how many of them `scene` does not hold, and its
/// false statements about the background and the count.
pub fn count_hallucinations(text: &str, scene: &Scene) -> Hallucinations {
    let mut mentions = Vec::new();
    let mut false_statements = 0;
    for sentence in sentences(text) {
        let found = sentence_mentions(&sentence);
        if found.is_empty() {
            let has = |w: &str| sentence.iter().any(|x| x == w);
            if has("background") {
                let colour = sentence.iter().find_map(|w| colour_of(w));
                false_statements += usize::from(colour.is_some_and(|c| c != scene.background));
            } else if has("shape") || has("shapes") {
                let n = sentence.iter().find_map(|w| number_of(w));
                false_statements += usize::from(n.is_some_and(|n| n != scene.shapes.len()));
            }
        }
        mentions.extend(found);
    }
    let hallucinated = mentions.iter().filter(|m| !m.is_true_of(scene)).count();
    Hallucinations {
        mentions,
        hallucinated,
        false_statements,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::Shape;

    fn scene() -> Scene {
        Scene {
            background: Colour::White,
            shapes: vec![
                Shape {
                    kind: Kind::Circle,
                    colour: Colour::Red,
                    place: Place::Left,
                    size: Size::Big,
                },
                Shape {
                    kind: Kind::Square,
                    colour: Colour::Blue,
                    place: Place::Top,
                    size: Size::Small,
                },
            ],
        }
    }

    #[test]
    fn hand_made_answers() {
        let s = scene();
        let h = count_hallucinations(
            "There is a big red circle on the left. A small blue square is at the top.",
            &s,
        );
        assert_eq!(
            (h.mentions.len(), h.hallucinated, h.false_statements),
            (2, 0, 0)
        );
        assert_eq!(
            h.mentions[1],
            Mention {
                kind: Kind::Square,
                colour: Some(Colour::Blue),
                size: Some(Size::Small),
                place: Some(Place::Top),
            }
        );
        // Wrong colour, wrong place, an absent kind: three hallucinated objects of four.
        let h = count_hallucinations(
            "The image shows a big green circle on the left. A small blue square is in the \
             middle. There is a triangle. There is a circle.",
            &s,
        );
        assert_eq!((h.mentions.len(), h.hallucinated, h.faithful()), (4, 3, 1));
        // Background and count are not objects.
        let h = count_hallucinations(
            "The background is black. There are three shapes. The background is white.",
            &s,
        );
        assert_eq!(
            (h.mentions.len(), h.hallucinated, h.false_statements),
            (0, 0, 2)
        );
        // Two objects in one sentence keep their own places; plurals are mentions.
        let h = count_hallucinations(
            "A big red circle on the left and a small blue square on the right. Two triangles!",
            &s,
        );
        let places: Vec<Option<Place>> = h.mentions.iter().map(|m| m.place).collect();
        assert_eq!(places, [Some(Place::Left), Some(Place::Right), None]);
        assert_eq!(h.hallucinated, 2);
    }

    #[test]
    fn any_text_counts_without_error() {
        let s = scene();
        for text in [
            "",
            "...",
            "circle",
            "RED CIRCLE!!",
            "zzz qq 7 square of the top",
        ] {
            let h = count_hallucinations(text, &s);
            assert!(h.hallucinated <= h.mentions.len(), "{text:?}");
        }
        assert_eq!(count_hallucinations("RED CIRCLE", &s).hallucinated, 0);
        assert_eq!(count_hallucinations("small red circle", &s).hallucinated, 1);
    }
}

//! Clause boundaries inside one sentence: `;` and a coordinating conjunction after a comma, cut
//! only where both sides could stand as sentences of their own.

/// Conjunctions that join two independent clauses after a comma.
const CONJUNCTIONS: &[&str] = &["and", "but", "or", "so", "yet"];

/// Finite verb forms that mark a clause: auxiliaries, copulas and the verbs of image
/// descriptions. A word list, not a parser: it is meant to say "no" when unsure.
const VERBS: &[&str] = &[
    "is",
    "are",
    "was",
    "were",
    "am",
    "be",
    "been",
    "has",
    "have",
    "had",
    "does",
    "do",
    "did",
    "can",
    "could",
    "will",
    "would",
    "may",
    "might",
    "must",
    "should",
    "shall",
    "appears",
    "appear",
    "appeared",
    "seems",
    "seem",
    "seemed",
    "looks",
    "look",
    "looked",
    "sits",
    "sit",
    "sat",
    "stands",
    "stand",
    "stood",
    "lies",
    "lie",
    "lay",
    "rests",
    "rest",
    "hangs",
    "hang",
    "hung",
    "holds",
    "hold",
    "held",
    "wears",
    "wear",
    "wore",
    "shows",
    "show",
    "showed",
    "features",
    "contains",
    "contain",
    "includes",
    "include",
    "displays",
    "depicts",
    "covers",
    "cover",
    "surrounds",
    "surround",
    "carries",
    "carry",
    "rides",
    "ride",
    "walks",
    "walk",
    "runs",
    "run",
    "plays",
    "play",
    "eats",
    "eat",
    "flies",
    "fly",
    "grows",
    "grow",
    "leans",
    "lean",
    "faces",
    "reads",
    "says",
    "adds",
    "add",
    "creates",
    "create",
    "gives",
    "give",
    "provides",
    "provide",
    "suggests",
    "suggest",
    "indicates",
    "indicate",
    "captures",
    "fills",
    "fill",
    "lines",
    "sits",
    "remains",
    "remain",
    "belongs",
    "belong",
    "points",
    "point",
];

/// Words that open a dependent clause or a phrase, never an independent clause.
const DEPENDENT_OPENERS: &[&str] = &[
    "which", "who", "whom", "whose", "that", "where", "when", "while", "with", "without", "to",
    "as", "because", "if", "although", "though", "whereas", "since", "unless",
];

/// A subject and its verb in one word.
const CONTRACTIONS: &[&str] = &[
    "it's", "that's", "there's", "here's", "he's", "she's", "what's", "who's", "they're", "we're",
    "you're", "there're", "i'm", "i've", "we've", "they've", "it'll", "they'll",
];

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.replace('’', "'")
                .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// A verb without its subject: a listed form, or a negated auxiliary ("isn't", "doesn't").
fn is_verb(word: &str) -> bool {
    VERBS.contains(&word) || word.ends_with("n't")
}

/// The clause test: at least three words; a subject before a verb (a listed verb that is not
/// the first word, or a contraction such as "it's"); and a first word that is neither a bare verb
/// nor the opener of a dependent clause.
pub fn stands_alone(text: &str) -> bool {
    let words = words(text);
    let starts_well = words
        .first()
        .is_some_and(|w| !is_verb(w) && !DEPENDENT_OPENERS.contains(&w.as_str()));
    let subject_verb = words
        .iter()
        .enumerate()
        .any(|(i, w)| CONTRACTIONS.contains(&w.as_str()) || (i > 0 && is_verb(w)));
    words.len() >= 3 && starts_well && subject_verb
}

/// Splits one sentence into clauses. The `;` or `,` stays with the left clause and the
/// conjunction opens the right one, so no text is lost.
pub fn clauses(sentence: &str) -> Vec<String> {
    let candidates = candidates(sentence);
    let mut out = Vec::new();
    let mut start = 0;
    for (k, &(cut, body)) in candidates.iter().enumerate() {
        let next = candidates.get(k + 1).map_or(sentence.len(), |&(c, _)| c);
        let (left, right) = (&sentence[start..cut], &sentence[body..next]);
        if stands_alone(left) && stands_alone(right) {
            out.push(left.trim().to_owned());
            start = cut;
        }
    }
    let last = sentence[start..].trim();
    if !last.is_empty() {
        out.push(last.to_owned());
    }
    out
}

/// (where the right piece starts, where its clause body starts after the conjunction)
fn candidates(sentence: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, c) in sentence.char_indices() {
        let rest = &sentence[i + c.len_utf8()..];
        let after_space = rest.len() - rest.trim_start().len();
        if after_space == 0 {
            continue;
        }
        let cut = i + c.len_utf8() + after_space;
        match c {
            ';' => out.push((cut, cut)),
            ',' => {
                let word_end = sentence[cut..]
                    .find(char::is_whitespace)
                    .map_or(sentence.len(), |e| cut + e);
                if CONJUNCTIONS.contains(&sentence[cut..word_end].to_lowercase().as_str())
                    && word_end < sentence.len()
                {
                    out.push((cut, word_end));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(sentence: &str, expected: &[&str]) {
        assert_eq!(clauses(sentence), expected, "{sentence:?}");
    }

    #[test]
    fn independent_clauses_are_cut() {
        check(
            "A man is holding an umbrella, and the woman is wearing a hat.",
            &[
                "A man is holding an umbrella,",
                "and the woman is wearing a hat.",
            ],
        );
        check(
            "The sky is clear; the sun is shining.",
            &["The sky is clear;", "the sun is shining."],
        );
        check(
            "The food looks fresh, but the plate is chipped, so it's probably old.",
            &[
                "The food looks fresh,",
                "but the plate is chipped,",
                "so it's probably old.",
            ],
        );
        check(
            "There is a dog on the left, and there are two cats on the sofa.",
            &[
                "There is a dog on the left,",
                "and there are two cats on the sofa.",
            ],
        );
    }

    #[test]
    fn lists_and_dependent_pieces_stay_whole() {
        check(
            "There is a cat, a dog, and a bird.",
            &["There is a cat, a dog, and a bird."],
        );
        check(
            "The man is smiling, and is holding a cup.",
            &["The man is smiling, and is holding a cup."],
        );
        check(
            "The colours are red; blue; green.",
            &["The colours are red; blue; green."],
        );
        check(
            "She sits by the window, and which is open.",
            &["She sits by the window, and which is open."],
        );
        check("Cats, and dogs, are here.", &["Cats, and dogs, are here."]);
        check(
            "A red car, or a blue one, is parked there.",
            &["A red car, or a blue one, is parked there."],
        );
    }

    #[test]
    fn the_clause_test() {
        assert!(stands_alone("the woman is wearing a hat."));
        assert!(stands_alone("it's raining outside"));
        assert!(stands_alone("but it’s probably old"));
        assert!(!stands_alone("doesn't look good"), "no subject");
        assert!(
            !stands_alone("the dog's red tail"),
            "a possessive is no verb"
        );
        assert!(!stands_alone("is wearing a hat"), "no subject");
        assert!(!stands_alone("a big red hat"), "no verb");
        assert!(!stands_alone("it is"), "too short");
        assert!(!stands_alone("while the dog is asleep"), "dependent");
    }
}

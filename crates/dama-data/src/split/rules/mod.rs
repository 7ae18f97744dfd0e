//! The built-in splitter, `rules-v1`: deterministic and offline.
//!
//! 1. Sentences ([`sentences()`]): cut after `.`, `!`, `?`, `…` (and runs of them, with closing
//!    quotes and brackets) when whitespace and a capital (or digit, or the end) follow, except
//!    after abbreviations (`e.g.`, `Mr.`, `etc.` before a lower-case word…), initials and list
//!    numbers; decimals never qualify because no whitespace follows their point. A line break is
//!    always a cut.
//! 2. Clauses ([`clauses()`]): cut at `;` and before `and`/`but`/`or`/`so`/`yet` after a comma,
//!    only where both sides look like a clause of their own (see [`clauses::stands_alone`]).
//! 3. Length ([`fit()`]): a piece longer than the token limit is packed greedily at commas, then
//!    at spaces. A single word longer than the limit stays whole (CLIP truncates it).
//!
//! No text is ever dropped: the pieces, concatenated, hold every non-space character of the
//! answer in order; whitespace inside a piece is collapsed to single spaces.

pub mod clauses;
pub mod length;
pub mod sentences;

pub use clauses::clauses;
pub use length::{CLIP_CONTEXT, estimate_clip_tokens, fit};
pub use sentences::sentences;

use super::{SplitError, Splitter};

/// Counts the tokens a text takes in the CLIP text encoder, start and end tokens included.
pub type TokenCounter = Box<dyn Fn(&str) -> usize + Send + Sync>;

/// `rules-v1`. The token limit counts with a caller's function, e.g. dama-clip's tokenizer;
/// without one, [`estimate_clip_tokens`], which errs on the high side.
pub struct RuleSplitter {
    max_tokens: usize,
    count: TokenCounter,
}

impl Default for RuleSplitter {
    fn default() -> Self {
        Self {
            max_tokens: CLIP_CONTEXT,
            count: Box::new(estimate_clip_tokens),
        }
    }
}

impl RuleSplitter {
    pub const NAME: &'static str = "rules-v1";

    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps every piece within `max_tokens` as counted by `count`.
    pub fn with_token_counter(max_tokens: usize, count: TokenCounter) -> Self {
        Self { max_tokens, count }
    }

    /// The sub-sentences of one answer.
    pub fn split_text(&self, answer: &str) -> Vec<String> {
        split(answer, self.max_tokens, &*self.count)
    }
}

impl Splitter for RuleSplitter {
    fn name(&self) -> String {
        Self::NAME.to_owned()
    }

    fn split(&self, _question: &str, answer: &str) -> Result<Vec<String>, SplitError> {
        Ok(self.split_text(answer))
    }
}

/// Sentences, then clauses, then the length limit.
pub fn split(answer: &str, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    sentences(answer)
        .iter()
        .flat_map(|s| clauses(s))
        .flat_map(|c| fit(&c, max_tokens, count))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn non_space(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    #[test]
    fn real_answers() {
        let s = RuleSplitter::new();
        assert_eq!(
            s.split_text(
                "The image shows a red double-decker bus parked on a city street. The bus is carrying several passengers, and a man is standing near the front door. In the background, there are tall buildings and a few trees."
            ),
            [
                "The image shows a red double-decker bus parked on a city street.",
                "The bus is carrying several passengers,",
                "and a man is standing near the front door.",
                "In the background, there are tall buildings and a few trees.",
            ]
        );
        assert_eq!(
            s.split_text("In the image, a woman is holding an umbrella; she is wearing a yellow raincoat. The street is wet, e.g. from the rain, and cars are parked along it."),
            [
                "In the image, a woman is holding an umbrella;",
                "she is wearing a yellow raincoat.",
                "The street is wet, e.g. from the rain,",
                "and cars are parked along it.",
            ]
        );
        assert_eq!(
            s.split_text("There are 3.5 slices of pizza on the plate, a fork, and a knife... The table is made of wood."),
            ["There are 3.5 slices of pizza on the plate, a fork, and a knife...", "The table is made of wood."]
        );
    }

    #[test]
    fn a_caller_token_counter_sets_the_limit() {
        let words = |s: &str| s.split_whitespace().count();
        let s = RuleSplitter::with_token_counter(4, Box::new(words));
        assert_eq!(
            s.split_text("A cat sits on a mat, next to a big brown dog."),
            ["A cat sits on", "a mat,", "next to a big", "brown dog."]
        );
    }

    proptest! {
        #[test]
        fn never_drops_text_and_is_deterministic(text in "[A-Za-z0-9 .,;!?\"'()\n…-]{0,200}", max in 3usize..40) {
            let count = |s: &str| s.split_whitespace().count() + 2;
            let pieces = split(&text, max, &count);
            prop_assert_eq!(non_space(&pieces.concat()), non_space(&text));
            prop_assert_eq!(&pieces, &split(&text, max, &count));
            for p in &pieces {
                prop_assert!(!p.is_empty() && p.trim() == p && !p.contains("  ") && !p.contains('\n'));
                prop_assert!(count(p) <= max || !p.contains(' '), "{:?} is over the limit", p);
            }
        }
    }
}

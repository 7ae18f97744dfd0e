//! The 77-token limit of CLIP's text encoder: pieces over it are packed into shorter ones.

/// Tokens in CLIP's text context, start and end tokens included.
pub const CLIP_CONTEXT: usize = 77;

/// An estimate of the CLIP BPE token count of `text`, start and end tokens included, that errs
/// on the high side for English: CLIP's tokenizer gives every digit its own token, most words
/// one token, long words a few; here a word of n ASCII letters counts 1 + n/6, a word in other
/// scripts one per UTF-8 byte (byte-level BPE's worst case), and every digit and punctuation
/// mark one.
pub fn estimate_clip_tokens(text: &str) -> usize {
    let mut tokens = 2;
    let mut word_len = 0;
    let mut word_ascii = true;
    let flush = |len: &mut usize, ascii: &mut bool, tokens: &mut usize| {
        if *len > 0 {
            *tokens += if *ascii { 1 + *len / 6 } else { *len };
        }
        *len = 0;
        *ascii = true;
    };
    for c in text.to_lowercase().chars() {
        if c.is_alphabetic() {
            word_len += if c.is_ascii() { 1 } else { c.len_utf8() };
            word_ascii &= c.is_ascii();
        } else {
            flush(&mut word_len, &mut word_ascii, &mut tokens);
            if !c.is_whitespace() {
                tokens += 1;
            }
        }
    }
    flush(&mut word_len, &mut word_ascii, &mut tokens);
    tokens
}

/// `piece` as is when `count(piece) <= max_tokens`; otherwise packed greedily at commas, and a
/// comma-separated part still too long packed greedily at spaces.
pub fn fit(piece: &str, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    if count(piece) <= max_tokens {
        return vec![piece.to_owned()];
    }
    let mut out = Vec::new();
    for part in pack(split_after_commas(piece), max_tokens, count) {
        if count(&part) <= max_tokens {
            out.push(part);
        } else {
            out.extend(pack(
                part.split(' ').map(str::to_owned).collect(),
                max_tokens,
                count,
            ));
        }
    }
    out
}

fn split_after_commas(piece: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in piece.match_indices(", ") {
        parts.push(piece[start..=i].to_owned());
        start = i + 2;
    }
    parts.push(piece[start..].to_owned());
    parts
}

/// Joins consecutive units with spaces while the result stays within the limit.
fn pack(units: Vec<String>, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for unit in units.into_iter().filter(|u| !u.is_empty()) {
        current = Some(match current.take() {
            None => unit,
            Some(cur) => {
                let joined = format!("{cur} {unit}");
                if count(&joined) <= max_tokens {
                    joined
                } else {
                    out.push(cur);
                    unit
                }
            }
        });
    }
    out.extend(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_at_least_the_clip_count_of_known_texts() {
        // CLIP token counts (with start/end) from openai/clip-vit-base-patch32's tokenizer.
        assert_eq!(estimate_clip_tokens(""), 2);
        assert!(estimate_clip_tokens("a photo of a cat") >= 7);
        assert!(estimate_clip_tokens("a red double-decker bus, 2024.") >= 11);
        assert_eq!(estimate_clip_tokens("skateboarding"), 2 + 1 + 13 / 6);
        assert_eq!(estimate_clip_tokens("café"), 2 + 5);
    }

    #[test]
    fn long_pieces_are_packed_at_commas_then_spaces() {
        let words = |s: &str| s.split(' ').count();
        assert_eq!(fit("a b c", 3, &words), ["a b c"]);
        assert_eq!(fit("a b, c d, e f g", 4, &words), ["a b, c d,", "e f g"]);
        assert_eq!(fit("a b c d e, f", 2, &words), ["a b", "c d", "e,", "f"]);
        let chars = |s: &str| s.len();
        assert_eq!(
            fit("tiny enormousword", 5, &chars),
            ["tiny", "enormousword"],
            "a long word stays whole"
        );
    }
}

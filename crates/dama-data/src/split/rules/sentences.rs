//! Sentence boundaries, robust to the abbreviations, decimals, ellipses, quotes and numbered
//! lists of real answers.

/// Sentence terminators. The full-width ones end a sentence with no space after them.
fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

/// What may close a sentence after its terminator: `He said "Stop." Then…`.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '»')
}

/// What may open a sentence before its first letter.
fn is_opener(c: char) -> bool {
    matches!(c, '"' | '\'' | '“' | '‘' | '(' | '[' | '«')
}

/// Abbreviations after which a period never ends a sentence (lower-cased, inner periods kept).
const NEVER_FINAL: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "sgt", "capt", "lt", "col", "gen", "rev",
    "hon", "mt", "ft", "e.g", "i.e", "vs", "cf", "viz", "approx", "esp", "incl", "dept", "est",
    "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec",
];

/// Abbreviations that a number follows: `No. 5`, `Fig. 2`, `approx. 3 m`.
const BEFORE_NUMBER: &[&str] = &[
    "no", "nos", "fig", "figs", "p", "pp", "vol", "ch", "sec", "ca", "approx", "nr",
];

/// Splits `text` into sentences, each trimmed with inner whitespace collapsed.
pub fn sentences(text: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let byte_at = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let mut cuts = Vec::new();
    let mut sentence_start = 0; // char index where the current sentence began
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        if c == '\n' {
            cuts.push(byte_at(i));
            sentence_start = i + 1;
            i += 1;
            continue;
        }
        if !is_terminator(c) {
            i += 1;
            continue;
        }
        let run_start = i;
        let mut j = i;
        while j < n && is_terminator(chars[j].1) {
            j += 1;
        }
        let run_end = j;
        while j < n && is_closer(chars[j].1) {
            j += 1;
        }
        let full_width = chars[run_start..run_end]
            .iter()
            .any(|&(_, c)| matches!(c, '。' | '！' | '？'));
        let spaced = j == n || chars[j].1.is_whitespace();
        if (full_width || spaced) && ends_sentence(&chars, sentence_start, run_start, run_end, j) {
            cuts.push(byte_at(j));
            sentence_start = j;
        }
        i = j;
    }
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([text.len()]) {
        let piece = collapse(&text[from..cut]);
        if !piece.is_empty() {
            out.push(piece);
        }
        from = cut;
    }
    out
}

/// Whether the terminator run `chars[run_start..run_end]` (closers up to `after`) ends the
/// sentence that began at `sentence_start`.
fn ends_sentence(
    chars: &[(usize, char)],
    sentence_start: usize,
    run_start: usize,
    run_end: usize,
    after: usize,
) -> bool {
    let mut k = after;
    while k < chars.len() && (chars[k].1.is_whitespace() || is_opener(chars[k].1)) {
        k += 1;
    }
    let Some(&(_, next)) = chars.get(k) else {
        return true;
    };
    if next.is_lowercase() {
        return false; // "e.g. the", "… and", "\"Why?\" she asked"
    }
    if run_end - run_start > 1 || chars[run_start].1 != '.' {
        return true;
    }
    // A single period: look at the word it ends.
    let mut w = run_start;
    while w > sentence_start && (chars[w - 1].1.is_alphanumeric() || chars[w - 1].1 == '.') {
        w -= 1;
    }
    let word: String = chars[w..run_start].iter().map(|&(_, c)| c).collect();
    let lower = word.to_lowercase();
    if NEVER_FINAL.contains(&lower.as_str()) {
        return false;
    }
    let mut letters = word.chars();
    if let (Some(only), None) = (letters.next(), letters.next())
        && only.is_uppercase()
    {
        return false; // an initial: "J. K. Rowling"
    }
    if next.is_ascii_digit() && BEFORE_NUMBER.contains(&lower.as_str()) {
        return false;
    }
    let first_token = chars[sentence_start..w]
        .iter()
        .all(|&(_, c)| c.is_whitespace() || is_opener(c));
    if first_token && !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
        return false; // a list number: "1. The cat…"
    }
    true
}

pub(crate) fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: &[&str]) {
        assert_eq!(sentences(text), expected, "{text:?}");
    }

    #[test]
    fn plain_sentences() {
        check(
            "A dog runs. It is brown! Is it happy? Yes.",
            &["A dog runs.", "It is brown!", "Is it happy?", "Yes."],
        );
        check(
            "  One sentence without an end  ",
            &["One sentence without an end"],
        );
        check("", &[]);
        check(" \n ", &[]);
    }

    #[test]
    fn abbreviations_and_initials() {
        check(
            "Mr. Smith and Dr. Jones stand by the car, e.g. a sedan. It is red.",
            &[
                "Mr. Smith and Dr. Jones stand by the car, e.g. a sedan.",
                "It is red.",
            ],
        );
        check(
            "The poster shows J. K. Rowling. She smiles.",
            &["The poster shows J. K. Rowling.", "She smiles."],
        );
        check(
            "There are apples, pears, etc. on the table.",
            &["There are apples, pears, etc. on the table."],
        );
        check(
            "There are apples, pears, etc. The bowl is blue.",
            &["There are apples, pears, etc.", "The bowl is blue."],
        );
        check(
            "See Fig. 2 for the layout. The sign reads No. 5 Main St. in white.",
            &[
                "See Fig. 2 for the layout.",
                "The sign reads No. 5 Main St. in white.",
            ],
        );
        check(
            "The clock shows 5 p.m. The sky is dark.",
            &["The clock shows 5 p.m.", "The sky is dark."],
        );
    }

    #[test]
    fn numbers_ellipses_quotes() {
        check(
            "The bottle holds 1.5 liters. It is full.",
            &["The bottle holds 1.5 liters.", "It is full."],
        );
        check(
            "It costs $3.99... Maybe less.",
            &["It costs $3.99...", "Maybe less."],
        );
        check(
            "The sign says wait... and then go.",
            &["The sign says wait... and then go."],
        );
        check(
            "He said \"Stop.\" Then he left.",
            &["He said \"Stop.\"", "Then he left."],
        );
        check(
            "\"Why?\" she asked. \"Because,\" he said.",
            &["\"Why?\" she asked.", "\"Because,\" he said."],
        );
        check(
            "The shirt reads \"GO TEAM!\" in bold letters.",
            &["The shirt reads \"GO TEAM!\" in bold letters."],
        );
        check(
            "It is over (finally.) Next comes lunch.",
            &["It is over (finally.)", "Next comes lunch."],
        );
        check("Wait?! That is strange.", &["Wait?!", "That is strange."]);
        check(
            "The model is version 2. The next one is 3.",
            &["The model is version 2.", "The next one is 3."],
        );
    }

    #[test]
    fn lines_and_lists() {
        check(
            "Objects:\n1. A red ball.\n2. A blue cup. It is empty.\n\n- A chair",
            &[
                "Objects:",
                "1. A red ball.",
                "2. A blue cup.",
                "It is empty.",
                "- A chair",
            ],
        );
        check(
            "1. The cat sleeps. 2. The dog barks.",
            &["1. The cat sleeps.", "2. The dog barks."],
        );
    }

    #[test]
    fn full_width_terminators() {
        check("猫在睡觉。狗在叫！", &["猫在睡觉。", "狗在叫！"]);
    }
}

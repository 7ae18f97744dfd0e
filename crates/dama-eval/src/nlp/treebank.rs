//! NLTK's `NLTKWordTokenizer.tokenize` (nltk/tokenize/destructive.py, NLTK 3.10.4): the
//! improved Treebank tokenizer `word_tokenize` applies to each Punkt sentence. It is a fixed
//! sequence of regex substitutions followed by `str.split()`; each rule below is NLTK's, in
//! NLTK's order, written for Rust's regex syntax. Python's `$` (end of text, or before a final
//! newline) is spelled `(?=\n?\z)`; `(?#X)` comments are dropped.

use std::sync::LazyLock;

use fancy_regex::Regex;

use super::{py_split, regex};

/// Python's `$` outside MULTILINE mode.
const END: &str = r"(?=\n?\z)";

struct Rules {
    starting_quotes: Vec<(Regex, &'static str)>,
    punctuation: Vec<(Regex, &'static str)>,
    parens: (Regex, &'static str),
    double_dashes: (Regex, &'static str),
    ending_quotes: Vec<(Regex, &'static str)>,
    contractions: Vec<Regex>,
}

fn rules(list: &[(&str, &'static str)]) -> Vec<(Regex, &'static str)> {
    list.iter()
        .map(|(pattern, replacement)| (regex(&pattern.replace("$END", END)), *replacement))
        .collect()
}

static RULES: LazyLock<Rules> = LazyLock::new(|| Rules {
    starting_quotes: rules(&[
        ("([«“‘„]|[`]+)", " ${1} "),
        (r#"^""#, "``"),
        ("(``)", " ${1} "),
        (r#"([ (\[{<])("|'{2})"#, "${1} `` "),
        (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", "${1} "),
    ]),
    punctuation: rules(&[
        // NLTK writes the class possessively (`*+`); as its comment says, the maximal run is
        // the only split that can match, so the plain greedy class matches the same spans.
        (r#"([^.])(\.)([\])}>"'»”’ ]*)\s*$END"#, "${1} ${2} ${3} "),
        (r"([:,])([^\d])", " ${1} ${2}"),
        (r"([:,])$END", " ${1} "),
        (r"\.{2,}", " ${0} "),
        (r"[;@#$%&]", " ${0} "),
        ("[\u{2012}-\u{2015}]", " ${0} "),
        (r#"([^.])(\.)([\])}>"']*)\s*$END"#, "${1} ${2}${3} "),
        (r"[?!]", " ${0} "),
        (r"([^'])' ", "${1} ' "),
        (r"[*]", " ${0} "),
    ]),
    parens: (regex(r"[\]\[(){}<>]"), " ${0} "),
    double_dashes: (regex("--"), " -- "),
    ending_quotes: rules(&[
        ("([»”’])", " ${1} "),
        ("''", " '' "),
        ("\"", " '' "),
        (r"\s+", " "),
        (r"([^' ])('[sS]|'[mM]|'[dD]|') ", "${1} ${2} "),
        (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "${1} ${2} "),
    ]),
    // MacIntyre's CONTRACTIONS2 then CONTRACTIONS3, each replaced by " \1 \2 ".
    contractions: [
        r"(?i)\b(can)(not)\b",
        r"(?i)\b(d)('ye)\b",
        r"(?i)\b(gim)(me)\b",
        r"(?i)\b(gon)(na)\b",
        r"(?i)\b(got)(ta)\b",
        r"(?i)\b(lem)(me)\b",
        r"(?i)\b(more)('n)\b",
        r"(?i)\b(wan)(na)(?=\s)",
        r"(?i) ('t)(is)\b",
        r"(?i) ('t)(was)\b",
    ]
    .into_iter()
    .map(regex)
    .collect(),
});

fn substitute(text: String, (re, replacement): &(Regex, &str)) -> String {
    match re.replace_all(&text, *replacement) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(changed) => changed,
    }
}

/// `NLTKWordTokenizer().tokenize(text)` with the default options (no parenthesis conversion).
pub fn treebank_tokenize(text: &str) -> Vec<String> {
    let rules = &*RULES;
    let mut text = text.to_owned();
    for rule in rules.starting_quotes.iter().chain(&rules.punctuation) {
        text = substitute(text, rule);
    }
    text = substitute(text, &rules.parens);
    text = substitute(text, &rules.double_dashes);
    text = format!(" {text} ");
    for rule in &rules.ending_quotes {
        text = substitute(text, rule);
    }
    for re in &rules.contractions {
        text = substitute(text, &(re.clone(), " ${1} ${2} "));
    }
    py_split(&text).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Vec<String> {
        treebank_tokenize(s)
    }

    /// NLTK's own doctest (destructive.py).
    #[test]
    fn nltk_doctest() {
        let s = "Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.  Please buy me\ntwo of them.\nThanks.";
        assert_eq!(
            tok(s),
            [
                "Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36", "euros", ")", "in",
                "New", "York.", "Please", "buy", "me", "two", "of", "them.", "Thanks", "."
            ]
        );
    }

    #[test]
    fn clitics_quotes_and_contractions() {
        assert_eq!(
            tok("\"I can't,\" she said -- \"don't\" wanna 'bout it."),
            [
                "``", "I", "ca", "n't", ",", "''", "she", "said", "--", "``", "do", "n't", "''",
                "wan", "na", "'", "bout", "it", "."
            ]
        );
        assert_eq!(tok("cannot gonna"), ["can", "not", "gon", "na"]);
        assert_eq!(tok("a dog's bone."), ["a", "dog", "'s", "bone", "."]);
    }
}

//! NLTK's Punkt sentence tokenizer at inference (nltk/tokenize/punkt.py, NLTK 3.10.4:
//! `PunktSentenceTokenizer.tokenize` with `realign_boundaries=True`), with NLTK's English
//! parameters compiled in (`data/punkt/english/`, NLTK's `punkt_tab` text format; where they
//! come from is in that folder's NOTICE).
//!
//! The algorithm: every `.`, `?` or `!` followed by punctuation or by whitespace and a token is
//! a candidate; the candidate's context (the word before it, itself and what follows) is split
//! into Punkt word tokens and annotated — sentence-final punctuation, ellipses, known
//! abbreviations (first pass), then collocations, the orthographic heuristic and frequent
//! sentence starters (second pass); a candidate whose context holds a sentence break followed
//! by a token ends a sentence. Closing quotes and brackets after the break are moved back onto
//! the sentence they close.
//!
//! Offsets are byte offsets throughout; where NLTK adds 1 to an index it steps over an ASCII
//! whitespace character, one byte.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use fancy_regex::Regex;

use super::{py_is_space, py_strip, regex};

// Orthographic context flags (`_ORTHO_*`).
const BEG_UC: u32 = 1 << 1;
const MID_UC: u32 = 1 << 2;
const UNK_UC: u32 = 1 << 3;
const BEG_LC: u32 = 1 << 4;
const MID_LC: u32 = 1 << 5;
const UNK_LC: u32 = 1 << 6;
const UC: u32 = BEG_UC + MID_UC + UNK_UC;
const LC: u32 = BEG_LC + MID_LC + UNK_LC;

/// `PunktParameters`.
#[derive(Debug, Clone, Default)]
pub struct PunktParameters {
    pub abbrev_types: HashSet<String>,
    pub collocations: HashSet<(String, String)>,
    pub sent_starters: HashSet<String>,
    pub ortho_context: HashMap<String, u32>,
}

impl PunktParameters {
    /// Parses the four `punkt_tab` files as `nltk.tokenize.punkt.load_punkt_params` does (one
    /// entry a line, fields separated by tabs, only the newline removed).
    pub fn from_punkt_tab(
        abbrev_types: &str,
        collocations: &str,
        sent_starters: &str,
        ortho_context: &str,
    ) -> Result<Self, String> {
        let lines = |s: &str| s.lines().map(str::to_owned).collect::<Vec<_>>();
        let mut pairs = HashSet::new();
        for (n, line) in collocations.lines().enumerate() {
            let (a, b) = line
                .split_once('\t')
                .ok_or_else(|| format!("collocations.tab line {}: no tab", n + 1))?;
            pairs.insert((a.to_owned(), b.to_owned()));
        }
        let mut ortho = HashMap::new();
        for (n, line) in ortho_context.lines().enumerate() {
            let parsed = line
                .split_once('\t')
                .and_then(|(typ, flags)| Some((typ, flags.parse::<u32>().ok()?)));
            let (typ, flags) =
                parsed.ok_or_else(|| format!("ortho_context.tab line {}: {line:?}", n + 1))?;
            ortho.insert(typ.to_owned(), flags);
        }
        Ok(Self {
            abbrev_types: lines(abbrev_types).into_iter().collect(),
            collocations: pairs,
            sent_starters: lines(sent_starters).into_iter().collect(),
            ortho_context: ortho,
        })
    }

    fn ortho(&self, typ: &str) -> u32 {
        self.ortho_context.get(typ).copied().unwrap_or(0)
    }
}

static ENGLISH: LazyLock<PunktParameters> = LazyLock::new(|| {
    PunktParameters::from_punkt_tab(
        include_str!("../../data/punkt/english/abbrev_types.txt"),
        include_str!("../../data/punkt/english/collocations.tab"),
        include_str!("../../data/punkt/english/sent_starters.txt"),
        include_str!("../../data/punkt/english/ortho_context.tab"),
    )
    .expect("the compiled-in English Punkt parameters parse")
});

/// Characters that cannot appear within words (`_re_non_word_chars`).
const NON_WORD: &str = r#"(?:[)";}\]*:@'({\[‘’“”«»?!])"#;
/// Multi-character punctuation (`_re_multi_char_punct`).
const MULTI_CHAR: &str = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)";

struct Patterns {
    word: Regex,
    numeric: Regex,
    initial: Regex,
    realignment: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    // `_word_tokenize_fmt`. Lines never hold a newline, so Python's `$` is the end of text.
    let word = format!(
        r#"{MULTI_CHAR}|(?=[^("`{{\[:;&#*@)}}\]\-,])\S+?(?=\s|\z|{NON_WORD}|{MULTI_CHAR}|,(?=\z|\s|{NON_WORD}|{MULTI_CHAR}))|\S"#
    );
    Patterns {
        word: regex(&word),
        numeric: regex(r"^-?[.,]?\d[\d,.\-]*\.?\z"),
        initial: regex(r"^[^\W\d]\.\z"),
        // MULTILINE `$`, matched at the start of the following slice.
        realignment: regex(r#"\A["')\]}‘’“”«»]+?(?:\s+|(?=--)|(?m:$))"#),
    }
});

/// `PunktToken`, with the annotations the tokenizer uses.
struct Token<'a> {
    tok: &'a str,
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

impl<'a> Token<'a> {
    fn new(tok: &'a str) -> Self {
        let lower = tok.to_lowercase();
        let numeric = PATTERNS.numeric.is_match(&lower).unwrap_or(false);
        Self {
            tok,
            typ: if numeric { "##number##".into() } else { lower },
            period_final: tok.ends_with('.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }

    fn type_no_period(&self) -> &str {
        match self.typ.strip_suffix('.') {
            Some(stripped) if self.typ.chars().count() > 1 => stripped,
            _ => &self.typ,
        }
    }

    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }

    fn first(&self) -> char {
        self.tok
            .chars()
            .next()
            .expect("Punkt tokens are never empty")
    }

    fn first_upper(&self) -> bool {
        self.first().is_uppercase()
    }

    fn first_lower(&self) -> bool {
        self.first().is_lowercase()
    }

    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.bytes().all(|b| b == b'.')
    }

    fn is_initial(&self) -> bool {
        PATTERNS.initial.is_match(self.tok).unwrap_or(false)
    }
}

/// A potential sentence end: the byte range of the `.`/`?`/`!`, where the token after it
/// starts (if whitespace and a token follow), and the text of `after_tok`.
struct EndContext {
    start: usize,
    end: usize,
    next_tok: Option<usize>,
    after_end: usize,
}

/// The English Punkt tokenizer.
pub struct PunktTokenizer {
    params: &'static PunktParameters,
}

impl PunktTokenizer {
    pub fn english() -> Self {
        Self { params: &ENGLISH }
    }

    /// `sent_tokenize(text)`: the sentences, as slices of `text`.
    pub fn sentences<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let slices = self.slices(text);
        self.realign(text, &slices)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    /// `_match_potential_end_contexts`: each candidate with the word before it, overlaps
    /// removed as NLTK does (a candidate is kept only if the next one's preceding word starts
    /// after it).
    fn end_contexts(&self, text: &str) -> Vec<(EndContext, String)> {
        let mut out = Vec::new();
        let mut previous: Option<(EndContext, (usize, usize))> = None;
        let mut previous_slice = (0usize, 0usize);
        for m in period_contexts(text) {
            let before = &text[previous_slice.1..m.start];
            let last_space = before
                .char_indices()
                .rev()
                .find(|(_, c)| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
                .map_or(0, |(i, _)| i);
            let word_start = if last_space != 0 {
                last_space + previous_slice.1 + 1
            } else {
                previous_slice.0
            };
            let prev_word = (word_start, m.start);
            if let Some((pm, ps)) = previous.take()
                && ps.1 <= prev_word.0
            {
                let context = format!("{}{}", &text[ps.0..ps.1], &text[pm.start..pm.after_end]);
                out.push((pm, context));
            }
            previous = Some((m, prev_word));
            previous_slice = prev_word;
        }
        if let Some((pm, ps)) = previous {
            let context = format!("{}{}", &text[ps.0..ps.1], &text[pm.start..pm.after_end]);
            out.push((pm, context));
        }
        out
    }

    /// `_slices_from_text`.
    fn slices(&self, text: &str) -> Vec<(usize, usize)> {
        let mut slices = Vec::new();
        let mut last_break = 0;
        for (m, context) in self.end_contexts(text) {
            if self.contains_sentbreak(&context) {
                slices.push((last_break, m.end));
                last_break = m.next_tok.unwrap_or(m.end);
            }
        }
        slices.push((last_break, text.trim_end_matches(py_is_space).len()));
        slices
    }

    /// `_realign_boundaries`. Python slices whose start passed their end are empty.
    fn realign(&self, text: &str, slices: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let nonempty = |(s, e): (usize, usize)| s < e;
        let mut out = Vec::new();
        let mut realign = 0;
        for (i, &(s1, e1)) in slices.iter().enumerate() {
            let sentence1 = (s1 + realign, e1);
            let Some(&(s2, e2)) = slices.get(i + 1) else {
                if nonempty(sentence1) {
                    out.push(sentence1);
                }
                continue;
            };
            let second = if s2 < e2 { &text[s2..e2] } else { "" };
            match PATTERNS.realignment.find(second).ok().flatten() {
                Some(m) => {
                    let kept = m.as_str().trim_end_matches(py_is_space).len();
                    out.push((sentence1.0, s2 + kept));
                    realign = m.end();
                }
                None => {
                    realign = 0;
                    if nonempty(sentence1) {
                        out.push(sentence1);
                    }
                }
            }
        }
        out
    }

    /// `text_contains_sentbreak`: a token marked as a break, followed by another token.
    fn contains_sentbreak(&self, context: &str) -> bool {
        let mut tokens: Vec<Token> = words(context).into_iter().map(Token::new).collect();
        for token in &mut tokens {
            self.first_pass(token);
        }
        for i in 0..tokens.len() {
            if i + 1 < tokens.len() {
                let (head, tail) = tokens.split_at_mut(i + 1);
                self.second_pass(&mut head[i], &tail[0]);
            }
            if tokens[i].sentbreak {
                return i + 1 < tokens.len();
            }
        }
        false
    }

    /// `_first_pass_annotation`.
    fn first_pass(&self, token: &mut Token) {
        let tok = token.tok;
        if matches!(tok, "." | "?" | "!") {
            token.sentbreak = true;
        } else if token.is_ellipsis() {
            token.ellipsis = true;
        } else if token.period_final && !tok.ends_with("..") {
            let stem = tok[..tok.len() - 1].to_lowercase();
            let last_part = stem.rsplit('-').next().unwrap_or(&stem);
            if self.params.abbrev_types.contains(&stem)
                || self.params.abbrev_types.contains(last_part)
            {
                token.abbr = true;
            } else {
                token.sentbreak = true;
            }
        }
    }

    /// `_second_pass_annotation`.
    fn second_pass(&self, tok1: &mut Token, tok2: &Token) {
        if !tok1.period_final {
            return;
        }
        let typ = tok1.type_no_period().to_owned();
        let next_typ = tok2.type_no_sentperiod();
        let initial = tok1.is_initial();
        if self
            .params
            .collocations
            .contains(&(typ.clone(), next_typ.to_owned()))
        {
            tok1.sentbreak = false;
            tok1.abbr = true;
            return;
        }
        if (tok1.abbr || tok1.ellipsis) && !initial {
            let starter = self.ortho_heuristic(tok2);
            if starter == Some(true) {
                tok1.sentbreak = true;
                return;
            }
            if tok2.first_upper() && self.params.sent_starters.contains(next_typ) {
                tok1.sentbreak = true;
                return;
            }
        }
        if initial || typ == "##number##" {
            let starter = self.ortho_heuristic(tok2);
            if starter == Some(false) {
                tok1.sentbreak = false;
                tok1.abbr = true;
                return;
            }
            if starter.is_none()
                && initial
                && tok2.first_upper()
                && self.params.ortho(next_typ) & LC == 0
            {
                tok1.sentbreak = false;
                tok1.abbr = true;
            }
        }
    }

    /// `_ortho_heuristic`: does `token` start a sentence? `None` is NLTK's "unknown".
    fn ortho_heuristic(&self, token: &Token) -> Option<bool> {
        if matches!(token.tok, ";" | ":" | "," | "." | "!" | "?") {
            return Some(false);
        }
        let ortho = self.params.ortho(token.type_no_sentperiod());
        if token.first_upper() && ortho & LC != 0 && ortho & MID_UC == 0 {
            return Some(true);
        }
        if token.first_lower() && (ortho & UC != 0 || ortho & BEG_LC == 0) {
            return Some(false);
        }
        None
    }
}

/// `_tokenize_words` without the line/paragraph flags (inference does not read them).
fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        if py_strip(line).is_empty() {
            continue;
        }
        out.extend(
            PATTERNS
                .word
                .find_iter(line)
                .filter_map(Result::ok)
                .map(|m| m.as_str()),
        );
    }
    out
}

/// `period_context_re().finditer(text)`: `[.?!]` followed by a non-word character, or by
/// whitespace and a token (the lookahead's `next_tok`).
fn period_contexts(text: &str) -> Vec<EndContext> {
    let non_word = |c: char| ")\";}]*:@'({[‘’“”«»?!".contains(c);
    let mut out = Vec::new();
    for (start, c) in text.char_indices() {
        if !matches!(c, '.' | '?' | '!') {
            continue;
        }
        let end = start + 1;
        let rest = &text[end..];
        let Some(next) = rest.chars().next() else {
            continue;
        };
        if non_word(next) {
            out.push(EndContext {
                start,
                end,
                next_tok: None,
                after_end: end + next.len_utf8(),
            });
            continue;
        }
        let spaces = rest.len() - rest.trim_start_matches(regex_space).len();
        if spaces == 0 {
            continue;
        }
        let token = &rest[spaces..];
        let token_len = token.len() - token.trim_start_matches(|c| !regex_space(c)).len();
        if token_len > 0 {
            out.push(EndContext {
                start,
                end,
                next_tok: Some(end + spaces),
                after_end: end + spaces + token_len,
            });
        }
    }
    out
}

/// What `\s` matches in the Rust regexes (Unicode White_Space), kept consistent with them.
fn regex_space(c: char) -> bool {
    c.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_parameters_load() {
        let p = &*ENGLISH;
        assert_eq!(p.abbrev_types.len(), 156);
        assert!(p.abbrev_types.contains("mr") && p.abbrev_types.contains(". . "));
        assert_eq!(p.sent_starters.len(), 39);
        assert_eq!(p.collocations.len(), 37);
        assert_eq!(p.ortho_context.len(), 20366);
        assert_eq!(p.ortho("a"), 126);
    }

    /// NLTK's doctest (punkt.py) and abbreviation / initial cases.
    #[test]
    fn sentences() {
        let t = PunktTokenizer::english();
        let text =
            "This is a test. Mr. Smith went to Washington. (It is. Really.) \"Done!\" Next? Yes...";
        assert_eq!(
            t.sentences(text),
            [
                "This is a test.",
                "Mr. Smith went to Washington.",
                "(It is.",
                "Really.)",
                "\"Done!\"",
                "Next?",
                "Yes..."
            ]
        );
        assert_eq!(t.sentences(""), Vec::<&str>::new());
        assert_eq!(t.sentences("  \n "), Vec::<&str>::new());
    }
}

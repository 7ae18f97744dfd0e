//! Reading the "### Facts:" list out of an LLM's answer. Models vary the format: bullets `-`,
//! `*`, `•`, numbers `1.`/`1)`, quotes around each fact, the list inline on one line as the
//! prompt itself shows it, a "Fact 1:" label, markdown emphasis on the heading, prose after it.

use super::super::SplitError;

/// The facts of `answer`, or [`SplitError::Malformed`] when there is no "Facts:" heading or no
/// fact under it. (An empty list is treated as a failure: every answer of a preference pair
/// states something about the image.)
pub fn parse_facts(answer: &str) -> Result<Vec<String>, SplitError> {
    let malformed = |why: &str| SplitError::Malformed {
        why: why.to_owned(),
        excerpt: answer.chars().take(200).collect(),
    };
    let lines: Vec<&str> = answer.lines().collect();
    let Some((start, first_rest)) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| heading(l).map(|rest| (i, rest)))
    else {
        return Err(malformed("no \"### Facts:\" heading"));
    };
    let mut facts = Vec::new();
    let mut blank_after_fact = false;
    for line in std::iter::once(first_rest).chain(lines[start + 1..].iter().copied()) {
        let trimmed = line.trim();
        if trimmed.starts_with("###") {
            break;
        }
        if trimmed.is_empty() {
            blank_after_fact = !facts.is_empty();
            continue;
        }
        let bulleted = strip_bullet(trimmed).is_some();
        if blank_after_fact && !bulleted {
            break; // prose after the list
        }
        blank_after_fact = false;
        for item in inline_items(trimmed) {
            if let Some(fact) = clean(item) {
                facts.push(fact);
            }
        }
    }
    if facts.is_empty() {
        return Err(malformed("the list under \"### Facts:\" is empty"));
    }
    Ok(facts)
}

/// `Some(rest of the line)` for a "Facts:" heading (any number of `#`, bold, any case).
fn heading(line: &str) -> Option<&str> {
    let t = line.trim_start().trim_start_matches(['#', '*', ' ']);
    let lower = t.to_ascii_lowercase();
    if !lower.starts_with("facts") {
        return None;
    }
    let rest = t["facts".len()..].trim_start_matches(['*', ' ']);
    rest.strip_prefix(':')
        .map(|r| r.trim_start_matches(['*', ' ']))
}

/// The text after a leading bullet or number, if the line has one.
fn strip_bullet(line: &str) -> Option<&str> {
    for bullet in ["- ", "* ", "• ", "– "] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return Some(rest);
        }
    }
    if let Some(rest) = line.strip_prefix(['-', '*', '•']) {
        return Some(rest);
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some(rest);
        }
    }
    None
}

/// A line may hold several facts inline, as the prompt shows them: `- A.- B.` or `- "A." - "B."`.
/// Split where a bullet follows the end of a sentence; a hyphen inside a word never qualifies.
fn inline_items(line: &str) -> Vec<&str> {
    let line = strip_bullet(line).unwrap_or(line);
    let mut items = Vec::new();
    let mut start = 0;
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        if c != '-' || i == 0 {
            continue;
        }
        let before = line[start..i].trim_end();
        let ends_sentence = before.ends_with(['.', '!', '?', '"', '”']);
        let bullet_follows = bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'"');
        if ends_sentence && bullet_follows && !before.is_empty() {
            items.push(&line[start..i]);
            start = i + 1;
        }
    }
    items.push(&line[start..]);
    items
}

/// Trims, drops a "Fact 1:" label and surrounding quotes; `None` for placeholders like "...".
fn clean(item: &str) -> Option<String> {
    let mut t = item.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("fact ") {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && rest[digits..].starts_with([':', '.', ')']) {
            t = t["fact ".len() + digits + 1..].trim();
        }
    }
    for (open, close) in [('"', '"'), ('“', '”'), ('\'', '\'')] {
        if t.len() >= 2 && t.starts_with(open) && t.ends_with(close) {
            t = t[open.len_utf8()..t.len() - close.len_utf8()].trim();
        }
    }
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let placeholder = t.chars().all(|c| c == '.' || c == '…');
    (!placeholder).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn facts(answer: &str) -> Vec<String> {
        parse_facts(answer).unwrap()
    }

    #[test]
    fn bullets_numbers_and_quotes() {
        let answer = "Sure! Here are the facts.\n\n### Facts:\n- \"A red bus is parked on the street.\"\n* The bus has two decks.\n• “A man stands near the door.”\n1. The sky is blue.\n2) There are trees.\n";
        assert_eq!(
            facts(answer),
            [
                "A red bus is parked on the street.",
                "The bus has two decks.",
                "A man stands near the door.",
                "The sky is blue.",
                "There are trees.",
            ]
        );
    }

    #[test]
    fn inline_lists_like_the_prompt() {
        assert_eq!(
            facts(
                "### Facts:- A red shoe sits on a wooden floor.- The shoe has laces and a white sole.- ..."
            ),
            [
                "A red shoe sits on a wooden floor.",
                "The shoe has laces and a white sole.",
            ]
        );
        assert_eq!(
            facts("### Facts: - \"A double-decker bus is red.\" - \"It is well-lit.\""),
            ["A double-decker bus is red.", "It is well-lit.",]
        );
    }

    #[test]
    fn labels_headings_and_trailing_prose() {
        let answer = "**Facts:**\n- Fact 1: A cat sleeps.\n- Fact 2. The cat is grey.\n\nNote: I ignored opinions.\n";
        assert_eq!(facts(answer), ["A cat sleeps.", "The cat is grey."]);
        let answer = "### facts:\n- A dog runs.\n### Question-answer pair: Question: \"x\"";
        assert_eq!(facts(answer), ["A dog runs."]);
        assert_eq!(
            facts("### Facts:\n- A cup.\n\n- A plate.\n"),
            ["A cup.", "A plate."],
            "a blank line inside the list"
        );
    }

    #[test]
    fn malformed_answers() {
        for answer in [
            "I cannot see the image.",
            "### Facts:\n- ...\n",
            "### Facts:\n\n",
        ] {
            let err = parse_facts(answer).unwrap_err();
            assert!(
                matches!(err, SplitError::Malformed { .. }),
                "{answer:?}: {err}"
            );
        }
    }
}

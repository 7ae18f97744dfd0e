//! The paper's Appendix A.1 prompt, copied verbatim from the paper's text (which renders it on
//! one line; the line breaks of the original figure did not survive, and we do not guess them).

/// Appendix A.1 of the paper, character for character, with its `{Question}` and `{Answer}`
/// placeholders.
pub const PROMPT_TEMPLATE: &str = r#"You are an expert in extracting facts from the given question-answer pair about an image. Your task is to: Analyze the provided question-answer pair based on the image, extract all factual statements from the answer, and rewrite them into self-contained sentences. Requirements for each sentence are: 1. complete, each sentence must be self-contained; 2. factual (omit opinions, subjective statements); 3. concise (no more than 77 tokens). Format your result strictly as:### Facts:- Fact 1 (e.g., "A red shoe sits on a wooden floor.")- Fact 2 (e.g., "The shoe has laces and a white sole.")- ...### Question-answer pair: Question: "{Question}" Answer: "{Answer}""#;

/// The prompt for one answer. The placeholders are filled in one pass, so a question or answer
/// that itself contains `{Answer}` is sent as written.
pub fn fill(question: &str, answer: &str) -> String {
    let (head, rest) = PROMPT_TEMPLATE
        .split_once("{Question}")
        .expect("the template has {Question}");
    let (middle, tail) = rest
        .split_once("{Answer}")
        .expect("the template has {Answer}");
    format!("{head}{question}{middle}{answer}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_both_placeholders_once() {
        let p = fill("What is {Answer}?", "A cat.");
        assert!(p.starts_with("You are an expert in extracting facts from the given question-answer pair about an image."));
        assert!(p.ends_with(
            "### Question-answer pair: Question: \"What is {Answer}?\" Answer: \"A cat.\""
        ));
        assert_eq!(
            p.len(),
            PROMPT_TEMPLATE.len() - "{Question}{Answer}".len() + "What is {Answer}?A cat.".len()
        );
        assert!(PROMPT_TEMPLATE.contains(
            "3. concise (no more than 77 tokens). Format your result strictly as:### Facts:- Fact 1"
        ));
    }
}

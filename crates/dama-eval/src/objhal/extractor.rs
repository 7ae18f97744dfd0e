//! Who finds the objects an answer mentions: the offline word finder (the reference's default
//! path, matched exactly), or an LLM (`--use_gpt` in the reference, how the published numbers
//! were made: GPT-3.5 lists the objects, which are then mapped to COCO classes).

use super::words::{Mentions, WordFinder, mentions_of, merge_double_words};
use crate::EvalError;
use crate::llm::Endpoint;
use crate::nlp::py_split;

pub trait ObjectExtractor {
    /// `offline` or `llm:<model>`, as the summary records it.
    fn name(&self) -> String;
    fn mentions(&self, question: &str, answer: &str) -> Result<Mentions, EvalError>;
}

/// The reference's offline path: [`WordFinder::find`] on the answer.
pub struct OfflineExtractor<'a>(pub &'a WordFinder);

impl ObjectExtractor for OfflineExtractor<'_> {
    fn name(&self) -> String {
        "offline".into()
    }

    fn mentions(&self, _question: &str, answer: &str) -> Result<Mentions, EvalError> {
        Ok(self.0.find(answer))
    }
}

/// RLAIF-V's object-extraction prompt (`eval_gpt_obj_halbench.py`, `prompt_template`),
/// verbatim; `{question}` and `{answer}` are replaced in that order.
pub const EXTRACTOR_PROMPT: &str = r#"You are an expert in image objects extraction according to a question answer pair. We asked an examiner to answer a question about a picture.

[Start of Question]

<image> {question}

[End of Question]

[Start of Examiner's Answer]

{answer}

[End of Examiner's Answer]


Assume that the answer is correct, please identify all visible objects that are directly shown in the image. Please following the instructions in below:

1. You should only mention objects that are explicitly mentioned in the examiner's answer.
2. You should only extract the object names without the attributes of the objects.
3. You should not include the properties of the object, like the color, material, etc. as part of the object name in your result.
4. Make your answer precise. Present the results in a JSON list format: ["object_1", ..., "object_n"].
5. You should return an empty JSON list () if no visible objects can be found.
"#;

/// The reference sends the prompt as a system message through a client whose default
/// temperature is 0.2.
pub const EXTRACTOR_ROLE: &str = "system";
pub const EXTRACTOR_TEMPERATURE: f64 = 0.2;

/// The LLM path. The reference re-reads each listed object with spaCy (`en_core_web_trf`
/// lemmas, "a " prepended): a COCO two-word phrase is kept as it is, otherwise the runs of
/// nouns. spaCy's tagger is not available here, so each object is read by the offline finder
/// instead: its two-word phrases if it has any, else each of its lemmas (the article
/// dropped); then, as in the reference, the distinct words that are COCO synonyms count.
/// A compound that spaCy tags as one noun run outside COCO's phrases ("pizza slice") is
/// dropped by the reference but counts as its COCO word here.
pub struct LlmExtractor<'a> {
    pub finder: &'a WordFinder,
    pub endpoint: &'a Endpoint,
}

impl LlmExtractor<'_> {
    /// The objects the LLM lists (`get_gpt_resp` + `parse_object_list`); answers of three
    /// words or fewer are not sent and list none, as in the reference.
    pub fn objects(&self, question: &str, answer: &str) -> Result<Vec<String>, EvalError> {
        if py_split(answer).count() <= 3 {
            return Ok(Vec::new());
        }
        let prompt = EXTRACTOR_PROMPT
            .replace("{question}", question)
            .replace("{answer}", answer);
        let reply = self
            .endpoint
            .ask(EXTRACTOR_ROLE, &prompt, EXTRACTOR_TEMPERATURE)?;
        parse_object_list(&reply)
    }

    /// `get_pred_objs_match` for one answer's objects.
    pub fn refine(&self, objects: &[String]) -> Vec<String> {
        let mut refined: Vec<String> = Vec::new();
        for object in objects {
            let lemmas = self.finder.lemmas(&format!("a {object}"));
            let (phrases, _) = merge_double_words(&self.finder.synonyms, &lemmas, false);
            let words = if phrases.is_empty() {
                lemmas.into_iter().skip(1).collect()
            } else {
                phrases
            };
            for w in words {
                if !refined.contains(&w) {
                    refined.push(w);
                }
            }
        }
        refined
    }
}

impl ObjectExtractor for LlmExtractor<'_> {
    fn name(&self) -> String {
        format!("llm:{}", self.endpoint.model())
    }

    fn mentions(&self, question: &str, answer: &str) -> Result<Mentions, EvalError> {
        let refined = self.refine(&self.objects(question, answer)?);
        let starts = (0..refined.len()).collect();
        Ok(mentions_of(&self.finder.synonyms, refined, starts))
    }
}

/// `parse_object_list`: the reply as JSON, else (when it holds `["`) its last line as JSON;
/// a list of strings.
pub fn parse_object_list(reply: &str) -> Result<Vec<String>, EvalError> {
    let parsed = serde_json::from_str::<serde_json::Value>(reply)
        .ok()
        .or_else(|| {
            if reply.contains("[\"") {
                let last = reply.trim().rsplit('\n').next()?;
                serde_json::from_str(last).ok()
            } else {
                None
            }
        });
    let excerpt: String = reply.chars().take(200).collect();
    let list = parsed.as_ref().and_then(|v| v.as_array()).ok_or_else(|| {
        EvalError::Llm(format!(
            "the extractor's reply is no JSON list: {excerpt:?}"
        ))
    })?;
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                EvalError::Llm(format!(
                    "the extractor listed {v}, not a string: {excerpt:?}"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_lists() {
        assert_eq!(
            parse_object_list(r#"["dog", "frisbee"]"#).unwrap(),
            ["dog", "frisbee"]
        );
        assert_eq!(
            parse_object_list("Here they are:\n[\"car\"]").unwrap(),
            ["car"]
        );
        assert_eq!(parse_object_list("[]").unwrap(), Vec::<String>::new());
        assert!(parse_object_list("a dog and a cat").is_err());
        assert!(parse_object_list("[1, 2]").is_err());
    }
}

//! Hallucination of a model's held-out answers, as the paper measures it (its Table 1): each
//! held-out image's question answered by `generate` (3 beams, as the paper's evaluation), then
//! CHAIR counted by `dama_eval::objhal::compute` — the code of `eval objhal` — with the world's
//! exact ground truth and vocabulary in place of COCO's annotations and synonyms.
//!
//! CHAIR's classes are the world's object kinds (circle, square, triangle), as COCO's are its
//! categories: a mention is hallucinated when the image has no shape of its kind. The world knows
//! more than CHAIR asks: a "red circle" where the circle is blue is a hallucinated object too.
//! That stricter count (`dama_world::count_hallucinations`: kind and every stated size, colour
//! and place) is reported beside CHAIR, as are the false statements about the background and
//! the number of shapes.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dama_eval::EvalError;
use dama_eval::answers::Answers;
use dama_eval::objhal::{self, Mention, Mentions, ObjectExtractor};
use dama_world::{Example, count_hallucinations, object_mentions, words};
use serde::Serialize;

use crate::args::{InputArgs, ModelArgs, defaults};
use crate::commands::generate::GenerateArgs;
use crate::device::DeviceArgs;
use crate::generator::DecodeArgs;

/// The paper's decoding for evaluation: 3 beams, no sampling.
pub const NUM_BEAMS: usize = 3;
/// Enough for the longest true description (about 60 tokens) and a model that rambles.
pub const MAX_NEW_TOKENS: usize = 128;

/// The object finder of CHAIR for the world: each object word is a mention of its kind.
pub struct WorldExtractor;

impl ObjectExtractor for WorldExtractor {
    fn name(&self) -> String {
        "world vocabulary (exact)".into()
    }

    fn mentions(&self, _question: &str, answer: &str) -> Result<Mentions, EvalError> {
        let mentions = object_mentions(answer)
            .iter()
            .enumerate()
            .map(|(index, m)| Mention {
                word: m.kind.name().to_owned(),
                class: m.kind.name().to_owned(),
                index,
            })
            .collect();
        Ok(Mentions {
            mentions,
            words: words(answer),
        })
    }
}

/// One model's held-out hallucination figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Chair {
    /// CHAIR at response level over the answers that mention an object (the paper's *Resp.*,
    /// `CHAIRs_refine`), and over all answers (`CHAIRs`).
    pub chair_s_refine: f64,
    pub chair_s: f64,
    /// CHAIR at mention level (*Ment.*, `CHAIRi`).
    pub chair_i: f64,
    /// Object recall: distinct kinds correctly mentioned / kinds in the images.
    pub recall: f64,
    /// The world's stricter count: answers with an object that is false in kind or in a stated
    /// attribute, and such objects / object mentions.
    pub attr_resp: f64,
    pub attr_ment: f64,
    /// False statements about the background or the number of shapes, per answer.
    pub false_statements: f64,
    /// Mean answer length in words, and answers cut at [`MAX_NEW_TOKENS`].
    pub words: f64,
    pub truncated: usize,
    pub answers: usize,
}

/// Writes the held-out questions file (`id` = position in the split, the image beside it).
pub fn write_questions(heldout: &[Example], dir: &Path) -> Result<PathBuf> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    let path = dir.join("questions.jsonl");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for e in heldout {
        std::fs::write(images.join(&e.file_name), &e.image)?;
        let line = serde_json::json!({
            "id": e.index.to_string(),
            "image": format!("images/{}", e.file_name),
            "question": e.question_text(),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(path)
}

/// Answers the held-out questions with `model` (the `generate` command, 3 beams) into
/// `answers`, then counts CHAIR against the scenes.
pub fn chair_of(
    model: &Path,
    questions: &Path,
    heldout: &[Example],
    answers: &Path,
    device: &DeviceArgs,
    max_length: usize,
) -> Result<Chair> {
    crate::commands::generate::run(&GenerateArgs {
        model: ModelArgs {
            model: model.display().to_string(),
            hf_cache: None,
            offline: true,
        },
        data: Some(questions.to_path_buf()),
        images: None,
        out: Some(answers.to_path_buf()),
        image: None,
        question: None,
        decode: DecodeArgs {
            num_beams: NUM_BEAMS,
            max_new_tokens: MAX_NEW_TOKENS,
            batch_size: 16,
            ..defaults::<DecodeArgs>()
        },
        input: InputArgs {
            max_length,
            ..defaults::<InputArgs>()
        },
        device: device.clone(),
    })
    .with_context(|| format!("answering the held-out questions with {}", model.display()))?;
    count(answers, heldout)
}

/// CHAIR (and the world's stricter count) of an answers file whose ids are held-out positions.
pub fn count(answers: &Path, heldout: &[Example]) -> Result<Chair> {
    let read = Answers::read(answers)?;
    let items = objhal::items(&read, None)?;
    let truth: HashMap<i64, BTreeSet<String>> = heldout
        .iter()
        .map(|e| {
            let kinds = e.scene.shapes.iter().map(|s| s.kind.name().to_owned());
            (e.index as i64, kinds.collect())
        })
        .collect();
    if let Some(item) = items.iter().find(|i| !truth.contains_key(&i.image_id)) {
        anyhow::bail!(
            "{}: id {} is not a held-out image (0–{})",
            answers.display(),
            item.image_id,
            heldout.len().saturating_sub(1)
        );
    }
    let report = objhal::compute(&read, &items, &truth, &WorldExtractor, |_| {})?;
    let s = &report.summary;
    let (mut attr_answers, mut attr_objects, mut mentions, mut false_statements) = (0, 0, 0, 0);
    for item in &items {
        let h = count_hallucinations(&item.caption, &heldout[item.image_id as usize].scene);
        attr_answers += usize::from(h.hallucinated > 0);
        attr_objects += h.hallucinated;
        mentions += h.mentions.len();
        false_statements += h.false_statements;
    }
    let truncated = truncated_answers(answers)?;
    let n = items.len().max(1) as f64;
    Ok(Chair {
        chair_s_refine: s.chair_s_refine.unwrap_or(0.0),
        chair_s: s.chair_s.unwrap_or(0.0),
        chair_i: s.chair_i.unwrap_or(0.0),
        recall: s.obj_rec.unwrap_or(0.0),
        attr_resp: attr_answers as f64 / n,
        attr_ment: attr_objects as f64 / mentions.max(1) as f64,
        false_statements: false_statements as f64 / n,
        words: s.avg_word_len.unwrap_or(0.0),
        truncated,
        answers: items.len(),
    })
}

/// Answers that `generate` cut at the token budget (`"finish": "length"`).
fn truncated_answers(answers: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(answers)?;
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}", answers.display(), i + 1))?;
        n += usize::from(v.get("finish").and_then(|f| f.as_str()) == Some("length"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dama_core::Xoshiro256;
    use dama_world::{Colour, Kind, Place, Scene, Shape, Size};

    fn example(index: usize, shapes: Vec<Shape>) -> Example {
        let scene = Scene {
            background: Colour::White,
            shapes,
        };
        Example::of_scene(
            &mut Xoshiro256::seed_from(index as u64),
            scene,
            "heldout",
            index,
            32,
        )
    }

    fn shape(kind: Kind, colour: Colour, place: Place) -> Shape {
        Shape {
            kind,
            colour,
            place,
            size: Size::Big,
        }
    }

    /// CHAIR of hand-made answers, counted by hand.
    #[test]
    fn chair_counts_hand_made_answers() {
        let heldout = vec![
            example(0, vec![shape(Kind::Circle, Colour::Red, Place::Left)]),
            example(
                1,
                vec![
                    shape(Kind::Square, Colour::Blue, Place::Top),
                    shape(Kind::Triangle, Colour::Green, Place::Bottom),
                ],
            ),
            example(2, vec![shape(Kind::Square, Colour::Black, Place::Right)]),
        ];
        let answers = [
            // image 0: true in every word
            (
                "0",
                "There is a big red circle on the left. The background is white.",
            ),
            // image 1: the square is right, the circle is not there (a hallucinated kind), the
            // triangle's colour is wrong (CHAIR does not see it; the world's count does)
            (
                "1",
                "There is a blue square at the top. There is a circle. There is a red triangle.",
            ),
            // image 2: no object named, one false statement
            ("2", "The background is purple."),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("answers.jsonl");
        let lines: Vec<String> = answers
            .iter()
            .map(|(id, a)| {
                serde_json::json!({"id": id, "question": "What is in the image?", "answer": a,
                                   "finish": "eos"})
                .to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let c = count(&path, &heldout).unwrap();
        assert_eq!(c.answers, 3);
        // one hallucinating answer (image 1) of the two that name an object; of three answers
        assert_eq!(c.chair_s_refine, 0.5);
        assert!((c.chair_s - 1.0 / 3.0).abs() < 1e-12);
        // mentions: circle (0); square, circle, triangle (1): one hallucinated of four
        assert_eq!(c.chair_i, 0.25);
        // kinds recalled: circle of {circle}, square + triangle of {square, triangle}, none of
        // {square}: 3 of 4
        assert_eq!(c.recall, 0.75);
        // the stricter count: image 1 has a hallucinated circle and a wrong-coloured triangle
        assert!((c.attr_resp - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.attr_ment, 0.5);
        assert!((c.false_statements - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.truncated, 0);

        // an id that is no held-out image is named
        std::fs::write(
            &path,
            r#"{"id": "7", "question": "q", "answer": "a circle"}"#,
        )
        .unwrap();
        let err = count(&path, &heldout).unwrap_err().to_string();
        assert!(err.contains("id 7 is not a held-out image"), "{err}");
    }
}

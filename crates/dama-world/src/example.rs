//! One example of the world: an image of a scene, a question about it, and the true description
//! that answers it (from the grammar).

use dama_core::Xoshiro256;

use crate::grammar::{Fact, OBJECT_TEMPLATES, QUESTIONS};
use crate::scene::Scene;

/// An image with its ground truth and a question with its true answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Unique within its dataset (`train:17`).
    pub id: String,
    /// Position in its split.
    pub index: usize,
    /// The image's file name when written to a folder (`train_17.png`).
    pub file_name: String,
    pub scene: Scene,
    /// Index into [`QUESTIONS`].
    pub question: usize,
    /// The object phrasing of the description (one of [`OBJECT_TEMPLATES`]).
    pub template: usize,
    /// The picture, PNG.
    pub image: Vec<u8>,
}

impl Example {
    /// Draws a scene, a question and a template from `rng` (in that order) and paints the
    /// picture at `image_size`.
    pub fn draw(rng: &mut Xoshiro256, split: &str, index: usize, image_size: u32) -> Self {
        let scene = Scene::random(rng);
        Self::of_scene(rng, scene, split, index, image_size)
    }

    /// As [`Self::draw`] for a given scene.
    pub fn of_scene(
        rng: &mut Xoshiro256,
        scene: Scene,
        split: &str,
        index: usize,
        image_size: u32,
    ) -> Self {
        assert!(
            image_size >= 16,
            "image_size {image_size} is too small to draw shapes in (at least 16)"
        );
        let question = rng.below(QUESTIONS.len() as u64) as usize;
        let template = rng.below(OBJECT_TEMPLATES as u64) as usize;
        Self {
            id: format!("{split}:{index}"),
            index,
            file_name: format!("{split}_{index}.png"),
            image: scene.png(image_size),
            scene,
            question,
            template,
        }
    }

    pub fn question_text(&self) -> &'static str {
        QUESTIONS[self.question]
    }

    /// The facts the true description states.
    pub fn facts(&self) -> Vec<Fact> {
        self.scene.facts_for(self.question)
    }

    /// The true description's sentences.
    pub fn sentences(&self) -> Vec<String> {
        self.facts()
            .iter()
            .map(|f| f.sentence(self.template))
            .collect()
    }

    /// The true description: its sentences joined by spaces.
    pub fn description(&self) -> String {
        self.sentences().join(" ")
    }
}

//! The demo's world: procedural pictures of coloured shapes whose ground truth is known exactly,
//! questions about them and true descriptions from a grammar, preference pairs whose rejected
//! answers hallucinate a known number of facts, and a counter of the hallucinated objects of any
//! answer text.
//!
//! Why a world of its own: the demo must run offline in minutes on a CPU, and it must show
//! what DAMA does with hardness and hallucination. Here every image's object list is exact, so
//! CLIP's hardness δ can be checked against the truth, and a sampled answer can be labelled by
//! counting, not by a judge.
//!
//! - [`scene`]: what an image shows ([`Scene`]: background, 1–3 [`Shape`]s with kind, colour,
//!   size and place) and the picture;
//! - [`grammar`]: the [`Fact`]s an answer states, their sentences, the [`QUESTIONS`], the false
//!   variants of a fact, the [`vocabulary`];
//! - [`World`]: train / preference / held-out splits of [`Example`]s (image, question, true
//!   description), and the image–sentence [`Caption`]s CLIP trains on;
//! - [`true_vs_hallucinated`]: the pair builder (chosen = the truth, rejected = 1–3 false facts);
//! - [`pair_from_samples`]: the pair of a model's sampled answers (chosen = the most faithful);
//! - [`count_hallucinations`]: hallucinated objects of any text against a scene;
//! - [`generate`]: pairs with *simulated* CLIP scores (the browser's bundled set).

pub mod example;
pub mod grammar;
pub mod hallucination;
pub mod pairs;
pub mod sampled;
pub mod scene;
pub mod synthetic;
pub mod world;
mod write;

pub use example::Example;
pub use grammar::{Fact, OBJECT_TEMPLATES, QUESTIONS, vocabulary, words};
pub use hallucination::{Hallucinations, Mention, count_hallucinations, object_mentions};
pub use pairs::{LabelledPair, OBJECT_ERRORS, true_vs_hallucinated};
pub use sampled::{SampledPair, errors_of, pair_from_samples};
pub use scene::{Colour, Kind, Place, Scene, Shape, Size};
pub use synthetic::{
    CLIP_MODEL, FALSE_SCORE_MEAN, SCORE_SD, SPLITTER, SyntheticSpec, TRUE_SCORE_MEAN, generate,
    run_info, write_annotated,
};
pub use world::{Caption, World, WorldSpec, unscored_run_info, write_pairs};
pub use write::{write_dataset, write_inline};

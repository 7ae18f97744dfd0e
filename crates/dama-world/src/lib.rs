//! The demo's synthetic multimodal preference data: pictures of a few coloured shapes, questions
//! about them, a chosen answer of true sentences and a rejected one with 1–3 hallucinated facts.
//!
//! Why synthetic: the demo must run offline in minutes on a CPU, and it must show that DAMA's
//! hardness δ means something. Here the ground truth is known, so a pair's hardness is a choice
//! of the generator (how many facts the rejected answer gets wrong) rather than an accident.
//!
//! Why simulated CLIP scores: the demo ships no CLIP model. Each sub-sentence gets a score drawn
//! from what ViT-L/14's `logits_per_image` (100·cos) gives a caption: a true sentence
//! N([`TRUE_SCORE_MEAN`], [`SCORE_SD`]²) = N(26, 1.2²), a false one N([`FALSE_SCORE_MEAN`],
//! [`SCORE_SD`]²) = N(22.5, 1.2²). δ comes from those by `dama_core::delta` (Eqs. 4–5), so a
//! rejected answer with more false sentences has, on average, a larger δ: an easier pair.
//! The header says `clip_model: "simulated (dama demo)"` so that nobody mistakes them for real.

use std::f64::consts::TAU;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dama_core::{Estimator, Xoshiro256};
use dama_data::annotated::FolderSink;
use dama_data::{
    AnnotatedJsonlWriter, DataError, ImageOut, ImageRef, PreferencePair, RunInfo, Scores, Source,
    SubSentences,
};
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage, codecs::png::PngEncoder};

/// Mean simulated CLIP score Γ(I, s) of a sentence that is true of the image.
pub const TRUE_SCORE_MEAN: f64 = 26.0;
/// Mean simulated CLIP score of a hallucinated sentence.
pub const FALSE_SCORE_MEAN: f64 = 22.5;
/// Standard deviation of both.
pub const SCORE_SD: f64 = 1.2;
/// The annotated header's `clip_model` for this data.
pub const CLIP_MODEL: &str = "simulated (dama demo)";
/// The annotated header's `splitter`: the generator knows its own sentences.
pub const SPLITTER: &str = "sentences (synthetic)";

/// How much data to make. `Default`: 320 pairs (e.g. 256 to train on, 64 held out) of 64×64
/// images, seed 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub pairs: usize,
    /// Side of the square images, in pixels (at least 16).
    pub image_size: u32,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            pairs: 320,
            image_size: 64,
            seed: 0,
        }
    }
}

/// One generated pair with the ground truth behind it.
#[derive(Debug, Clone)]
pub struct SyntheticPair {
    /// Image bytes (PNG), sub-sentences, simulated scores and δ; α_D is set on writing.
    pub pair: PreferencePair,
    /// What the image shows.
    pub scene: Scene,
    /// Hallucinated facts in the rejected answer (1–3), each one false sentence. More errors:
    /// an easier pair (larger δ on average).
    pub errors: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Orange,
    Purple,
    White,
    Black,
}

impl Colour {
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Orange,
        Colour::Purple,
        Colour::White,
        Colour::Black,
    ];

    pub fn name(self) -> &'static str {
        [
            "red", "green", "blue", "yellow", "orange", "purple", "white", "black",
        ][self as usize]
    }

    pub fn rgb(self) -> [u8; 3] {
        [
            [220, 30, 30],
            [30, 160, 50],
            [40, 70, 220],
            [240, 220, 40],
            [245, 140, 20],
            [140, 50, 170],
            [250, 250, 250],
            [15, 15, 15],
        ][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Circle,
    Square,
    Triangle,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Circle, Kind::Square, Kind::Triangle];

    pub fn name(self) -> &'static str {
        ["circle", "square", "triangle"][self as usize]
    }
}

/// Where a shape sits. At most one shape per place, so that shapes never overlap and a sentence
/// naming a place refers to one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Left,
    Right,
    Top,
    Bottom,
    Middle,
}

impl Place {
    pub const ALL: [Place; 5] = [
        Place::Left,
        Place::Right,
        Place::Top,
        Place::Bottom,
        Place::Middle,
    ];

    pub fn phrase(self) -> &'static str {
        [
            "on the left",
            "on the right",
            "at the top",
            "at the bottom",
            "in the middle",
        ][self as usize]
    }

    /// The shape's centre as fractions of the image side (x, y). Neighbours are 0.28 apart,
    /// more than two big radii (2 × 0.13), so shapes never touch.
    fn centre(self) -> (f64, f64) {
        [
            (0.22, 0.5),
            (0.78, 0.5),
            (0.5, 0.22),
            (0.5, 0.78),
            (0.5, 0.5),
        ][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Big,
    Small,
}

impl Size {
    pub fn name(self) -> &'static str {
        ["big", "small"][self as usize]
    }

    /// Radius as a fraction of the image side.
    fn radius(self) -> f64 {
        [0.13, 0.07][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub kind: Kind,
    pub colour: Colour,
    pub place: Place,
    pub size: Size,
}

/// The ground truth of one image: a background colour and 1–3 shapes at distinct places, none of
/// the background's colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    pub background: Colour,
    pub shapes: Vec<Shape>,
}

/// One statement an answer can make; each becomes one sentence (one sub-sentence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fact {
    Object(Shape),
    Background(Colour),
    Count(usize),
}

/// The questions, and which facts a truthful answer to each states (in order).
const QUESTIONS: [&str; 5] = [
    "What is in the image?",
    "Describe the image.",
    "What shapes can you see?",
    "What colour is the background?",
    "How many shapes are there?",
];

/// Sentence templates for an object: "There is a big red circle on the left." The rejected
/// answer uses the chosen one's template, so the two differ only in their facts.
const OBJECT_TEMPLATES: usize = 3;

impl Scene {
    fn random(rng: &mut Xoshiro256) -> Self {
        let background = pick(rng, &Colour::ALL);
        let n = 1 + rng.below(3) as usize;
        let mut places = Place::ALL.to_vec();
        let shapes = (0..n)
            .map(|_| {
                let place = places.remove(rng.below(places.len() as u64) as usize);
                let colours: Vec<Colour> = Colour::ALL
                    .into_iter()
                    .filter(|&c| c != background)
                    .collect();
                Shape {
                    kind: pick(rng, &Kind::ALL),
                    colour: pick(rng, &colours),
                    place,
                    size: pick(rng, &[Size::Big, Size::Small]),
                }
            })
            .collect();
        Self { background, shapes }
    }

    fn holds(&self, fact: &Fact) -> bool {
        match fact {
            Fact::Object(shape) => self.shapes.contains(shape),
            Fact::Background(colour) => *colour == self.background,
            Fact::Count(n) => *n == self.shapes.len(),
        }
    }

    /// What a truthful answer to `question` (an index into [`QUESTIONS`]) says: 2–4 facts.
    fn facts_for(&self, question: usize) -> Vec<Fact> {
        let objects = self.shapes.iter().map(|&s| Fact::Object(s));
        let background = Fact::Background(self.background);
        let count = Fact::Count(self.shapes.len());
        match question {
            0 => objects.chain([background]).collect(),
            1 if self.shapes.len() < 3 => [count]
                .into_iter()
                .chain(objects)
                .chain([background])
                .collect(),
            1 => objects.chain([background]).collect(),
            2 | 4 => [count].into_iter().chain(objects).collect(),
            _ => [background].into_iter().chain(objects).collect(),
        }
    }

    /// The picture, drawn by hand: no anti-aliasing, so every pixel is a scene colour.
    fn draw(&self, side: u32) -> RgbImage {
        let s = f64::from(side);
        RgbImage::from_fn(side, side, |x, y| {
            let (px, py) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
            let colour = self
                .shapes
                .iter()
                .find(|shape| {
                    let (cx, cy) = shape.place.centre();
                    let r = shape.size.radius() * s;
                    let (dx, dy) = (px - cx * s, py - cy * s);
                    match shape.kind {
                        Kind::Circle => dx * dx + dy * dy <= r * r,
                        // Side 1.7r: about the circle's area.
                        Kind::Square => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
                        // Apex up at (0, −r), base at +r of half-width r.
                        Kind::Triangle => dy.abs() <= r && dx.abs() <= (dy + r) / 2.0,
                    }
                })
                .map_or(self.background, |shape| shape.colour);
            Rgb(colour.rgb())
        })
    }
}

impl Fact {
    fn sentence(&self, template: usize) -> String {
        match *self {
            Fact::Object(Shape {
                kind,
                colour,
                place,
                size,
            }) => {
                let (size, colour, kind, place) =
                    (size.name(), colour.name(), kind.name(), place.phrase());
                match template % OBJECT_TEMPLATES {
                    0 => format!("There is a {size} {colour} {kind} {place}."),
                    1 => format!("The image shows a {size} {colour} {kind} {place}."),
                    _ => format!("A {size} {colour} {kind} is {place}."),
                }
            }
            Fact::Background(colour) => format!("The background is {}.", colour.name()),
            Fact::Count(1) => "There is one shape.".to_owned(),
            Fact::Count(n) => format!("There are {} shapes.", ["two", "three", "four"][n - 2]),
        }
    }

    /// Every false variant of this fact that one hallucination of each kind could produce, with
    /// the kind's name (recorded as a tag of the pair).
    fn false_variants(&self, scene: &Scene) -> Vec<(&'static str, Fact)> {
        let mut out = Vec::new();
        match *self {
            Fact::Object(s) => {
                for colour in Colour::ALL {
                    out.push(("wrong_colour", Fact::Object(Shape { colour, ..s })));
                }
                for kind in Kind::ALL {
                    out.push(("wrong_shape", Fact::Object(Shape { kind, ..s })));
                }
                for place in Place::ALL {
                    out.push(("wrong_position", Fact::Object(Shape { place, ..s })));
                }
                for size in [Size::Big, Size::Small] {
                    out.push(("wrong_size", Fact::Object(Shape { size, ..s })));
                }
            }
            Fact::Background(_) => {
                out.extend(Colour::ALL.map(|c| ("wrong_background", Fact::Background(c))));
            }
            Fact::Count(_) => out.extend((1..=4).map(|n| ("wrong_count", Fact::Count(n)))),
        }
        // Moving a shape to a place where an identical one sits would state a truth.
        out.retain(|(_, fact)| !scene.holds(fact));
        out
    }
}

/// Makes `spec.pairs` pairs. Pair `i` depends only on the seed and the pairs before it, so a
/// smaller `pairs` yields a prefix of a larger one.
pub fn generate(spec: &SyntheticSpec) -> Vec<SyntheticPair> {
    assert!(
        spec.image_size >= 16,
        "image_size {} is too small to draw shapes in (at least 16)",
        spec.image_size
    );
    let mut rng = Xoshiro256::seed_from(spec.seed);
    (0..spec.pairs)
        .map(|i| one_pair(&mut rng, i, spec.image_size))
        .collect()
}

fn one_pair(rng: &mut Xoshiro256, index: usize, image_size: u32) -> SyntheticPair {
    let scene = Scene::random(rng);
    let question = rng.below(QUESTIONS.len() as u64) as usize;
    let template = rng.below(OBJECT_TEMPLATES as u64) as usize;
    let chosen = scene.facts_for(question);
    let errors = 1 + rng.below(3) as usize;
    let (rejected, kinds) = hallucinate(rng, &scene, &chosen, errors);

    let text =
        |facts: &[Fact]| -> Vec<String> { facts.iter().map(|f| f.sentence(template)).collect() };
    let (chosen_subs, rejected_subs) = (text(&chosen), text(&rejected));
    let score = |rng: &mut Xoshiro256, facts: &[Fact]| -> Vec<f64> {
        facts
            .iter()
            .map(|f| {
                let mean = if scene.holds(f) {
                    TRUE_SCORE_MEAN
                } else {
                    FALSE_SCORE_MEAN
                };
                normal(rng, mean, SCORE_SD)
            })
            .collect()
    };
    let scores = Scores {
        chosen: score(rng, &chosen),
        rejected: score(rng, &rejected),
    };

    let id = format!("synthetic:{index}");
    let image = ImageRef::embedded(
        Some(format!("synthetic_{index}.png")),
        png(&scene.draw(image_size)),
    );
    let mut pair = PreferencePair::new(
        id,
        image,
        QUESTIONS[question],
        chosen_subs.join(" "),
        rejected_subs.join(" "),
    );
    pair.sub_sentences = Some(SubSentences {
        chosen: chosen_subs,
        rejected: rejected_subs,
    });
    pair.set_scores(scores, Estimator::Probs)
        .expect("simulated scores are finite and both answers have sentences");
    // The ground truth travels in the file too, for inspecting the data in the browser.
    pair.annotation.tags = std::iter::once(format!("errors:{errors}"))
        .chain(kinds.into_iter().map(str::to_owned))
        .collect();
    pair.source = Source {
        ds_name: Some("synthetic".to_owned()),
        idx: Some(index as i64),
        ..Source::default()
    };
    SyntheticPair {
        pair,
        scene,
        errors,
    }
}

/// The rejected answer: the chosen facts with `errors` of them made false, each a different
/// sentence, either by changing one attribute of a stated fact or by adding an object at an empty
/// place. Returns the facts and the kind of each error.
fn hallucinate(
    rng: &mut Xoshiro256,
    scene: &Scene,
    chosen: &[Fact],
    errors: usize,
) -> (Vec<Fact>, Vec<&'static str>) {
    let mut facts = chosen.to_vec();
    let mut changed = vec![false; facts.len()];
    let mut kinds = Vec::with_capacity(errors);
    for _ in 0..errors {
        let stated = |facts: &[Fact], p: Place| {
            facts
                .iter()
                .any(|f| matches!(f, Fact::Object(s) if s.place == p))
        };
        let empty: Vec<Place> = Place::ALL
            .into_iter()
            .filter(|&p| scene.shapes.iter().all(|s| s.place != p) && !stated(&facts, p))
            .collect();
        // Choices: each unchanged sentence, and one more "absent object" sentence (answers stay
        // at 5 sentences or fewer). Never none: a 2-fact answer has 1 shape, so 4 empty places.
        let mut options: Vec<Option<usize>> = (0..facts.len())
            .filter(|&i| !changed[i])
            .map(Some)
            .collect();
        if !empty.is_empty() && facts.len() < 5 {
            options.push(None);
        }
        match pick(rng, &options) {
            Some(i) => {
                let variants = facts[i].false_variants(scene);
                let kind_names: Vec<&str> = dedup(variants.iter().map(|(k, _)| *k));
                let kind = pick(rng, &kind_names);
                let of_kind: Vec<Fact> = variants
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, f)| *f)
                    .collect();
                facts[i] = pick(rng, &of_kind);
                changed[i] = true;
                kinds.push(kind);
            }
            None => {
                let colours: Vec<Colour> = Colour::ALL
                    .into_iter()
                    .filter(|&c| c != scene.background)
                    .collect();
                let phantom = Fact::Object(Shape {
                    kind: pick(rng, &Kind::ALL),
                    colour: pick(rng, &colours),
                    place: pick(rng, &empty),
                    size: pick(rng, &[Size::Big, Size::Small]),
                });
                let at = rng.below(facts.len() as u64 + 1) as usize;
                facts.insert(at, phantom);
                changed.insert(at, true);
                kinds.push("absent_object");
            }
        }
    }
    (facts, kinds)
}

fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn pick<T: Copy>(rng: &mut Xoshiro256, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

/// A normal draw by Box–Muller (the cosine half), from the crate-wide seeded PRNG.
fn normal(rng: &mut Xoshiro256, mean: f64, sd: f64) -> f64 {
    let (u1, u2) = (rng.open01(), rng.open01());
    mean + sd * (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .expect("encoding a PNG into memory cannot fail");
    out
}

/// What produced the scores, for the annotated header.
pub fn run_info() -> RunInfo {
    RunInfo {
        clip_model: Some(CLIP_MODEL.to_owned()),
        estimator: Some(Estimator::Probs),
        splitter: Some(SPLITTER.to_owned()),
    }
}

/// Writes `<dir>/<name>.jsonl` (annotated: δ̄ over these pairs in the header, α_D on each pair)
/// and the images into `<dir>/<name>_images/`; returns the JSONL's path. Write the training and
/// the held-out pairs under different names: each file gets the δ̄ of its own pairs.
pub fn write_annotated(
    dir: &Path,
    name: &str,
    pairs: &[SyntheticPair],
) -> Result<PathBuf, DataError> {
    let mut records: Vec<PreferencePair> = pairs.iter().map(|p| p.pair.clone()).collect();
    let header = dama_data::annotate(&mut records, &run_info())?;
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir.display().to_string(), e))?;
    let folder = format!("{name}_images");
    let mut sink = FolderSink::new(dir.join(&folder))?;
    let path = dir.join(format!("{name}.jsonl"));
    let label = path.display().to_string();
    let file = File::create(&path).map_err(|e| DataError::io(&label, e))?;
    let images = ImageOut::Sink {
        folder,
        sink: &mut sink,
    };
    let mut writer = AnnotatedJsonlWriter::new(&label, BufWriter::new(file), header, images)?;
    for record in &records {
        writer.write(record)?;
    }
    writer
        .finish()?
        .flush()
        .map_err(|e| DataError::io(&label, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dama_data::{ReadOptions, RuleSplitter, Splitter, open_dataset};

    fn spec(pairs: usize, seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            pairs,
            seed,
            ..SyntheticSpec::default()
        }
    }

    /// Reads a sentence's claim back from its words alone (not from the generator's facts) and
    /// checks it against the scene: the text must say what the picture shows.
    fn true_of(scene: &Scene, sentence: &str) -> bool {
        let words: Vec<String> = sentence
            .trim_end_matches('.')
            .split(' ')
            .map(str::to_lowercase)
            .collect();
        let has = |w: &str| words.iter().any(|x| x == w);
        let one = |found: Vec<usize>| -> usize {
            assert_eq!(found.len(), 1, "{sentence:?}");
            found[0]
        };
        let find = |names: &[&str]| -> usize {
            one((0..names.len()).filter(|&i| has(names[i])).collect())
        };
        let colours: Vec<&str> = Colour::ALL.iter().map(|c| c.name()).collect();
        if has("background") {
            return Colour::ALL[find(&colours)] == scene.background;
        }
        if has("shape") || has("shapes") {
            return find(&["one", "two", "three", "four"]) + 1 == scene.shapes.len();
        }
        let colour = Colour::ALL[find(&colours)];
        let kind = Kind::ALL[find(&["circle", "square", "triangle"])];
        let size = [Size::Big, Size::Small][find(&["big", "small"])];
        let place = Place::ALL[find(&["left", "right", "top", "bottom", "middle"])];
        scene
            .shapes
            .iter()
            .any(|s| (s.colour, s.kind, s.size, s.place) == (colour, kind, size, place))
    }

    fn subs(p: &SyntheticPair) -> &SubSentences {
        p.pair.sub_sentences.as_ref().unwrap()
    }

    fn read_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn same_seed_same_files_other_seed_other_files() {
        let write = |seed| {
            let dir = tempfile::tempdir().unwrap();
            let path = write_annotated(dir.path(), "train", &generate(&spec(24, seed))).unwrap();
            assert_eq!(path, dir.path().join("train.jsonl"));
            let jsonl = std::fs::read(&path).unwrap();
            let images = read_dir(&dir.path().join("train_images"));
            assert_eq!(images.len(), 24);
            (jsonl, images)
        };
        let (a, b, c) = (write(7), write(7), write(8));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        assert_ne!(a.1, c.1);
        // A smaller set is a prefix of a larger one.
        let (small, large) = (generate(&spec(5, 3)), generate(&spec(9, 3)));
        for (s, l) in small.iter().zip(&large) {
            assert_eq!((&s.pair, &s.scene), (&l.pair, &l.scene));
        }
    }

    #[test]
    fn chosen_sentences_are_true_and_each_error_is_one_false_sentence() {
        let pairs = generate(&SyntheticSpec::default());
        let splitter = RuleSplitter::new();
        let mut kinds = std::collections::BTreeSet::new();
        for p in &pairs {
            let s = subs(p);
            assert!((2..=4).contains(&s.chosen.len()), "{:?}", s.chosen);
            assert!(s.chosen.iter().all(|x| true_of(&p.scene, x)), "{p:?}");
            let false_ones = s.rejected.iter().filter(|x| !true_of(&p.scene, x)).count();
            assert!((1..=3).contains(&p.errors));
            assert_eq!(false_ones, p.errors, "{p:?}");
            assert!(s.rejected.len() <= 5);
            assert_eq!(p.pair.chosen, s.chosen.join(" "));
            assert_eq!(p.pair.rejected, s.rejected.join(" "));
            // The project's own splitter cuts the answers into the same sub-sentences.
            assert_eq!(splitter.split_pair(&p.pair).unwrap(), *s);
            let tags = &p.pair.annotation.tags;
            assert_eq!(tags[0], format!("errors:{}", p.errors));
            assert_eq!(tags.len(), p.errors + 1);
            kinds.extend(tags[1..].iter().cloned());
            // Scenes: 1–3 shapes at distinct places, none the colour of the background.
            assert!((1..=3).contains(&p.scene.shapes.len()));
            for (i, a) in p.scene.shapes.iter().enumerate() {
                assert_ne!(a.colour, p.scene.background);
                assert!(p.scene.shapes[i + 1..].iter().all(|b| b.place != a.place));
            }
        }
        // Every kind of hallucination occurs.
        assert_eq!(kinds.len(), 7, "{kinds:?}");
        let errors: Vec<usize> = (1..=3)
            .map(|e| pairs.iter().filter(|p| p.errors == e).count())
            .collect();
        assert!(errors.iter().all(|&n| n > 80), "{errors:?}");
    }

    #[test]
    fn the_written_file_reads_back_strictly_with_delta_and_alpha() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = generate(&spec(40, 1));
        let path = write_annotated(dir.path(), "demo", &pairs).unwrap();
        let mut records =
            open_dataset(&path, None, ReadOptions::strict()).expect("opens the annotated file");
        let header = records.header().unwrap().clone();
        assert_eq!(header.clip_model.as_deref(), Some(CLIP_MODEL));
        assert_eq!(header.splitter.as_deref(), Some(SPLITTER));
        assert_eq!(header.estimator, Some(Estimator::Probs));
        assert_eq!(header.images.as_deref(), Some("demo_images"));
        assert_eq!((header.count, header.kept, header.scored), (40, 40, 40));
        let read: Vec<PreferencePair> = records.by_ref().map(Result::unwrap).collect();
        assert_eq!(read.len(), 40);
        let mut deltas: Vec<f64> = read.iter().map(|p| p.delta.unwrap()).collect();
        let mean = header.delta_mean.unwrap();
        let in_order = dama_core::delta_mean(&deltas).unwrap();
        assert!((mean - in_order).abs() < 1e-12, "{mean} vs {in_order}");
        deltas.sort_by(f64::total_cmp); // dama-data sums in ascending order: equal to the bit
        assert_eq!(mean, dama_core::delta_mean(&deltas).unwrap());
        for (r, g) in read.iter().zip(&pairs) {
            let g = &g.pair;
            assert_eq!(r.alpha_d, Some(dama_core::alpha_d(r.delta.unwrap(), mean)));
            let h = dama_core::delta(
                &r.scores.as_ref().unwrap().chosen,
                &r.scores.as_ref().unwrap().rejected,
                Estimator::Probs,
            )
            .unwrap();
            assert_eq!((r.delta, r.delta_edge), (Some(h.delta), Some(h.edge)));
            assert_eq!(
                (&r.id, &r.question, &r.chosen, &r.rejected),
                (&g.id, &g.question, &g.chosen, &g.rejected)
            );
            assert_eq!((&r.sub_sentences, &r.scores), (&g.sub_sentences, &g.scores));
            assert_eq!((r.delta, &r.annotation), (g.delta, &g.annotation));
            assert_eq!(r.image.bytes, g.image.bytes);
            let img = r.image.decoded.as_ref().unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
        }
        assert!(records.summary().errors.is_empty());
    }

    #[test]
    fn more_errors_make_easier_pairs() {
        let mut scores = (Vec::new(), Vec::new());
        for seed in 0..3 {
            let pairs = generate(&spec(320, seed));
            let mean_delta = |e: usize| {
                let d: Vec<f64> = pairs
                    .iter()
                    .filter(|p| p.errors == e)
                    .map(|p| p.pair.delta.unwrap())
                    .collect();
                d.iter().sum::<f64>() / d.len() as f64
            };
            let by_errors = [mean_delta(1), mean_delta(2), mean_delta(3)];
            assert!(
                by_errors[0] < by_errors[1] && by_errors[1] < by_errors[2],
                "seed {seed}: mean δ by errors {by_errors:?}"
            );
            let all: f64 = pairs.iter().map(|p| p.pair.delta.unwrap()).sum();
            assert!(all > 0.0, "on average the chosen answer wins");
            for p in &pairs {
                let s = subs(p);
                let c = p.pair.scores.as_ref().unwrap();
                let side = s.chosen.iter().zip(&c.chosen);
                for (text, &score) in side.chain(s.rejected.iter().zip(&c.rejected)) {
                    if true_of(&p.scene, text) {
                        scores.0.push(score);
                    } else {
                        scores.1.push(score);
                    }
                }
            }
        }
        // The simulated CLIP scores follow the documented distributions.
        for (xs, mean) in [(&scores.0, TRUE_SCORE_MEAN), (&scores.1, FALSE_SCORE_MEAN)] {
            let n = xs.len() as f64;
            let m = xs.iter().sum::<f64>() / n;
            let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            assert!(n > 1000.0 && (m - mean).abs() < 0.1, "n {n}, mean {m}");
            assert!((sd - SCORE_SD).abs() < 0.06, "sd {sd}");
        }
    }

    #[test]
    fn images_show_their_scenes() {
        let side = 96;
        let pairs = generate(&SyntheticSpec {
            pairs: 60,
            image_size: side,
            seed: 2,
        });
        let images: Vec<RgbImage> = pairs
            .iter()
            .map(|p| {
                let bytes = p.pair.image.bytes.as_ref().unwrap();
                assert_eq!(image::guess_format(bytes).unwrap(), image::ImageFormat::Png);
                dama_data::decode_rgb(bytes).unwrap().to_rgb8()
            })
            .collect();
        for (p, img) in pairs.iter().zip(&images) {
            assert_eq!(img.dimensions(), (side, side));
            let bg = p.scene.background.rgb();
            for (x, y) in [(0, 0), (side - 1, 0), (0, side - 1), (side - 1, side - 1)] {
                assert_eq!(img.get_pixel(x, y).0, bg);
            }
            for shape in &p.scene.shapes {
                let (cx, cy) = shape.place.centre();
                let at = |f: f64| (f * f64::from(side)) as u32;
                assert_eq!(
                    img.get_pixel(at(cx), at(cy)).0,
                    shape.colour.rgb(),
                    "{shape:?}"
                );
            }
            // Each shape covers its area: πr² (circle), (1.7r)² (square), 2r² (triangle).
            let painted = img.pixels().filter(|px| px.0 != bg).count() as f64;
            let expected: f64 = p
                .scene
                .shapes
                .iter()
                .map(|s| {
                    let r = s.size.radius() * f64::from(side);
                    [std::f64::consts::PI, 1.7 * 1.7, 2.0][s.kind as usize] * r * r
                })
                .sum();
            assert!(
                (painted / expected - 1.0).abs() < 0.15,
                "{painted} vs {expected}"
            );
        }
        for i in 0..pairs.len() {
            for j in i + 1..pairs.len() {
                if pairs[i].scene != pairs[j].scene {
                    assert_ne!(images[i], images[j], "pairs {i} and {j}");
                }
            }
        }
    }
}

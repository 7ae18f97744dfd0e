//! What an image shows: a background colour and 1–3 shapes, each with a kind, a colour, a size
//! and a place; and the picture drawn from it, pixel-exact (no anti-aliasing, so every pixel is
//! a scene colour).

use dama_core::Xoshiro256;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage, codecs::png::PngEncoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// The kind of a shape: the world's object classes (what CHAIR counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// The plural, for answers that say "two circles".
    pub fn plural(self) -> &'static str {
        ["circles", "squares", "triangles"][self as usize]
    }
}

/// Where a shape sits. At most one shape per place, so that shapes never overlap and a sentence
/// naming a place refers to one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// The word of [`Self::phrase`] that names the place.
    pub fn word(self) -> &'static str {
        ["left", "right", "top", "bottom", "middle"][self as usize]
    }

    /// The shape's centre as fractions of the image side (x, y). Neighbours are 0.28 apart,
    /// more than two big radii (2 × 0.13), so shapes never touch.
    pub fn centre(self) -> (f64, f64) {
        [
            (0.22, 0.5),
            (0.78, 0.5),
            (0.5, 0.22),
            (0.5, 0.78),
            (0.5, 0.5),
        ][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Size {
    Big,
    Small,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Big, Size::Small];

    pub fn name(self) -> &'static str {
        ["big", "small"][self as usize]
    }

    /// Radius as a fraction of the image side.
    pub fn radius(self) -> f64 {
        [0.13, 0.07][self as usize]
    }
}

/// One object of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    pub kind: Kind,
    pub colour: Colour,
    pub place: Place,
    pub size: Size,
}

/// The ground truth of one image: a background colour and 1–3 shapes at distinct places, none of
/// the background's colour.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scene {
    pub background: Colour,
    pub shapes: Vec<Shape>,
}

pub(crate) fn pick<T: Copy>(rng: &mut Xoshiro256, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

impl Scene {
    /// A random scene: background, 1–3 shapes at distinct places.
    pub fn random(rng: &mut Xoshiro256) -> Self {
        let background = pick(rng, &Colour::ALL);
        let n = 1 + rng.below(3) as usize;
        let mut places = Place::ALL.to_vec();
        let shapes = (0..n)
            .map(|_| {
                let place = places.remove(rng.below(places.len() as u64) as usize);
                Shape {
                    kind: pick(rng, &Kind::ALL),
                    colour: pick(rng, &Self::shape_colours(background)),
                    place,
                    size: pick(rng, &Size::ALL),
                }
            })
            .collect();
        Self { background, shapes }
    }

    /// The colours a shape may have on `background`: all but the background's own.
    pub fn shape_colours(background: Colour) -> Vec<Colour> {
        Colour::ALL
            .into_iter()
            .filter(|&c| c != background)
            .collect()
    }

    /// The exact object list: every shape, in drawing order.
    pub fn objects(&self) -> &[Shape] {
        &self.shapes
    }

    /// The shape at `place`, if any.
    pub fn at(&self, place: Place) -> Option<&Shape> {
        self.shapes.iter().find(|s| s.place == place)
    }

    /// The picture at `side`×`side` pixels.
    pub fn draw(&self, side: u32) -> RgbImage {
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

    /// The picture as PNG bytes.
    pub fn png(&self, side: u32) -> Vec<u8> {
        png(&self.draw(side))
    }
}

pub(crate) fn png(img: &RgbImage) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_show_their_scenes() {
        let side = 96;
        let mut rng = Xoshiro256::seed_from(2);
        let scenes: Vec<Scene> = (0..60).map(|_| Scene::random(&mut rng)).collect();
        let images: Vec<RgbImage> = scenes
            .iter()
            .map(|s| {
                let bytes = s.png(side);
                assert_eq!(
                    image::guess_format(&bytes).unwrap(),
                    image::ImageFormat::Png
                );
                dama_data::decode_rgb(&bytes).unwrap().to_rgb8()
            })
            .collect();
        for (scene, img) in scenes.iter().zip(&images) {
            assert_eq!(img.dimensions(), (side, side));
            let bg = scene.background.rgb();
            for (x, y) in [(0, 0), (side - 1, 0), (0, side - 1), (side - 1, side - 1)] {
                assert_eq!(img.get_pixel(x, y).0, bg);
            }
            for shape in &scene.shapes {
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
            let expected: f64 = scene
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
        for i in 0..scenes.len() {
            for j in i + 1..scenes.len() {
                if scenes[i] != scenes[j] {
                    assert_ne!(images[i], images[j], "scenes {i} and {j}");
                }
            }
        }
    }

    #[test]
    fn scenes_have_distinct_places_and_no_shape_of_the_background_colour() {
        let mut rng = Xoshiro256::seed_from(9);
        let mut counts = [0usize; 3];
        for _ in 0..500 {
            let s = Scene::random(&mut rng);
            assert!((1..=3).contains(&s.shapes.len()));
            counts[s.shapes.len() - 1] += 1;
            for (i, a) in s.shapes.iter().enumerate() {
                assert_ne!(a.colour, s.background);
                assert!(s.shapes[i + 1..].iter().all(|b| b.place != a.place));
                assert_eq!(s.at(a.place), Some(a));
            }
        }
        assert!(counts.iter().all(|&c| c > 120), "{counts:?}");
    }
}

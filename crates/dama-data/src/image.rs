//! Images: where they come from (a folder on disk, files picked in a browser, or bytes embedded
//! in the dataset) and their decoding to RGB. The source is a trait so that the readers never
//! touch a filesystem themselves, which keeps them usable on wasm32.

use std::collections::HashMap;

use image::DynamicImage;

use crate::error::Problem;

/// Resolves the image names that records carry into encoded bytes.
pub trait ImageSource {
    /// The bytes of the image called `name`, or [`Problem::ImageNotFound`] /
    /// [`Problem::ImageUnreadable`].
    fn load(&self, name: &str) -> Result<Vec<u8>, Problem>;
    /// How to name this source in an error ("folder data/images", "the 12 files picked").
    fn describe(&self) -> String;
}

/// For datasets whose images are all embedded: any name is missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoImages;

impl ImageSource for NoImages {
    fn load(&self, name: &str) -> Result<Vec<u8>, Problem> {
        Err(Problem::ImageNotFound {
            name: name.to_owned(),
            store: self.describe(),
        })
    }

    fn describe(&self) -> String {
        "the dataset (no image folder was given)".to_owned()
    }
}

/// Images held in memory, e.g. the files a person picked in the browser. Looked up by the name
/// as written (`\` read as `/`, a leading `./` ignored), then by its file name alone, so that
/// `images/cat.jpg` finds a picked `cat.jpg` and the other way round, as long as that file name
/// is unique among the picked files.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    files: HashMap<String, Vec<u8>>,
    by_file_name: HashMap<String, Option<String>>,
}

impl ImageMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        let key = normalize(name);
        let file = file_name(&key).to_owned();
        self.by_file_name
            .entry(file)
            .and_modify(|k| {
                if k.as_deref() != Some(key.as_str()) {
                    *k = None; // ambiguous: two picked files share this file name
                }
            })
            .or_insert_with(|| Some(key.clone()));
        self.files.insert(key, bytes);
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The names under which the images are stored, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.files.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let key = normalize(name);
        if let Some(bytes) = self.files.get(&key) {
            return Some(bytes);
        }
        let key = self.by_file_name.get(file_name(&key))?.as_ref()?;
        self.files.get(key).map(Vec::as_slice)
    }

    pub fn into_inner(self) -> HashMap<String, Vec<u8>> {
        self.files
    }
}

impl FromIterator<(String, Vec<u8>)> for ImageMap {
    fn from_iter<T: IntoIterator<Item = (String, Vec<u8>)>>(iter: T) -> Self {
        let mut map = Self::new();
        for (name, bytes) in iter {
            map.insert(&name, bytes);
        }
        map
    }
}

impl ImageSource for ImageMap {
    fn load(&self, name: &str) -> Result<Vec<u8>, Problem> {
        self.get(name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Problem::ImageNotFound {
                name: name.to_owned(),
                store: self.describe(),
            })
    }

    fn describe(&self) -> String {
        format!("the {} image files given", self.files.len())
    }
}

fn normalize(name: &str) -> String {
    let name = name.replace('\\', "/");
    let mut name = name.as_str();
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name.to_owned()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A folder on disk. A name is looked up as `folder/name`, then as `folder/<file name of name>`,
/// because the authors' lists carry absolute paths of their own machine.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl ImageFolder {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ImageSource for ImageFolder {
    fn load(&self, name: &str) -> Result<Vec<u8>, Problem> {
        let normalized = normalize(name);
        let mut candidates = vec![self.root.join(&normalized)];
        let file = file_name(&normalized);
        if file != normalized {
            candidates.push(self.root.join(file));
        }
        for path in &candidates {
            match std::fs::read(path) {
                Ok(bytes) => return Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Problem::ImageUnreadable {
                        name: name.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(Problem::ImageNotFound {
            name: name.to_owned(),
            store: self.describe(),
        })
    }

    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }
}

/// Decodes PNG or JPEG bytes and converts to 8-bit RGB, the input of CLIP's and LLaVA's image
/// processors (grey, palette and alpha images all become RGB; alpha is dropped as PIL's
/// `convert("RGB")` does).
pub fn decode_rgb(bytes: &[u8]) -> Result<DynamicImage, image::ImageError> {
    let img = image::load_from_memory(bytes)?;
    Ok(match img {
        DynamicImage::ImageRgb8(_) => img,
        other => DynamicImage::ImageRgb8(other.into_rgb8()),
    })
}

/// The file extension that matches encoded image bytes, for naming exported files.
pub fn extension_of(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::Jpeg) => "jpg",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(w, h, image::Rgba([10, 20, 30, 128]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn decode_converts_to_rgb_and_reports_garbage() {
        let img = decode_rgb(&png(5, 3)).unwrap();
        assert_eq!((img.width(), img.height()), (5, 3));
        assert!(matches!(img, DynamicImage::ImageRgb8(_)));
        assert_eq!(img.to_rgb8().get_pixel(0, 0).0, [10, 20, 30]);
        assert!(decode_rgb(b"not an image").is_err());
        assert_eq!(extension_of(&png(1, 1)), "png");
        assert_eq!(extension_of(b"xx"), "bin");
    }

    #[test]
    fn map_finds_by_path_or_unique_file_name() {
        let mut map = ImageMap::new();
        map.insert("imgs/a.png", vec![1]);
        map.insert("b.png", vec![2]);
        map.insert("x/c.png", vec![3]);
        map.insert("y/c.png", vec![4]);
        assert_eq!(map.get("./imgs/a.png"), Some(&[1u8][..]));
        assert_eq!(map.get("a.png"), Some(&[1u8][..]));
        assert_eq!(map.get("other\\dir\\b.png"), Some(&[2u8][..]));
        assert_eq!(map.get("y/c.png"), Some(&[4u8][..]));
        assert_eq!(map.get("c.png"), None, "ambiguous file name");
        let err = map.load("zzz.png").unwrap_err();
        assert!(err.to_string().contains("zzz.png"), "{err}");
        assert!(NoImages.load("a.png").is_err());
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn folder_falls_back_to_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), [7u8]).unwrap();
        let folder = ImageFolder::new(dir.path());
        assert_eq!(folder.load("a.png").unwrap(), vec![7]);
        assert_eq!(folder.load("/home/authors/data/a.png").unwrap(), vec![7]);
        let err = folder.load("b.png").unwrap_err();
        assert!(matches!(err, Problem::ImageNotFound { .. }), "{err}");
    }
}

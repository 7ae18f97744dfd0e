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

/// A folder on disk, which every image must be inside: a dataset is untrusted input, and a
/// record naming `../../etc/x.png`, an absolute path or a symbolic link out of the folder is a
/// bad record ([`Problem::OutsideFolder`]), never a file read elsewhere.
///
/// A relative name is looked up as `folder/name`, then as `folder/<file name of name>`. An
/// absolute name (the authors' lists carry paths of their own machine) is looked up as
/// `folder/<file name>` only, unless [`ImageFolder::allowing_absolute`] lets the user's own
/// absolute paths through as they are.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: std::path::PathBuf,
    /// `root` with symbolic links and `..` resolved (`None` while it does not exist).
    canonical: Option<std::path::PathBuf>,
    allow_absolute: bool,
}

#[cfg(not(target_arch = "wasm32"))]
impl ImageFolder {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        let root = root.into();
        let canonical = std::fs::canonicalize(&root).ok();
        Self {
            root,
            canonical,
            allow_absolute: false,
        }
    }

    /// Whether absolute image paths are read where they point (`--allow-absolute-images`).
    pub fn allowing_absolute(self, allow: bool) -> Self {
        Self {
            allow_absolute: allow,
            ..self
        }
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    fn outside(&self, name: &str, absolute: bool) -> Problem {
        Problem::OutsideFolder {
            name: name.to_owned(),
            folder: self.describe(),
            absolute,
        }
    }

    /// Reads `path` if it exists and, once its links are resolved, lies inside the folder.
    /// `Ok(None)`: no such file.
    fn read_inside(&self, name: &str, path: &std::path::Path) -> Result<Option<Vec<u8>>, Problem> {
        let real = match std::fs::canonicalize(path) {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(Problem::ImageUnreadable {
                    name: name.to_owned(),
                    error,
                });
            }
        };
        if !self
            .canonical
            .as_ref()
            .is_some_and(|root| real.starts_with(root))
        {
            return Err(self.outside(name, false));
        }
        std::fs::read(&real)
            .map(Some)
            .map_err(|error| Problem::ImageUnreadable {
                name: name.to_owned(),
                error,
            })
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Whether `name` (with `/` separators) climbs above its starting folder (`a/../../b`).
fn escapes(name: &str) -> bool {
    let mut depth = 0i64;
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(not(target_arch = "wasm32"))]
/// An absolute path on any platform: `/x`, `C:/x`, `//server/x`.
fn is_absolute(name: &str) -> bool {
    let b = name.as_bytes();
    name.starts_with('/') || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic())
}

#[cfg(not(target_arch = "wasm32"))]
impl ImageSource for ImageFolder {
    fn load(&self, name: &str) -> Result<Vec<u8>, Problem> {
        let normalized = normalize(name);
        let file = file_name(&normalized);
        let not_found = || Problem::ImageNotFound {
            name: name.to_owned(),
            store: self.describe(),
        };
        if is_absolute(&normalized) {
            if self.allow_absolute {
                return std::fs::read(name).map_err(|error| match error.kind() {
                    std::io::ErrorKind::NotFound => not_found(),
                    _ => Problem::ImageUnreadable {
                        name: name.to_owned(),
                        error,
                    },
                });
            }
            // Never read where it points: only its file name, inside the folder.
            return self
                .read_inside(name, &self.root.join(file))?
                .ok_or_else(|| Problem::ImageNotFound {
                    name: name.to_owned(),
                    store: format!(
                        "{} (an absolute path is looked up by its file name there; --allow-absolute-images reads it where it points)",
                        self.describe()
                    ),
                });
        }
        if escapes(&normalized) {
            return Err(self.outside(name, false));
        }
        if let Some(bytes) = self.read_inside(name, &self.root.join(&normalized))? {
            return Ok(bytes);
        }
        if file != normalized
            && let Some(bytes) = self.read_inside(name, &self.root.join(file))?
        {
            return Ok(bytes);
        }
        Err(not_found())
    }

    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }
}

/// The largest width or height an image may have: 8192 pixels (RLAIF-V's are under 2,100;
/// CLIP and LLaVA resize to 224–336 anyway).
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// The width and height an image's header declares (nothing is decoded), for the size check.
pub fn image_dimensions(bytes: &[u8]) -> Result<(u32, u32), image::ImageError> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()?
        .into_dimensions()
}

/// Decodes PNG or JPEG bytes and converts to 8-bit RGB, the input of CLIP's and LLaVA's image
/// processors (grey, palette and alpha images all become RGB; alpha is dropped as PIL's
/// `convert("RGB")` does).
///
/// Decoding is bounded: a side over [`MAX_IMAGE_SIDE`] pixels (a decompression bomb declares
/// one) is an error before any pixel is allocated.
pub fn decode_rgb(bytes: &[u8]) -> Result<DynamicImage, image::ImageError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let img = reader.decode()?;
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

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn no_path_leaves_the_folder() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("images");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(top.path().join("secret.png"), [1u8]).unwrap();
        std::fs::write(root.join("sub/in.png"), [2u8]).unwrap();
        std::os::unix::fs::symlink(top.path().join("secret.png"), root.join("link.png")).unwrap();
        let folder = ImageFolder::new(&root);
        assert_eq!(folder.load("sub/../sub/in.png").unwrap(), vec![2]);
        let secret = top.path().join("secret.png").display().to_string();
        for name in ["../secret.png", "sub/../../secret.png", "link.png"] {
            let err = folder.load(name).unwrap_err();
            assert!(
                matches!(err, Problem::OutsideFolder { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        // An absolute path is only looked up by its file name inside the folder.
        let err = folder.load(&secret).unwrap_err();
        assert!(matches!(err, Problem::ImageNotFound { .. }), "{err}");
        assert!(err.to_string().contains("--allow-absolute-images"), "{err}");
        // The user's own absolute paths, when allowed, are read where they point.
        let allowing = ImageFolder::new(&root).allowing_absolute(true);
        assert_eq!(allowing.load(&secret).unwrap(), vec![1]);
        assert!(
            allowing.load("../secret.png").is_err(),
            "relative paths stay inside"
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_decoding() {
        // A PNG header declaring 100000×100000 pixels (a real bomb compresses that to kB).
        let img = image::GrayImage::new(1, 1);
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let mut bytes = png.into_inner();
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // the IHDR chunk's CRC-32 over its type and data (bytes 12..29), so that only the size
        // is wrong with it
        let crc = !bytes[12..29].iter().fold(!0u32, |mut c, &b| {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
            c
        });
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(image_dimensions(&bytes).unwrap(), (100_000, 100_000));
        assert!(decode_rgb(&bytes).is_err());
    }
}

//! The COCO 2014 annotation files Object HalBench's ground truth comes from, read as a stream:
//! of `instances_*.json` only `categories` and each annotation's `image_id` and `category_id`,
//! of `captions_*.json` each annotation's `image_id` and `caption`, and of those only the
//! annotations of the wanted images are kept (the train instances file is 330 MB, mostly
//! segmentation polygons that are skipped unparsed into memory).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::EvalError;

/// The four files, in the order the reference combines them.
pub const INSTANCE_FILES: [&str; 2] = ["instances_val2014.json", "instances_train2014.json"];
pub const CAPTION_FILES: [&str; 2] = ["captions_val2014.json", "captions_train2014.json"];

/// What Object HalBench needs from COCO for a set of images.
#[derive(Debug, Default)]
pub struct CocoAnnotations {
    /// Category id → name.
    pub categories: HashMap<i64, String>,
    /// Image → the category ids of its instances (with repeats).
    pub instances: HashMap<i64, Vec<i64>>,
    /// Image → its captions.
    pub captions: HashMap<i64, Vec<String>>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct Category {
    id: i64,
    name: String,
}

#[derive(Deserialize)]
struct Instance {
    image_id: i64,
    category_id: i64,
}

#[derive(Deserialize)]
struct Caption {
    image_id: i64,
    caption: String,
}

trait Keyed {
    fn image_id(&self) -> i64;
}
impl Keyed for Instance {
    fn image_id(&self) -> i64 {
        self.image_id
    }
}
impl Keyed for Caption {
    fn image_id(&self) -> i64 {
        self.image_id
    }
}

/// A JSON array whose elements are kept only if their image is wanted.
struct Wanted<'a, T> {
    images: &'a HashSet<i64>,
    out: &'a mut Vec<T>,
}

impl<'de, T: Deserialize<'de> + Keyed> DeserializeSeed<'de> for Wanted<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de> + Keyed> Visitor<'de> for Wanted<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of annotations")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<T>()? {
            if self.images.contains(&item.image_id()) {
                self.out.push(item);
            }
        }
        Ok(())
    }
}

/// The top-level object of a COCO file: `annotations` filtered, `categories` kept if asked,
/// everything else skipped.
struct CocoFile<'a, T> {
    images: &'a HashSet<i64>,
    annotations: &'a mut Vec<T>,
    categories: Option<&'a mut Vec<Category>>,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de> + Keyed> Visitor<'de> for CocoFile<'_, T> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a COCO annotation file (an object with \"annotations\")")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<bool, A::Error> {
        let mut saw_annotations = false;
        while let Some(key) = map.next_key::<String>()? {
            match (key.as_str(), self.categories.as_deref_mut()) {
                ("annotations", _) => {
                    saw_annotations = true;
                    map.next_value_seed(Wanted {
                        images: self.images,
                        out: &mut *self.annotations,
                    })?;
                }
                ("categories", Some(categories)) => {
                    categories.extend(map.next_value::<Vec<Category>>()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(saw_annotations)
    }
}

fn read_file<T: for<'de> Deserialize<'de> + Keyed>(
    path: &Path,
    images: &HashSet<i64>,
    annotations: &mut Vec<T>,
    categories: Option<&mut Vec<Category>>,
) -> Result<(), EvalError> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(file));
    let visitor = CocoFile {
        images,
        annotations,
        categories,
        _t: PhantomData,
    };
    let saw = de::Deserializer::deserialize_map(&mut de, visitor)
        .map_err(|e| EvalError::json(path, None, e))?;
    if !saw {
        return Err(EvalError::file(
            path,
            "no \"annotations\": not a COCO annotation file",
        ));
    }
    Ok(())
}

impl CocoAnnotations {
    /// Reads whichever of the four COCO 2014 files `dir` holds (at least one instances and one
    /// captions file), keeping the annotations of `images`.
    pub fn read(dir: &Path, images: &HashSet<i64>) -> Result<Self, EvalError> {
        let present = |names: [&str; 2]| -> Vec<PathBuf> {
            names
                .iter()
                .map(|n| dir.join(n))
                .filter(|p| p.is_file())
                .collect()
        };
        let (instance_files, caption_files) = (present(INSTANCE_FILES), present(CAPTION_FILES));
        if instance_files.is_empty() || caption_files.is_empty() {
            return Err(EvalError::file(
                dir,
                format!(
                    "needs COCO 2014 annotations: {} and {} (at least one of each; from \
                     https://cocodataset.org, annotations_trainval2014.zip)",
                    INSTANCE_FILES.join(" / "),
                    CAPTION_FILES.join(" / ")
                ),
            ));
        }
        let mut out = Self::default();
        let mut categories = Vec::new();
        for path in &instance_files {
            let mut found: Vec<Instance> = Vec::new();
            read_file(path, images, &mut found, Some(&mut categories))?;
            for i in found {
                out.instances
                    .entry(i.image_id)
                    .or_default()
                    .push(i.category_id);
            }
        }
        for path in &caption_files {
            let mut found: Vec<Caption> = Vec::new();
            read_file(path, images, &mut found, None)?;
            for c in found {
                out.captions.entry(c.image_id).or_default().push(c.caption);
            }
        }
        out.categories = categories.into_iter().map(|c| (c.id, c.name)).collect();
        out.files = instance_files.into_iter().chain(caption_files).collect();
        Ok(out)
    }
}

//! Where an annotated JSONL export puts its images.

use crate::error::DataError;
use crate::image::ImageMap;

/// How a JSONL writer stores each pair's image. (Parquet always embeds the bytes.)
pub enum ImageOut<'s> {
    /// Base64 inside each record (`image_b64`): one self-contained file. The image's name, if
    /// it has one, is kept in `image` (a reader uses the bytes).
    Inline,
    /// Keep each pair's own image name (`image`), to be found in `folder`, given relative to the
    /// annotated file (or absolute): for datasets whose images already sit in a folder.
    Reference { folder: String },
    /// Write each image into `sink` under a new unique name `<id>.<ext>`, recorded as `image`;
    /// `folder` is where the sink's files will be relative to the annotated file.
    Sink {
        folder: String,
        sink: &'s mut dyn ImageSink,
    },
}

impl ImageOut<'_> {
    pub(crate) fn folder(&self) -> Option<String> {
        match self {
            ImageOut::Inline => None,
            ImageOut::Reference { folder } | ImageOut::Sink { folder, .. } => Some(folder.clone()),
        }
    }
}

/// Receives exported images: files in a folder natively, an [`ImageMap`] in the browser (which
/// then offers them for download).
pub trait ImageSink {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), DataError>;
}

impl ImageSink for ImageMap {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), DataError> {
        self.insert(name, bytes.to_vec());
        Ok(())
    }
}

/// Writes images as files into a folder, creating it.
#[cfg(not(target_arch = "wasm32"))]
pub struct FolderSink {
    dir: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl FolderSink {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Result<Self, DataError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(dir.display().to_string(), e))?;
        Ok(Self { dir })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ImageSink for FolderSink {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), DataError> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| DataError::io(path.display().to_string(), e))
    }
}

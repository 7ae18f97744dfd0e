//! Writing files so that a kill at any instant leaves either the old content or the new one,
//! never a cut: the bytes go to a temporary file beside the target, are synced, and the file
//! is renamed over the target.

use std::path::Path;

use crate::error::{Result, TrainError};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    std::fs::write(tmp, bytes)
        .and_then(|()| std::fs::File::open(tmp)?.sync_all())
        .map_err(TrainError::io("writing", tmp))?;
    std::fs::rename(tmp, path).map_err(TrainError::io("renaming into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

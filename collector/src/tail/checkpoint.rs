//! Tail positions as they are checkpointed, and the atomic file replacement that writes them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::state::FileId;

/// Where a restart resumes one file: the end of the last line shipped, and a hash of the bytes
/// just before it, so that a file rewritten or replaced under the same inode is read from 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePosition {
    pub dev: u64,
    pub ino: u64,
    /// The path the file was tailed as (its directory is searched for the inode when the file was
    /// rotated away while the collector was down).
    pub path: PathBuf,
    pub offset: u64,
    /// xxh3 of the `guard_len` bytes before `offset`.
    pub guard_hash: u64,
    pub guard_len: usize,
}

impl FilePosition {
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// Whether `guard` (the bytes now before `offset`) matches the checkpointed ones.
    pub fn guard_matches(&self, guard: &[u8]) -> bool {
        guard.len() == self.guard_len && xxh3_64(guard) == self.guard_hash
    }
}

/// The guard hash of `bytes`.
pub fn guard_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Replaces `path` with `bytes` atomically: writes `<path>.tmp`, fsyncs it, renames it over
/// `path` and fsyncs the directory, so that a crash leaves the old or the new file, whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// The file's bytes, or `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        assert_eq!(read_if_exists(&p).unwrap(), None);
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read_if_exists(&p).unwrap().unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

//! Where closed chunks live: on disk in append-only chunk files (`chunks/<n>`), read back with
//! positioned reads (the page cache keeps hot ones in memory), so the head keeps only a small
//! reference per closed chunk. Prometheus memory-maps its head chunk files; we read with
//! `pread` because `unsafe` (which mapping needs) is denied.
//!
//! Chunk files are not synced on every write: the WAL holds the same samples until a
//! checkpoint, which syncs the files first. Files no checkpointed chunk references any more
//! (retention, deletes) are removed after a checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A chunk in a chunk file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DiskRef {
    pub(crate) file: u32,
    pub(crate) off: u32,
    pub(crate) len: u32,
}

/// A closed chunk's bytes: in memory or in a chunk file.
#[derive(Clone, Debug)]
pub(crate) enum ChunkData {
    Mem(Box<[u8]>),
    Disk(DiskRef),
}

/// Files start fresh past this size (offsets are u32).
const MAX_FILE: u64 = 256 << 20;

#[derive(Debug)]
struct Writer {
    file: File,
    num: u32,
    size: u64,
    /// Files written since the last sync.
    dirty: BTreeSet<u32>,
}

#[derive(Debug)]
struct Files {
    dir: PathBuf,
    writer: Mutex<Writer>,
    readers: RwLock<HashMap<u32, Arc<File>>>,
}

/// The chunk storage of one head; without a directory (tests) chunks stay in memory.
#[derive(Debug, Default)]
pub(crate) struct ChunkStore {
    files: Option<Files>,
    /// Held (shared) by readers decoding chunk references copied from the head, taken while
    /// they still hold the head's lock; removing files waits for them, so a chunk moved to
    /// another file (and its old file removed) is never missed by a read in flight.
    pins: RwLock<()>,
}

fn file_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}"))
}

fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        if let Some(n) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn create(dir: &Path, n: u32) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(file_path(dir, n))
}

impl ChunkStore {
    /// Chunk files in `dir`; appends go to a new file.
    pub(crate) fn open(dir: &Path) -> io::Result<ChunkStore> {
        fs::create_dir_all(dir)?;
        let mut readers = HashMap::new();
        let existing = list(dir)?;
        for n in &existing {
            readers.insert(*n, Arc::new(File::open(file_path(dir, *n))?));
        }
        let num = existing.last().map_or(1, |n| n + 1);
        let file = create(dir, num)?;
        readers.insert(num, Arc::new(file.try_clone()?));
        Ok(ChunkStore {
            pins: RwLock::new(()),
            files: Some(Files {
                dir: dir.to_path_buf(),
                writer: Mutex::new(Writer {
                    file,
                    num,
                    size: 0,
                    dirty: BTreeSet::from([num]),
                }),
                readers: RwLock::new(readers),
            }),
        })
    }

    /// Stores a closed chunk. A failed write keeps it in memory (the WAL still has its
    /// samples, and the next checkpoint records it).
    pub(crate) fn put(&self, bytes: Vec<u8>) -> ChunkData {
        let Some(files) = &self.files else {
            return ChunkData::Mem(bytes.into_boxed_slice());
        };
        match files.write(&bytes) {
            Ok(r) => ChunkData::Disk(r),
            Err(e) => {
                tracing::error!(dir = %files.dir.display(), error = %e,
                    "tsdb: writing a chunk file failed; keeping the chunk in memory");
                ChunkData::Mem(bytes.into_boxed_slice())
            }
        }
    }

    pub(crate) fn get<'a>(&self, d: &'a ChunkData) -> io::Result<Cow<'a, [u8]>> {
        match d {
            ChunkData::Mem(b) => Ok(Cow::Borrowed(b)),
            ChunkData::Disk(r) => {
                let files = self
                    .files
                    .as_ref()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no chunk directory"))?;
                files.read(*r).map(Cow::Owned)
            }
        }
    }

    /// The file appends go to.
    pub(crate) fn current_file(&self) -> u32 {
        self.files.as_ref().map_or(0, |f| {
            f.writer.lock().unwrap_or_else(|e| e.into_inner()).num
        })
    }

    /// Makes every chunk written so far durable; returns the file appends go to now.
    pub(crate) fn sync(&self) -> io::Result<u32> {
        let Some(files) = &self.files else {
            return Ok(0);
        };
        // Take the set and sync without the writer lock: appends go on meanwhile (the current
        // file stays in the set for the next sync).
        let (dirty, num) = {
            let mut w = files.writer.lock().unwrap_or_else(|e| e.into_inner());
            let dirty = std::mem::take(&mut w.dirty);
            let num = w.num;
            w.dirty.insert(num);
            (dirty, num)
        };
        for n in &dirty {
            let f = files
                .readers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(n)
                .cloned();
            if let Some(f) = f
                && let Err(e) = f.sync_data()
            {
                // Still to sync next time.
                let mut w = files.writer.lock().unwrap_or_else(|e| e.into_inner());
                w.dirty.extend(dirty);
                return Err(e);
            }
        }
        Ok(num)
    }

    /// Starts a new file for appends (older files can then become unreferenced and be
    /// removed); returns its number.
    pub(crate) fn rotate(&self) -> io::Result<u32> {
        let Some(files) = &self.files else {
            return Ok(0);
        };
        let mut w = files.writer.lock().unwrap_or_else(|e| e.into_inner());
        files.start_file(&mut w)?;
        Ok(w.num)
    }

    /// Keeps files from being removed while the guard lives (see `pins`).
    pub(crate) fn pin(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.pins.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the files before `before` that `live` does not reference, when no read that
    /// pinned the files is in flight; otherwise (after waiting up to a second) leaves them to
    /// the next call. It never blocks readers: waiting for the write lock would stop new
    /// readers, which pin while holding the head's lock.
    pub(crate) fn remove_unreferenced(&self, live: &HashSet<u32>, before: u32) -> io::Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let mut tries = 0;
        let _no_reads = loop {
            match self.pins.try_write() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
            }
        };
        let mut readers = files.readers.write().unwrap_or_else(|e| e.into_inner());
        let dead: Vec<u32> = readers
            .keys()
            .copied()
            .filter(|n| *n < before && !live.contains(n))
            .collect();
        for n in dead {
            readers.remove(&n);
            fs::remove_file(file_path(&files.dir, n))?;
        }
        Ok(())
    }
}

impl Files {
    fn write(&self, bytes: &[u8]) -> io::Result<DiskRef> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?;
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.size + bytes.len() as u64 > MAX_FILE {
            self.start_file(&mut w)?;
        }
        let off = w.size as u32;
        if let Err(e) = w.file.write_all(bytes) {
            // Later chunks must not land behind a partial one at an unknown offset.
            let size = w.size;
            w.file.set_len(size)?;
            return Err(e);
        }
        w.size += bytes.len() as u64;
        Ok(DiskRef {
            file: w.num,
            off,
            len,
        })
    }

    fn start_file(&self, w: &mut Writer) -> io::Result<()> {
        let num = w.num + 1;
        let file = create(&self.dir, num)?;
        self.readers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(num, Arc::new(file.try_clone()?));
        w.file = file;
        w.num = num;
        w.size = 0;
        w.dirty.insert(num);
        Ok(())
    }

    fn read(&self, r: DiskRef) -> io::Result<Vec<u8>> {
        let f = self
            .readers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&r.file)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "chunk file is gone"))?;
        let mut buf = vec![0u8; r.len as usize];
        f.read_exact_at(&mut buf, u64::from(r.off))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_through_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(tmp.path()).unwrap();
        let a = store.put(vec![1, 2, 3]);
        let b = store.put(vec![4; 100]);
        assert_eq!(&*store.get(&a).unwrap(), &[1, 2, 3]);
        assert_eq!(store.get(&b).unwrap().len(), 100);
        let cur = store.sync().unwrap();
        drop(store);
        let store = ChunkStore::open(tmp.path()).unwrap();
        assert_eq!(&*store.get(&a).unwrap(), &[1, 2, 3]);
        // A file nothing references is removed; referenced ones stay.
        let ChunkData::Disk(r) = a else {
            panic!("on disk")
        };
        store.remove_unreferenced(&HashSet::new(), cur + 1).unwrap();
        assert!(store.get(&a).is_err());
        assert_eq!(list(tmp.path()).unwrap().len(), 1);
        assert_eq!(r.file, cur);
    }
}

//! A rotation-safe file tailer.
//!
//! Files are found by globs at every poll (new files are picked up) and tracked by (device,
//! inode), so that:
//! - rename rotation (`mv access.log access.log.1` then the writer reopens) keeps reading the old
//!   inode through its open descriptor to its end, until it has been quiet for `rotate_wait`, and
//!   reads the new file from 0 as a file of its own under the same stream path;
//! - copytruncate (the file shrinks) restarts at 0, and a file rewritten past the position (the
//!   bytes before the position changed) too;
//! - partial last lines wait for their newline.
//!
//! Positions advance in two steps: `read` when lines are handed out, `acked` when the caller says
//! they were shipped ([`Tailer::ack`]); [`Tailer::positions`] gives the acknowledged ones for the
//! checkpoint, so a restart resumes after the last shipped line. A checkpointed file that was
//! rotated away while the collector was down is looked for by inode in its directory and read to
//! its end.
//!
//! The decisions live in [`state`] (pure, time passed in); this module only does the I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

pub mod checkpoint;
pub mod state;

pub use checkpoint::FilePosition;
pub use state::{FileId, Line, ReadStats};

use state::{FileState, GUARD_LEN, SizeDecision};

/// Where a file found at the first poll, without a checkpoint entry, is read from. Files that
/// appear later are always read from their start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// How a [`Tailer`] behaves.
#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Globs of the files to tail.
    pub include: Vec<String>,
    /// Globs of files to leave out (compressed rotations, `*.gz`).
    pub exclude: Vec<String>,
    pub read_from: ReadFrom,
    /// How long a rotated file is kept open after it last grew.
    pub rotate_wait: Duration,
    /// Longer lines are cut to this many bytes.
    pub max_line_bytes: usize,
    /// At most this many bytes are read from one file per poll (fairness between files).
    pub max_read_bytes: usize,
}

/// What one poll did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    pub read: ReadStats,
    /// Files that shrank and were read again from 0.
    pub truncations: u64,
    /// Files found for the first time.
    pub opened: u64,
    /// Rotated files closed after being read to their end.
    pub closed: u64,
    /// Files that could not be stat'ed, opened or read.
    pub errors: u64,
    /// Whether some file has more to read than this poll's budget allowed.
    pub more: bool,
}

#[derive(Debug)]
struct Tailed {
    state: FileState,
    file: File,
}

/// Tails the files matching a set of globs.
#[derive(Debug)]
pub struct Tailer {
    opts: TailOptions,
    exclude: Vec<glob::Pattern>,
    files: BTreeMap<FileId, Tailed>,
    /// Checkpointed positions not yet matched to a file (consumed by the first poll).
    restore: HashMap<FileId, FilePosition>,
    started: bool,
}

impl Tailer {
    /// A tailer resuming from `restored` positions (empty on a first start). Globs are checked by
    /// the config's validation; a bad one here matches nothing.
    pub fn new(opts: TailOptions, restored: Vec<FilePosition>) -> Self {
        let exclude = opts
            .exclude
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        Tailer {
            opts,
            exclude,
            files: BTreeMap::new(),
            restore: restored.into_iter().map(|p| (p.id(), p)).collect(),
            started: false,
        }
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Finds files and appends the complete lines written since the last poll to `out`, rotated
    /// files' lines before those of the files that replaced them. `now_ms` is a monotonic clock
    /// in milliseconds (only differences matter).
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<Line>) -> PollStats {
        let mut stats = PollStats::default();
        self.scan(now_ms, &mut stats);
        let rotate_wait = u64::try_from(self.opts.rotate_wait.as_millis()).unwrap_or(u64::MAX);
        // Rotated files first, oldest rotation first, so that a stream stays in order.
        let mut order: Vec<(u64, FileId)> = self
            .files
            .values()
            .map(|t| (t.state.rotated_at_ms.unwrap_or(u64::MAX), t.state.id))
            .collect();
        order.sort_unstable();
        let mut finished = Vec::new();
        for (_, id) in order {
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            match read_file(t, &self.opts, now_ms, out, &mut stats) {
                Ok(()) => {}
                Err(e) => {
                    stats.errors += 1;
                    warn!(path = %t.state.path.display(), error = %e, "reading a tailed file failed");
                }
            }
            if t.state.quiet(now_ms, rotate_wait) && t.state.has_partial() {
                t.state.flush_partial(out, &mut stats.read);
            }
            if t.state.finished(now_ms, rotate_wait) {
                finished.push(id);
            }
        }
        for id in finished {
            if let Some(t) = self.files.remove(&id) {
                debug!(path = %t.state.path.display(), ino = id.ino, "rotated file done");
                stats.closed += 1;
            }
        }
        stats
    }

    /// Records that every line up to `end` of `file` (generation `generation`) was shipped.
    pub fn ack(&mut self, file: FileId, generation: u64, end: u64) {
        if let Some(t) = self.files.get_mut(&file) {
            t.state.ack(generation, end);
        }
    }

    /// The generation and acknowledged position of `file`, if it is open.
    pub fn position(&self, file: FileId) -> Option<(u64, u64)> {
        self.files
            .get(&file)
            .map(|t| (t.state.generation, t.state.acked))
    }

    /// The paths of the files open now (a rotated file's is the path it was tailed as).
    pub fn open_paths(&self) -> impl Iterator<Item = &Arc<Path>> {
        self.files.values().map(|t| &t.state.path)
    }

    /// The shipped positions of every open file, for the checkpoint.
    pub fn positions(&self) -> Vec<FilePosition> {
        self.files
            .values()
            .map(|t| {
                let s = &t.state;
                let len = usize::try_from(s.acked)
                    .unwrap_or(usize::MAX)
                    .min(GUARD_LEN);
                let mut guard = vec![0; len];
                let (offset, guard) = match t.file.read_exact_at(&mut guard, s.acked - len as u64) {
                    Ok(()) => (s.acked, guard),
                    // Truncated since: resume from the start.
                    Err(_) => (0, Vec::new()),
                };
                FilePosition {
                    dev: s.id.dev,
                    ino: s.id.ino,
                    path: s.path.to_path_buf(),
                    offset,
                    guard_hash: checkpoint::guard_hash(&guard),
                    guard_len: guard.len(),
                }
            })
            .collect()
    }

    fn excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|p| p.matches_path(path))
    }

    /// Globs the include patterns, opens new files and marks tracked files found at no path as
    /// rotated.
    fn scan(&mut self, now_ms: u64, stats: &mut PollStats) {
        let mut seen = HashSet::new();
        let mut paths: Vec<PathBuf> = Vec::new();
        for pattern in &self.opts.include {
            match glob::glob(pattern) {
                Ok(found) => paths.extend(found.filter_map(std::result::Result::ok)),
                Err(e) => warn!(pattern, error = %e, "bad glob"),
            }
        }
        paths.sort();
        paths.dedup();
        for path in paths {
            if self.excluded(&path) {
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                // Gone between the glob and the stat: the next poll sees the new state.
                Err(_) => continue,
            };
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if !seen.insert(id) {
                continue;
            }
            if let Some(t) = self.files.get_mut(&id) {
                t.state.rotated_at_ms = None;
                continue;
            }
            match self.open(&path, id, meta.len(), now_ms) {
                Ok(t) => {
                    stats.opened += 1;
                    debug!(path = %path.display(), ino = id.ino, offset = t.state.read, "tailing file");
                    self.files.insert(id, t);
                }
                Err(e) => {
                    stats.errors += 1;
                    warn!(path = %path.display(), error = %e, "opening a file to tail failed");
                }
            }
        }
        for t in self.files.values_mut() {
            if !seen.contains(&t.state.id) && t.state.rotated_at_ms.is_none() {
                t.state.rotated_at_ms = Some(now_ms);
            }
        }
        if !self.started {
            self.started = true;
            self.find_rotated_while_down(now_ms, stats);
        }
    }

    /// Opens a newly found file at the position its checkpoint, or `read_from`, says.
    fn open(&mut self, path: &Path, id: FileId, size: u64, now_ms: u64) -> std::io::Result<Tailed> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.dev() != id.dev || meta.ino() != id.ino {
            return Err(std::io::Error::other("file replaced while opening"));
        }
        let (offset, guard) = match self.restore.remove(&id) {
            Some(pos) => verified(&file, &pos, meta.len()),
            None if !self.started && self.opts.read_from == ReadFrom::End => {
                guard_before(&file, size).unwrap_or((0, Vec::new()))
            }
            None => (0, Vec::new()),
        };
        Ok(Tailed {
            state: FileState::new(id, Arc::from(path), offset, guard, now_ms),
            file,
        })
    }

    /// Checkpointed files found at no watched path at start were rotated while the collector was
    /// down: finds each in its old directory by inode and reads it to its end.
    fn find_rotated_while_down(&mut self, now_ms: u64, stats: &mut PollStats) {
        let restore = std::mem::take(&mut self.restore);
        for (id, pos) in restore {
            let Some(dir) = pos.path.parent() else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                let Ok(meta) = std::fs::metadata(&p) else {
                    continue;
                };
                if meta.dev() != id.dev || meta.ino() != id.ino || !meta.is_file() {
                    continue;
                }
                match File::open(&p) {
                    Ok(file) => {
                        let (offset, guard) = verified(&file, &pos, meta.len());
                        let mut state = FileState::new(
                            id,
                            Arc::from(pos.path.as_path()),
                            offset,
                            guard,
                            now_ms,
                        );
                        state.rotated_at_ms = Some(now_ms);
                        debug!(path = %p.display(), offset, "resuming a file rotated while down");
                        stats.opened += 1;
                        self.files.insert(id, Tailed { state, file });
                    }
                    Err(e) => {
                        stats.errors += 1;
                        warn!(path = %p.display(), error = %e, "opening a rotated file failed");
                    }
                }
                break;
            }
        }
    }
}

/// The checkpointed position if the file still holds the same bytes before it, else 0.
fn verified(file: &File, pos: &FilePosition, size: u64) -> (u64, Vec<u8>) {
    if pos.offset > size {
        return (0, Vec::new());
    }
    match guard_before(file, pos.offset) {
        Some((offset, guard)) if pos.guard_matches(&guard) => (offset, guard),
        _ => (0, Vec::new()),
    }
}

/// `offset` and the up to [`GUARD_LEN`] bytes before it.
fn guard_before(file: &File, offset: u64) -> Option<(u64, Vec<u8>)> {
    let len = usize::try_from(offset).unwrap_or(usize::MAX).min(GUARD_LEN);
    let mut guard = vec![0; len];
    file.read_exact_at(&mut guard, offset - len as u64).ok()?;
    Some((offset, guard))
}

/// Reads what a file has beyond its position, up to the per-poll budget.
fn read_file(
    t: &mut Tailed,
    opts: &TailOptions,
    now_ms: u64,
    out: &mut Vec<Line>,
    stats: &mut PollStats,
) -> std::io::Result<()> {
    // Two rounds: a guard mismatch restarts at 0 and reads again at once.
    for _ in 0..2 {
        let size = t.file.metadata()?.len();
        let (from, guard) = match t.state.on_size(size, now_ms) {
            SizeDecision::Idle => return Ok(()),
            SizeDecision::Truncated => {
                stats.truncations += 1;
                debug!(path = %t.state.path.display(), "file truncated, reading from its start");
                continue;
            }
            SizeDecision::Read { from, guard } => (from, guard),
        };
        let want = usize::try_from(size - from)
            .unwrap_or(usize::MAX)
            .min(opts.max_read_bytes.saturating_add(guard));
        if want < usize::try_from(size - from).unwrap_or(usize::MAX) {
            stats.more = true;
        }
        let mut buf = vec![0; want];
        let n = read_at_most(&t.file, &mut buf, from)?;
        buf.truncate(n);
        if t.state.on_data(
            &buf,
            guard,
            opts.max_line_bytes,
            now_ms,
            out,
            &mut stats.read,
        ) {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads from `offset` until `buf` is full or the end of the file.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;

//! The write-ahead log of one tenant: numbered segment files of CRC-checked records.
//!
//! Frame: `len u32 LE, crc32 u32 LE (of the payload), payload`. Group commit: appenders
//! [`Wal::enqueue`] their encoded records (under the head's lock, so the log order is the
//! head's order), then [`Wal::wait_durable`]: the first to take the I/O lock writes every
//! pending record and fdatasyncs once; the others find their records durable when they get it.
//! Recovery reads the segments in order and cuts a torn or corrupt tail.

pub(crate) mod record;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(crate) use record::Record;

const FRAME_HEADER: usize = 8;
/// A record larger than this is corruption, not data.
const MAX_RECORD: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("wal is unusable after a failed write; restart to recover: {0}")]
    Failed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}"))
}

/// Segment numbers in `dir`, ascending.
pub(crate) fn segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Makes a directory entry change (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    last_seq: u64,
}

#[derive(Debug)]
struct Io {
    file: File,
    seg: u64,
    size: u64,
    durable_seq: u64,
    /// Sequence ranges `(after, upto]` whose write failed: their appenders get the error even
    /// when a later flush succeeds.
    lost: Vec<(u64, u64)>,
    failed: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    segment_size: u64,
    pending: Mutex<Pending>,
    io: Mutex<Io>,
}

/// Frames a record onto `out`.
pub(crate) fn frame(rec: &Record, out: &mut Vec<u8>) {
    frame_with(out, |out| rec.encode(out));
}

/// Frames the record `encode` writes onto `out`.
pub(crate) fn frame_with(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend([0u8; FRAME_HEADER]);
    encode(out);
    let len = (out.len() - start - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the valid records of one segment; returns them and the length of the valid prefix.
pub(crate) fn read_segment(data: &[u8]) -> (Vec<Record>, usize) {
    let mut recs = Vec::new();
    let mut off = 0;
    while data.len() - off >= FRAME_HEADER {
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        let body = off + FRAME_HEADER;
        if len > MAX_RECORD || data.len() - body < len {
            break;
        }
        let payload = &data[body..body + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match Record::decode(payload) {
            Some(r) => recs.push(r),
            None => break,
        }
        off = body + len;
    }
    (recs, off)
}

impl Wal {
    /// Opens the log in `dir`: replays the records of segments from `first` on into `apply`
    /// (cutting a torn tail: the valid prefix is kept, later segments are removed), deletes
    /// segments before `first`, and starts a new segment for appends.
    pub(crate) fn open(
        dir: &Path,
        segment_size: u64,
        first: u64,
        mut apply: impl FnMut(Record),
    ) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let segs = segments(dir)?;
        let mut last = first.saturating_sub(1);
        let mut cut = false;
        for n in segs {
            let path = segment_path(dir, n);
            if n < first || cut {
                fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let data = fs::read(&path).map_err(io(&path))?;
            let (recs, valid) = read_segment(&data);
            for r in recs {
                apply(r);
            }
            if valid < data.len() {
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes = valid,
                    dropped_bytes = data.len() - valid,
                    "wal: cutting a torn or corrupt tail"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(valid as u64).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                cut = true;
            }
            last = n;
        }
        let seg = last + 1;
        let path = segment_path(dir, seg);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_size,
            pending: Mutex::new(Pending::default()),
            io: Mutex::new(Io {
                file,
                seg,
                size: 0,
                durable_seq: 0,
                lost: Vec::new(),
                failed: None,
            }),
        })
    }

    /// Queues framed records; returns the sequence number to wait for.
    pub(crate) fn enqueue(&self, framed: &[u8]) -> u64 {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.buf.extend_from_slice(framed);
        p.last_seq += 1;
        p.last_seq
    }

    /// The sequence number of the last queued records (0: none yet).
    pub(crate) fn last_enqueued(&self) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_seq
    }

    /// Returns once the records of `seq` are written and fdatasync'ed (with everything queued
    /// before them).
    pub(crate) fn wait_durable(&self, seq: u64) -> Result<(), WalError> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &io.failed {
            return Err(WalError::Failed(f.clone()));
        }
        let lost = |io: &Io| io.lost.iter().any(|(a, b)| seq > *a && seq <= *b);
        if !lost(&io) && io.durable_seq >= seq {
            return Ok(());
        }
        if !lost(&io) {
            self.flush(&mut io)?;
        }
        if lost(&io) {
            return Err(WalError::Failed(
                "a group commit with these records failed".to_owned(),
            ));
        }
        Ok(())
    }

    /// Writes and syncs every queued record.
    fn flush(&self, io: &mut Io) -> Result<(), WalError> {
        let (buf, last_seq) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut p.buf), p.last_seq)
        };
        if buf.is_empty() {
            io.durable_seq = last_seq;
            return Ok(());
        }
        if io.size > 0
            && io.size + buf.len() as u64 > self.segment_size
            && let Err(e) = self.rotate(io)
        {
            io.lost.push((io.durable_seq, last_seq));
            crate::metrics::WAL_FAILURES.inc();
            return Err(e);
        }
        let path = segment_path(&self.dir, io.seg);
        let res = io.file.write_all(&buf).and_then(|()| io.file.sync_data());
        if let Err(e) = res {
            // Drop the partial write so later records are not stranded behind it; if that
            // fails too, refuse further writes rather than acknowledge unreadable ones.
            let undo = io.file.set_len(io.size).and_then(|()| io.file.sync_data());
            if undo.is_err() {
                io.failed = Some(e.to_string());
            }
            io.lost.push((io.durable_seq, last_seq));
            crate::metrics::WAL_FAILURES.inc();
            return Err(WalError::Io { path, source: e });
        }
        io.size += buf.len() as u64;
        io.durable_seq = last_seq;
        crate::metrics::WAL_FSYNCS.inc();
        crate::metrics::WAL_BYTES.inc_by(buf.len() as u64);
        Ok(())
    }

    fn rotate(&self, io: &mut Io) -> Result<(), WalError> {
        let next = io.seg + 1;
        let path = segment_path(&self.dir, next);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        io.file = file;
        io.seg = next;
        io.size = 0;
        Ok(())
    }

    /// Makes everything queued durable and starts a new segment; returns its number. Records
    /// queued afterwards land in it or later ones. The caller holds off appenders.
    pub(crate) fn cut(&self) -> Result<u64, WalError> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &io.failed {
            return Err(WalError::Failed(f.clone()));
        }
        self.flush(&mut io)?;
        self.rotate(&mut io)?;
        Ok(io.seg)
    }

    /// Deletes the segments before `first` (their records are in a checkpoint).
    pub(crate) fn remove_before(&self, first: u64) -> Result<(), WalError> {
        for n in segments(&self.dir)? {
            if n < first {
                let path = segment_path(&self.dir, n);
                fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        sync_dir(&self.dir)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    io(path)
}

#[cfg(test)]
mod tests;

//! One tenant's exemplars made durable: the [`ExemplarBuffer`] behind an append-only file,
//! `<tenant>/exemplars.log`.
//!
//! Frame: `len u32 LE, crc32 u32 LE (of the payload), payload`; a payload is a list of items:
//! `1 id labels` defines a series id for the rest of the file, `2 id t value has_ts labels` is
//! an exemplar (ids, counts and lengths are varints, `t` zigzag, `value` f64 LE). Appenders
//! store into the buffer and queue their frame under one lock (so the file's order is the
//! buffer's), then wait for a group commit: the first to take the I/O lock writes every queued
//! frame and fdatasyncs once. At open the file is replayed into an empty buffer (a torn or
//! corrupt tail is cut) and replaced by a snapshot of the buffer; the snapshot is rewritten
//! whenever the file grows past twice its size, so the file stays within a few times the
//! buffer's live exemplars.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use super::{Exemplar, ExemplarBuffer, ExemplarReject, ExemplarReport, SeriesExemplars};
use crate::labels::Labels;
use crate::metrics;
use crate::storage::Matcher;

/// The file's name in the tenant directory.
pub(crate) const FILE: &str = "exemplars.log";
const FRAME_HEADER: usize = 8;
/// A frame longer than this is corruption.
const MAX_FRAME: usize = 256 << 20;
/// Exemplars per snapshot frame.
const SNAPSHOT_FRAME_ITEMS: usize = 10_000;
/// The file is not rewritten below this size.
const MIN_COMPACT_BYTES: u64 = 4 << 20;

const ITEM_SERIES: u8 = 1;
const ITEM_EXEMPLAR: u8 = 2;

/// Errors of the exemplar log.
#[derive(Debug, thiserror::Error)]
pub enum ExemplarLogError {
    #[error("exemplar log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("exemplar log is unusable after a failed write; restart to recover: {0}")]
    Failed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExemplarLogError + '_ {
    move |source| ExemplarLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct State {
    buffer: ExemplarBuffer,
    /// Series ids defined in the current file.
    ids: HashMap<Labels, u64>,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    last_seq: u64,
}

#[derive(Debug)]
struct Io {
    file: File,
    size: u64,
    durable_seq: u64,
    /// Past this size the file is rewritten as a snapshot.
    compact_at: u64,
    failed: Option<String>,
}

/// A tenant's durable exemplars.
#[derive(Debug)]
pub(crate) struct DurableExemplars {
    dir: PathBuf,
    min_compact: u64,
    state: RwLock<State>,
    pending: Mutex<Pending>,
    io: Mutex<Io>,
}

impl DurableExemplars {
    /// Opens `dir/exemplars.log` (creating it), replays it into a buffer of `capacity`
    /// exemplars and replaces it by a snapshot of that buffer.
    pub(crate) fn open(
        dir: &Path,
        capacity: usize,
        ooo_window_ms: i64,
    ) -> Result<DurableExemplars, ExemplarLogError> {
        DurableExemplars::open_with(dir, capacity, ooo_window_ms, MIN_COMPACT_BYTES)
    }

    /// [`DurableExemplars::open`] with the size below which the file is never rewritten.
    pub(crate) fn open_with(
        dir: &Path,
        capacity: usize,
        ooo_window_ms: i64,
        min_compact: u64,
    ) -> Result<DurableExemplars, ExemplarLogError> {
        let path = dir.join(FILE);
        let mut buffer = ExemplarBuffer::new(capacity, ooo_window_ms);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let valid = replay(&data, &mut buffer);
        if valid < data.len() {
            tracing::warn!(file = %path.display(), valid_bytes = valid,
                dropped_bytes = data.len() - valid, "tsdb: cutting a torn exemplar log tail");
        }
        let mut state = State {
            buffer,
            ids: HashMap::new(),
        };
        let (file, size) = write_snapshot(dir, &mut state)?;
        metrics::EXEMPLARS_IN_STORAGE.add(state.buffer.len() as i64);
        metrics::EXEMPLAR_SERIES.add(state.buffer.num_series() as i64);
        Ok(DurableExemplars {
            dir: dir.to_path_buf(),
            min_compact,
            state: RwLock::new(state),
            pending: Mutex::new(Pending::default()),
            io: Mutex::new(Io {
                file,
                size,
                durable_seq: 0,
                compact_at: (2 * size).max(min_compact),
                failed: None,
            }),
        })
    }

    /// Stores the exemplars (each checked on its own) and returns once those accepted are
    /// durable.
    pub(crate) fn append(
        &self,
        batch: &[SeriesExemplars],
    ) -> Result<ExemplarReport, ExemplarLogError> {
        let mut report = ExemplarReport::default();
        let failed = self
            .io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .is_some();
        if failed {
            self.compact(true)?;
        }
        let seq = {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            let (len, series) = (st.buffer.len(), st.buffer.num_series());
            let mut payload = Vec::new();
            for s in batch {
                for e in &s.exemplars {
                    match st.buffer.add(&s.labels, e.clone()) {
                        Ok(()) => {
                            report.accepted += 1;
                            encode_exemplar(&mut st.ids, &s.labels, e, &mut payload);
                        }
                        Err(why) => report.reject(why, || {
                            format!("out of order exemplar for series {}", s.labels)
                        }),
                    }
                }
            }
            metrics::EXEMPLARS_IN_STORAGE.add(st.buffer.len() as i64 - len as i64);
            metrics::EXEMPLAR_SERIES.add(st.buffer.num_series() as i64 - series as i64);
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !payload.is_empty() {
                frame(&payload, &mut p.buf);
                p.last_seq += 1;
            }
            p.last_seq
        };
        count(&report);
        if report.accepted > 0 {
            self.wait_durable(seq)?;
            self.compact(false)?;
        } else if seq > 0 {
            // Duplicates are acknowledged once their originals are durable.
            self.wait_durable(seq)?;
        }
        Ok(report)
    }

    /// Exemplars in `mint..=maxt` of the series matching at least one matcher set.
    pub(crate) fn select(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Vec<SeriesExemplars> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .buffer
            .select(sets, mint, maxt)
    }

    fn wait_durable(&self, seq: u64) -> Result<(), ExemplarLogError> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &io.failed {
            return Err(ExemplarLogError::Failed(f.clone()));
        }
        if io.durable_seq >= seq {
            return Ok(());
        }
        let (buf, last_seq) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut p.buf), p.last_seq)
        };
        if !buf.is_empty() {
            let res = io.file.write_all(&buf).and_then(|()| io.file.sync_data());
            if let Err(e) = res {
                // The buffer holds what the file lacks (and re-sent exemplars would be taken
                // as duplicates): the next append first rewrites the file from the buffer.
                io.failed = Some(e.to_string());
                return Err(io_err(&self.dir, e));
            }
            io.size += buf.len() as u64;
            metrics::EXEMPLAR_LOG_FSYNCS.inc();
        }
        io.durable_seq = last_seq;
        Ok(())
    }

    /// Rewrites the file as a snapshot of the buffer when it has grown past twice the last one,
    /// or (`recover`) after a failed write, making the buffer durable again.
    fn compact(&self, recover: bool) -> Result<(), ExemplarLogError> {
        let due = |io: &Io| {
            if recover {
                io.failed.is_some()
            } else {
                io.failed.is_none() && io.size > io.compact_at
            }
        };
        if !due(&self.io.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(());
        }
        // Lock order: state, then io (appenders hold at most one of them at a time).
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        if !due(&io) {
            return Ok(());
        }
        let (file, size) = write_snapshot(&self.dir, &mut st)?;
        if let Some(f) = io.failed.take() {
            tracing::info!(dir = %self.dir.display(), after = %f,
                "tsdb: exemplar log rewritten after a failed write");
        }
        // Everything queued was stored in the buffer under the state lock we hold: the
        // snapshot has it.
        let last_seq = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.buf.clear();
            p.last_seq
        };
        io.file = file;
        io.size = size;
        io.durable_seq = last_seq;
        io.compact_at = (2 * size).max(self.min_compact);
        tracing::debug!(dir = %self.dir.display(), bytes = size, "tsdb: exemplar log compacted");
        Ok(())
    }

    /// Exemplars stored and the buffer's capacity.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .buffer
            .len()
    }

    /// The file's size.
    #[cfg(test)]
    pub(crate) fn file_size(&self) -> u64 {
        self.io.lock().unwrap_or_else(|e| e.into_inner()).size
    }
}

fn io_err(dir: &Path, source: std::io::Error) -> ExemplarLogError {
    ExemplarLogError::Io {
        path: dir.join(FILE),
        source,
    }
}

fn count(report: &ExemplarReport) {
    if report.accepted > 0 {
        metrics::EXEMPLARS_APPENDED.inc_by(report.accepted as u64);
    }
    for (why, n) in &report.rejected {
        metrics::EXEMPLARS_REJECTED
            .with_label_values(&[why.as_str()])
            .inc_by(*n as u64);
    }
}

/// Writes the buffer as a new file (fresh series ids), atomically replacing the old one;
/// returns the file opened for appending and its size.
fn write_snapshot(dir: &Path, st: &mut State) -> Result<(File, u64), ExemplarLogError> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut ids = HashMap::new();
    let mut data = Vec::new();
    let mut payload = Vec::new();
    let mut items = 0;
    for (labels, e) in st.buffer.iter_arrival() {
        encode_exemplar(&mut ids, labels, e, &mut payload);
        items += 1;
        if items == SNAPSHOT_FRAME_ITEMS {
            frame(&payload, &mut data);
            payload.clear();
            items = 0;
        }
    }
    if !payload.is_empty() {
        frame(&payload, &mut data);
    }
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&data)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    st.ids = ids;
    Ok((file, data.len() as u64))
}

pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_labels(out: &mut Vec<u8>, labels: &Labels) {
    put_varint(out, labels.len() as u64);
    for l in labels.iter() {
        put_str(out, &l.name);
        put_str(out, &l.value);
    }
}

fn encode_exemplar(
    ids: &mut HashMap<Labels, u64>,
    series: &Labels,
    e: &Exemplar,
    out: &mut Vec<u8>,
) {
    let id = match ids.get(series) {
        Some(id) => *id,
        None => {
            let id = ids.len() as u64;
            ids.insert(series.clone(), id);
            out.push(ITEM_SERIES);
            put_varint(out, id);
            put_labels(out, series);
            id
        }
    };
    out.push(ITEM_EXEMPLAR);
    put_varint(out, id);
    put_varint(out, ((e.t << 1) ^ (e.t >> 63)) as u64);
    out.extend_from_slice(&e.value.to_bits().to_le_bytes());
    out.push(u8::from(e.has_ts));
    put_labels(out, &e.labels);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.varint()?).ok()?;
        std::str::from_utf8(self.bytes(n)?).ok()
    }

    fn labels(&mut self) -> Option<Labels> {
        let n = usize::try_from(self.varint()?).ok()?;
        let mut pairs = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            pairs.push((self.str()?, self.str()?));
        }
        Some(Labels::from_pairs(pairs))
    }
}

/// One decoded payload: series definitions and exemplars, in order.
enum Item {
    Series(u64, Labels),
    Exemplar(u64, Exemplar),
}

fn decode(payload: &[u8]) -> Option<Vec<Item>> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let mut items = Vec::new();
    while r.pos < payload.len() {
        match r.byte()? {
            ITEM_SERIES => {
                let id = r.varint()?;
                items.push(Item::Series(id, r.labels()?));
            }
            ITEM_EXEMPLAR => {
                let id = r.varint()?;
                let z = r.varint()?;
                let t = ((z >> 1) as i64) ^ -((z & 1) as i64);
                let mut v = [0u8; 8];
                v.copy_from_slice(r.bytes(8)?);
                let has_ts = r.byte()? != 0;
                let labels = r.labels()?;
                items.push(Item::Exemplar(
                    id,
                    Exemplar {
                        labels,
                        value: f64::from_bits(u64::from_le_bytes(v)),
                        t,
                        has_ts,
                    },
                ));
            }
            _ => return None,
        }
    }
    Some(items)
}

/// Adds the file's exemplars to `buffer`; returns the length of the valid prefix.
pub(crate) fn replay(data: &[u8], buffer: &mut ExemplarBuffer) -> usize {
    let mut series: HashMap<u64, Labels> = HashMap::new();
    let mut off = 0;
    while data.len() - off >= FRAME_HEADER {
        let word = |i: usize| {
            u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize
        };
        let (len, crc) = (word(off), word(off + 4) as u32);
        let body = off + FRAME_HEADER;
        if len > MAX_FRAME || data.len() - body < len {
            break;
        }
        let payload = &data[body..body + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(items) = decode(payload) else {
            break;
        };
        for item in items {
            match item {
                Item::Series(id, labels) => {
                    series.insert(id, labels);
                }
                Item::Exemplar(id, e) => {
                    if let Some(labels) = series.get(&id) {
                        // A smaller capacity than when written evicts the oldest, as it should.
                        let _: Result<(), ExemplarReject> = buffer.add(labels, e);
                    }
                }
            }
        }
        off = body + len;
    }
    off
}

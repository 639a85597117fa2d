//! Checkpoints: the whole head (series with their ids and compressed chunks) in one CRC-checked
//! file `checkpoint.<segment>`, meaning "the head as of the start of WAL segment <segment>".
//! Restart loads it (closed chunks are copied, not re-encoded) and replays only the segments
//! from <segment> on.
//!
//! Layout (integers are varints): `SXTSCP02`, next series id, head bounds, a symbol table
//! (the head's own, by symbol id: every distinct label name and value once, a freed id as an
//! empty string), series count, per series its id, its labels as
//! (name, value) symbol numbers, closed chunks (bounds as distances from the previous chunk's
//! end, then the bytes or a chunk-file reference), last sample, the open chunk sealed ([`Chunk::sealed`]) and out-of-order
//! samples; then the CRC-32 of everything before it. Label strings repeat across series (job,
//! namespace, pod, metric names): written once they cost a few bytes per series, not hundreds.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chunk::{Chunk, ChunkRef};
use crate::head::{ChunkData, ClosedChunk, DiskRef, Head, MemSeries, SeriesId};
use crate::labels::Labels;
use crate::storage::Sample;
use crate::wal::record::{Reader, put_bytes, put_uvarint, put_varint};
use crate::wal::sync_dir;

use super::TsdbError;

const MAGIC: &[u8; 8] = b"SXTSCP02";
const PREFIX: &str = "checkpoint.";

pub(crate) fn path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{segment:08}"))
}

/// Checkpoints in `dir` by segment, ascending; removes temporary files of interrupted ones.
pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, TsdbError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(TsdbError::io(dir))? {
        let e = e.map_err(TsdbError::io(dir))?;
        let name = e.file_name();
        if let Some(n) = name.to_str()
            && n.starts_with(PREFIX)
            && n.ends_with(".tmp")
        {
            fs::remove_file(e.path()).map_err(TsdbError::io(&e.path()))?;
            continue;
        }
        if let Some(n) = e
            .file_name()
            .to_str()
            .and_then(|s| s.strip_prefix(PREFIX))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

const IN_MEMORY: u8 = 0;
const ON_DISK: u8 = 1;

/// Flushes an encoder's buffer to the file past this size: a checkpoint of a large head is
/// streamed, never held whole in memory (a growing buffer is also copied, so held twice,
/// while it doubles).
const FLUSH_AT: usize = 1 << 16;

/// The checkpoint being written: CRC and size of what went to the file so far.
struct Sink<W> {
    w: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Sink<W> {
    fn flush(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        self.crc.update(buf);
        self.len += buf.len() as u64;
        self.w.write_all(buf)?;
        buf.clear();
        Ok(())
    }
}

/// Serializes the head into `w` (magic, body, CRC of both); returns the bytes written and the
/// chunk files the checkpoint references.
pub(crate) fn encode<W: Write>(head: &Head, w: W) -> std::io::Result<(u64, HashSet<u32>)> {
    let mut sink = Sink {
        w,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    let mut files = HashSet::new();
    let mut out = Vec::with_capacity(FLUSH_AT * 2);
    out.extend_from_slice(MAGIC);
    put_uvarint(&mut out, u64::from(head.next_id()));
    let (min_t, max_t) = head.bounds();
    put_varint(&mut out, min_t);
    put_varint(&mut out, max_t);
    let table = head.symbols().table();
    put_uvarint(&mut out, table.len() as u64);
    for sym in table {
        put_bytes(&mut out, sym.as_bytes());
        if out.len() >= FLUSH_AT {
            sink.flush(&mut out)?;
        }
    }
    put_uvarint(&mut out, head.num_series() as u64);
    for (id, s) in head.iter_series() {
        encode_series(&mut out, id, s, &mut files);
        if out.len() >= FLUSH_AT {
            sink.flush(&mut out)?;
        }
    }
    sink.flush(&mut out)?;
    let crc = sink.crc.clone().finalize();
    out.extend(crc.to_le_bytes());
    sink.w.write_all(&out)?;
    sink.w.flush()?;
    Ok((sink.len + out.len() as u64, files))
}

fn encode_series(out: &mut Vec<u8>, id: SeriesId, s: &MemSeries, files: &mut HashSet<u32>) {
    put_uvarint(out, u64::from(id));
    put_uvarint(out, s.labels.len() as u64);
    for (n, v) in s.labels.pairs() {
        put_uvarint(out, u64::from(n));
        put_uvarint(out, u64::from(v));
    }
    put_uvarint(out, s.closed.len() as u64);
    let mut prev_max = 0i64;
    for c in &s.closed {
        // Times relative to the previous chunk's end: a few bytes instead of eight.
        put_varint(out, c.min_t.wrapping_sub(prev_max));
        put_varint(out, c.max_t.wrapping_sub(c.min_t));
        prev_max = c.max_t;
        match &c.data {
            ChunkData::Mem(b) => {
                out.push(IN_MEMORY);
                put_bytes(out, b);
            }
            ChunkData::Disk(r) => {
                out.push(ON_DISK);
                put_uvarint(out, u64::from(r.file));
                put_uvarint(out, u64::from(r.off));
                put_uvarint(out, u64::from(r.len));
                files.insert(r.file);
            }
        }
    }
    match s.last {
        Some(p) => {
            out.push(1);
            put_varint(out, p.t);
            out.extend(p.v.to_bits().to_le_bytes());
        }
        None => out.push(0),
    }
    put_bytes(out, &s.open.sealed());
    put_uvarint(out, s.ooo.len() as u64);
    for p in &s.ooo {
        put_varint(out, p.t);
        out.extend(p.v.to_bits().to_le_bytes());
    }
}

/// A checkpoint's temporary file, written by [`encode`] and made durable by [`commit`].
pub(crate) fn create(dir: &Path, segment: u64) -> Result<(PathBuf, File), TsdbError> {
    let tmp = path(dir, segment).with_extension("tmp");
    let f = File::create(&tmp).map_err(TsdbError::io(&tmp))?;
    Ok((tmp, f))
}

/// Makes a written checkpoint durable (fsync, rename, directory fsync).
pub(crate) fn commit(dir: &Path, segment: u64, tmp: &Path, f: File) -> Result<(), TsdbError> {
    f.sync_all().map_err(TsdbError::io(tmp))?;
    drop(f);
    let final_path = path(dir, segment);
    fs::rename(tmp, &final_path).map_err(TsdbError::io(&final_path))?;
    sync_dir(dir)?;
    Ok(())
}

fn corrupt(path: &Path) -> TsdbError {
    TsdbError::Corrupt(path.to_path_buf())
}

/// Loads a checkpoint into an empty head.
pub(crate) fn load(path: &Path, head: &mut Head) -> Result<(), TsdbError> {
    let data = fs::read(path).map_err(TsdbError::io(path))?;
    if data.len() < MAGIC.len() + 4 || !data.starts_with(MAGIC) {
        return Err(corrupt(path));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc {
        return Err(corrupt(path));
    }
    decode(&body[MAGIC.len()..], head).ok_or_else(|| corrupt(path))
}

pub(crate) fn decode(body: &[u8], head: &mut Head) -> Option<()> {
    let mut r = Reader::new(body);
    let next_id = r.id()?;
    let min_t = r.varint()?;
    let max_t = r.varint()?;
    let n = r.count()?;
    let mut symbols: Vec<Arc<str>> = Vec::with_capacity(n);
    for _ in 0..n {
        symbols.push(Arc::from(std::str::from_utf8(r.bytes()?).ok()?));
    }
    let sym = |r: &mut Reader<'_>| -> Option<Arc<str>> {
        symbols.get(usize::try_from(r.uvarint()?).ok()?).cloned()
    };
    let n = r.count()?;
    for _ in 0..n {
        let id: SeriesId = r.id()?;
        // Every id was handed out before `next_id` (the head is a vector indexed by id).
        if id >= next_id {
            return None;
        }
        let nl = r.count()?;
        let mut pairs = Vec::with_capacity(nl);
        for _ in 0..nl {
            pairs.push((sym(&mut r)?, sym(&mut r)?));
        }
        let labels = Labels::from_pairs(pairs);
        let mut s = MemSeries::default();
        let nc = r.count()?;
        let mut prev_max = 0i64;
        for _ in 0..nc {
            let min_t = prev_max.wrapping_add(r.varint()?);
            let max_t = min_t.wrapping_add(r.varint()?);
            prev_max = max_t;
            let data = match r.u8()? {
                IN_MEMORY => {
                    let b = r.bytes()?;
                    ChunkRef::new(b).ok()?;
                    ChunkData::Mem(b.into())
                }
                ON_DISK => ChunkData::Disk(DiskRef {
                    file: u32::try_from(r.uvarint()?).ok()?,
                    off: u32::try_from(r.uvarint()?).ok()?,
                    len: u32::try_from(r.uvarint()?).ok()?,
                }),
                _ => return None,
            };
            s.closed.push(ClosedChunk { min_t, max_t, data });
        }
        if r.u8()? == 1 {
            let t = r.varint()?;
            s.last = Some(Sample {
                t,
                v: f64::from_bits(r.u64_le()?),
            });
        }
        s.open = Chunk::from_bytes(r.bytes()?).ok()?;
        let no = r.count()?;
        for _ in 0..no {
            let t = r.varint()?;
            let v = f64::from_bits(r.u64_le()?);
            s.ooo.push(Sample { t, v });
        }
        if s.is_empty() {
            continue;
        }
        head.insert_series(id, &labels, s);
    }
    if !r.is_empty() {
        return None;
    }
    head.reserve_ids(next_id);
    head.set_bounds(min_t, max_t);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::ChunkStore;

    /// Fuzzing the decoder showed that it took any series id; one at or past the checkpoint's
    /// next id cannot have been written, so the checkpoint is corrupt.
    #[test]
    fn a_series_id_past_next_id_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
        let new_head = || Head::new(&crate::TsdbConfig::default(), store.clone());
        let mut head = new_head();
        head.reserve_ids(6);
        let labels = Labels::from_pairs([("__name__", "up")]);
        head.insert_series(5, &labels, MemSeries::default());
        head.apply_sample(5, Sample { t: 1000, v: 1.0 });
        let mut file = Vec::new();
        encode(&head, &mut file).unwrap();
        let body = &file[MAGIC.len()..file.len() - 4];
        assert_eq!(body[0], 6, "next id");
        assert!(decode(body, &mut new_head()).is_some());
        let mut bad = body.to_vec();
        bad[0] = 5;
        assert!(decode(&bad, &mut new_head()).is_none());
    }
}

//! Checkpoints: the whole head (series with their ids and compressed chunks) in one CRC-checked
//! file `checkpoint.<segment>`, meaning "the head as of the start of WAL segment <segment>".
//! Restart loads it (closed chunks are copied, not re-encoded) and replays only the segments
//! from <segment> on.
//!
//! Layout (integers are varints): `SXTSCP02`, next series id, head bounds, a symbol table
//! (every distinct label name and value once), series count, per series its id, its labels as
//! (name, value) symbol numbers, closed chunks (bounds as distances from the previous chunk's
//! end, then the bytes or a chunk-file reference), last sample, the open chunk sealed ([`Chunk::sealed`]) and out-of-order
//! samples; then the CRC-32 of everything before it. Label strings repeat across series (job,
//! namespace, pod, metric names): written once they cost a few bytes per series, not hundreds.

use std::collections::{HashMap, HashSet};
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

/// Serializes the head; returns the bytes and the chunk files they reference.
pub(crate) fn encode(head: &Head) -> (Vec<u8>, HashSet<u32>) {
    let mut files = HashSet::new();
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(MAGIC);
    put_uvarint(&mut out, u64::from(head.next_id()));
    let (min_t, max_t) = head.bounds();
    put_varint(&mut out, min_t);
    put_varint(&mut out, max_t);
    let mut symbols: HashMap<&str, u64> = HashMap::new();
    let mut table: Vec<&str> = Vec::new();
    for (_, s) in head.iter_series() {
        for l in s.labels.iter() {
            for v in [&*l.name, &*l.value] {
                symbols.entry(v).or_insert_with(|| {
                    table.push(v);
                    table.len() as u64 - 1
                });
            }
        }
    }
    put_uvarint(&mut out, table.len() as u64);
    for sym in &table {
        put_bytes(&mut out, sym.as_bytes());
    }
    let num = |s: &str| symbols.get(s).copied().unwrap_or(0);
    put_uvarint(&mut out, head.num_series() as u64);
    for (id, s) in head.iter_series() {
        put_uvarint(&mut out, u64::from(id));
        put_uvarint(&mut out, s.labels.len() as u64);
        for l in s.labels.iter() {
            put_uvarint(&mut out, num(&l.name));
            put_uvarint(&mut out, num(&l.value));
        }
        put_uvarint(&mut out, s.closed.len() as u64);
        let mut prev_max = 0i64;
        for c in &s.closed {
            // Times relative to the previous chunk's end: a few bytes instead of eight.
            put_varint(&mut out, c.min_t.wrapping_sub(prev_max));
            put_varint(&mut out, c.max_t.wrapping_sub(c.min_t));
            prev_max = c.max_t;
            match &c.data {
                ChunkData::Mem(b) => {
                    out.push(IN_MEMORY);
                    put_bytes(&mut out, b);
                }
                ChunkData::Disk(r) => {
                    out.push(ON_DISK);
                    put_uvarint(&mut out, u64::from(r.file));
                    put_uvarint(&mut out, u64::from(r.off));
                    put_uvarint(&mut out, u64::from(r.len));
                    files.insert(r.file);
                }
            }
        }
        match s.last {
            Some(p) => {
                out.push(1);
                put_varint(&mut out, p.t);
                out.extend(p.v.to_bits().to_le_bytes());
            }
            None => out.push(0),
        }
        put_bytes(&mut out, &s.open.sealed());
        put_uvarint(&mut out, s.ooo.len() as u64);
        for p in &s.ooo {
            put_varint(&mut out, p.t);
            out.extend(p.v.to_bits().to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend(crc.to_le_bytes());
    (out, files)
}

/// Writes a checkpoint durably (temporary file, fsync, rename, directory fsync).
pub(crate) fn write(dir: &Path, segment: u64, data: &[u8]) -> Result<(), TsdbError> {
    let final_path = path(dir, segment);
    let tmp = final_path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(TsdbError::io(&tmp))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(TsdbError::io(&tmp))?;
    fs::rename(&tmp, &final_path).map_err(TsdbError::io(&final_path))?;
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

fn decode(body: &[u8], head: &mut Head) -> Option<()> {
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
        let nl = r.count()?;
        let mut pairs = Vec::with_capacity(nl);
        for _ in 0..nl {
            pairs.push((sym(&mut r)?, sym(&mut r)?));
        }
        let labels = Labels::from_pairs(pairs);
        let mut s = MemSeries::new(labels);
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
        head.insert_series(id, s);
    }
    if !r.is_empty() {
        return None;
    }
    head.reserve_ids(next_id);
    head.set_bounds(min_t, max_t);
    Some(())
}

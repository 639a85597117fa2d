//! The index file of a block: symbols, series (labels as symbol numbers, chunk references with
//! their time bounds) and postings per label pair, CRC-checked.
//!
//! Layout: `SXTIDX02`, then a deflate stream of the body, then the CRC-32 of everything before
//! it. The body (integers are varints): symbol count, symbols (sorted, length-prefixed),
//! series count, per series its label pairs as (name, value) symbol numbers and its chunks;
//! posting-list count, per list (name, value, count, series numbers as deltas). A series'
//! chunks are its count, then per chunk: its min time (the first chunk's as is, later ones
//! as the distance from the previous chunk's max time), max time − min time, the offset's
//! distance from the end of the previous chunk and its CRC (the first chunk's offset as is),
//! and the length; chunks of a series are written back to back, so most of these are small.
//! Prometheus's index (docs/format/index.md) has the same parts with fixed-width tables for
//! memory-mapping; this one is read once at open, so varints and deflate keep it small
//! (container ids and pod names dominate the symbols and compress well).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

use crate::head::{Index, SeriesId};
use crate::labels::Labels;
use crate::wal::record::{Reader, put_bytes, put_uvarint, put_varint};

pub(crate) const MAGIC: &[u8; 8] = b"SXTIDX02";
/// Bytes of a chunk's CRC-32, which follows it in the chunks file.
const CRC_LEN: u64 = 4;

/// Where a chunk of a block is and what time it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkMeta {
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    /// Offset of the chunk's bytes in the chunks file.
    pub(crate) off: u64,
    /// Length of the chunk's bytes (its CRC-32 follows them).
    pub(crate) len: u32,
}

/// One series of a block being written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BlockSeries {
    pub(crate) labels: Labels,
    pub(crate) chunks: Vec<ChunkMeta>,
}

/// One series of an open block: its labels as (name, value) symbol numbers (8 bytes per label
/// instead of two string pointers) and its chunk references.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StoredSeries {
    pub(crate) labels: Box<[(u32, u32)]>,
    pub(crate) chunks: Box<[ChunkMeta]>,
}

/// An index as read: symbols, series (by number) and postings.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) symbols: Vec<Arc<str>>,
    pub(crate) series: Vec<StoredSeries>,
    pub(crate) postings: Index,
}

/// Serializes series sorted by labels (their position is their number in the postings).
pub(crate) fn encode(series: &[BlockSeries]) -> std::io::Result<Vec<u8>> {
    let mut symbols: BTreeSet<&str> = BTreeSet::new();
    for s in series {
        for l in s.labels.iter() {
            symbols.insert(&l.name);
            symbols.insert(&l.value);
        }
    }
    let number: HashMap<&str, u64> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i as u64))
        .collect();
    let num = |s: &str| number.get(s).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(1 << 16);
    put_uvarint(&mut out, symbols.len() as u64);
    for s in &symbols {
        put_bytes(&mut out, s.as_bytes());
    }
    let mut postings: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    put_uvarint(&mut out, series.len() as u64);
    for (i, s) in series.iter().enumerate() {
        put_uvarint(&mut out, s.labels.len() as u64);
        for l in s.labels.iter() {
            let (n, v) = (num(&l.name), num(&l.value));
            put_uvarint(&mut out, n);
            put_uvarint(&mut out, v);
            postings.entry((n, v)).or_default().push(i as u64);
        }
        put_uvarint(&mut out, s.chunks.len() as u64);
        let mut prev: Option<&ChunkMeta> = None;
        for c in &s.chunks {
            match prev {
                None => {
                    put_varint(&mut out, c.min_t);
                    put_uvarint(&mut out, c.off);
                }
                Some(p) => {
                    put_varint(&mut out, c.min_t.wrapping_sub(p.max_t));
                    put_varint(&mut out, c.off.wrapping_sub(end_of(p)) as i64);
                }
            }
            put_uvarint(&mut out, c.max_t.wrapping_sub(c.min_t) as u64);
            put_uvarint(&mut out, u64::from(c.len));
            prev = Some(c);
        }
    }
    put_uvarint(&mut out, postings.len() as u64);
    for ((n, v), ids) in &postings {
        put_uvarint(&mut out, *n);
        put_uvarint(&mut out, *v);
        put_uvarint(&mut out, ids.len() as u64);
        let mut prev = 0;
        for id in ids {
            put_uvarint(&mut out, id - prev);
            prev = *id;
        }
    }
    let mut file = Vec::with_capacity(out.len() / 2 + 64);
    file.extend_from_slice(MAGIC);
    let mut z = DeflateEncoder::new(file, Compression::default());
    z.write_all(&out)?;
    let mut file = z.finish()?;
    let crc = crc32fast::hash(&file);
    file.extend(crc.to_le_bytes());
    Ok(file)
}

/// Where the bytes after chunk `c` (and its CRC) start.
fn end_of(c: &ChunkMeta) -> u64 {
    c.off.wrapping_add(u64::from(c.len)).wrapping_add(CRC_LEN)
}

/// Reads an index file's bytes. `None` when the bytes are corrupt.
pub(crate) fn decode(data: &[u8]) -> Option<Decoded> {
    if data.len() < MAGIC.len() + 4 || !data.starts_with(MAGIC) {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let mut inflated = Vec::with_capacity(body.len() * 3);
    DeflateDecoder::new(&body[MAGIC.len()..])
        .read_to_end(&mut inflated)
        .ok()?;
    let mut r = Reader::new(&inflated);
    let n = r.count()?;
    let mut symbols: Vec<Arc<str>> = Vec::with_capacity(n);
    for _ in 0..n {
        symbols.push(Arc::from(std::str::from_utf8(r.bytes()?).ok()?));
    }
    let sym = |r: &mut Reader<'_>| -> Option<Arc<str>> {
        symbols.get(usize::try_from(r.uvarint()?).ok()?).cloned()
    };
    let num = |r: &mut Reader<'_>| -> Option<u32> {
        let n = u32::try_from(r.uvarint()?).ok()?;
        ((n as usize) < symbols.len()).then_some(n)
    };
    let n = r.count()?;
    let mut series = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = r.count()?;
        let mut pairs = Vec::with_capacity(nl);
        for _ in 0..nl {
            pairs.push((num(&mut r)?, num(&mut r)?));
        }
        let nc = r.count()?;
        let mut chunks: Vec<ChunkMeta> = Vec::with_capacity(nc);
        for _ in 0..nc {
            let (min_t, off) = match chunks.last() {
                None => (r.varint()?, r.uvarint()?),
                Some(p) => (
                    p.max_t.wrapping_add(r.varint()?),
                    end_of(p).wrapping_add(r.varint()? as u64),
                ),
            };
            let max_t = min_t.wrapping_add(r.uvarint()? as i64);
            let len = u32::try_from(r.uvarint()?).ok()?;
            chunks.push(ChunkMeta {
                min_t,
                max_t,
                off,
                len,
            });
        }
        series.push(StoredSeries {
            labels: pairs.into_boxed_slice(),
            chunks: chunks.into_boxed_slice(),
        });
    }
    let n = r.count()?;
    let mut postings: HashMap<Arc<str>, BTreeMap<Arc<str>, Vec<SeriesId>>> = HashMap::new();
    for _ in 0..n {
        let name = sym(&mut r)?;
        let value = sym(&mut r)?;
        let k = r.count()?;
        let mut ids = Vec::with_capacity(k);
        let mut prev = 0u64;
        for i in 0..k {
            let d = r.uvarint()?;
            if i > 0 && d == 0 {
                return None;
            }
            prev = prev.checked_add(d)?;
            if prev >= series.len() as u64 {
                return None;
            }
            ids.push(SeriesId::try_from(prev).ok()?);
        }
        postings.entry(name).or_default().insert(value, ids);
    }
    if !r.is_empty() {
        return None;
    }
    let all = (0..SeriesId::try_from(series.len()).ok()?).collect();
    Some(Decoded {
        symbols,
        series,
        postings: Index::from_parts(postings, all),
    })
}

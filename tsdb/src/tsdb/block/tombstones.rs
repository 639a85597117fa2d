//! The `tombstones` file of a block: deleted time ranges per series, applied at read and
//! materialised when compaction rewrites the block.
//!
//! Layout: `SXTTMB01`, count, then (series number, min time, max time) as varints, then the
//! CRC-32 of everything before it. Replaced atomically (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::head::SeriesId;
use crate::wal::record::{Reader, put_uvarint, put_varint};

pub(crate) const MAGIC: &[u8; 8] = b"SXTTMB01";
pub(crate) const FILE: &str = "tombstones";

/// Deleted closed ranges `(mint, maxt)` per series number.
pub(crate) type Tombstones = BTreeMap<SeriesId, Vec<(i64, i64)>>;

/// Whether `t` is deleted by one of `ranges`.
pub(crate) fn deleted(ranges: &[(i64, i64)], t: i64) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= t && t <= hi)
}

/// Whether `ranges` delete all of `lo..=hi`.
pub(crate) fn covers(ranges: &[(i64, i64)], lo: i64, hi: i64) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut next = lo;
    for (a, b) in sorted {
        if a > next {
            return false;
        }
        if b >= hi {
            return true;
        }
        next = next.max(b.saturating_add(1));
    }
    false
}

pub(crate) fn encode(t: &Tombstones) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    put_uvarint(&mut out, t.values().map(|v| v.len() as u64).sum());
    for (id, ranges) in t {
        for (lo, hi) in ranges {
            put_uvarint(&mut out, u64::from(*id));
            put_varint(&mut out, *lo);
            put_varint(&mut out, *hi);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend(crc.to_le_bytes());
    out
}

pub(crate) fn decode(data: &[u8]) -> Option<Tombstones> {
    if data.len() < MAGIC.len() + 4 || !data.starts_with(MAGIC) {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let mut r = Reader::new(&body[MAGIC.len()..]);
    let n = r.count()?;
    let mut out = Tombstones::new();
    for _ in 0..n {
        let id = r.id()?;
        let lo = r.varint()?;
        let hi = r.varint()?;
        out.entry(id).or_default().push((lo, hi));
    }
    r.is_empty().then_some(out)
}

/// Reads a block's tombstones (none when the file does not exist).
pub(crate) fn read(dir: &Path) -> io::Result<Option<Tombstones>> {
    match fs::read(dir.join(FILE)) {
        Ok(b) => Ok(decode(&b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(Tombstones::new())),
        Err(e) => Err(e),
    }
}

/// Replaces a block's tombstones durably.
pub(crate) fn write(dir: &Path, t: &Tombstones) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&encode(t))?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_joins_adjacent_ranges() {
        assert!(covers(&[(0, 5), (6, 10)], 0, 10));
        assert!(covers(&[(6, 10), (-5, 5)], 0, 10));
        assert!(!covers(&[(0, 5), (7, 10)], 0, 10));
        assert!(!covers(&[], 0, 0));
        assert!(covers(&[(i64::MIN, i64::MAX)], 3, 4));
        let mut t = Tombstones::new();
        t.entry(3).or_default().push((i64::MIN, 7));
        t.entry(9).or_default().push((-1, 1));
        assert_eq!(decode(&encode(&t)), Some(t));
    }
}

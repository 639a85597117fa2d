//! Immutable on-disk blocks: `<tenant>/blocks/<id>/` with `meta.json`, `chunks` (the chunks
//! of every series, each followed by its CRC-32), `index` ([`index`]) and, after deletes,
//! `tombstones`.
//!
//! Opening a block reads its index (labels, chunk references, postings) into memory: RAM per
//! block is its index, never its samples. Chunks are read with positioned reads (the page
//! cache keeps hot ones in memory); Prometheus memory-maps them, which needs `unsafe`.

pub(crate) mod index;
pub(crate) mod meta;
pub(crate) mod tombstones;
mod writer;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::chunk::ChunkRef;
use crate::head::{Index, SeriesId};
use crate::labels::Labels;
use crate::storage::{Matcher, Sample};
use crate::tsdb::TsdbError;
pub(crate) use index::ChunkMeta;
use index::StoredSeries;
pub(crate) use meta::{BlockMeta, Compaction};
use tombstones::Tombstones;
pub(crate) use writer::BlockWriter;

pub(crate) const CHUNKS_FILE: &str = "chunks";
pub(crate) const INDEX_FILE: &str = "index";
pub(crate) const META_FILE: &str = "meta.json";
pub(crate) const CHUNKS_MAGIC: &[u8; 8] = b"SXTCHK01";
/// Directories of blocks being written (removed at open).
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// An open block.
#[derive(Debug)]
pub(crate) struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    symbols: Vec<Arc<str>>,
    series: Vec<StoredSeries>,
    index: Index,
    chunks: File,
    tombstones: RwLock<Tombstones>,
    /// Bytes of the block's files.
    size: u64,
}

fn corrupt(dir: &Path, what: &str) -> TsdbError {
    TsdbError::CorruptBlock {
        path: dir.to_path_buf(),
        reason: what.to_owned(),
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Block {
    /// Opens a block directory (reads its meta, index and tombstones).
    pub(crate) fn open(dir: &Path) -> Result<Block, TsdbError> {
        let meta_path = dir.join(META_FILE);
        let meta: BlockMeta =
            serde_json::from_slice(&fs::read(&meta_path).map_err(TsdbError::io(&meta_path))?)
                .map_err(|e| corrupt(dir, &format!("meta.json: {e}")))?;
        let index_path = dir.join(INDEX_FILE);
        let decoded = index::decode(&fs::read(&index_path).map_err(TsdbError::io(&index_path))?)
            .ok_or_else(|| corrupt(dir, "index"))?;
        let chunks_path = dir.join(CHUNKS_FILE);
        let chunks = File::open(&chunks_path).map_err(TsdbError::io(&chunks_path))?;
        let tombstones = tombstones::read(dir)
            .map_err(TsdbError::io(dir))?
            .ok_or_else(|| corrupt(dir, "tombstones"))?;
        let mut size = 0;
        for e in fs::read_dir(dir).map_err(TsdbError::io(dir))? {
            let e = e.map_err(TsdbError::io(dir))?;
            size += e.metadata().map_err(TsdbError::io(dir))?.len();
        }
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            symbols: decoded.symbols,
            series: decoded.series,
            index: decoded.postings,
            chunks,
            tombstones: RwLock::new(tombstones),
            size,
        })
    }

    pub(crate) fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn id(&self) -> &str {
        &self.meta.ulid
    }

    /// Start of the block's range.
    pub(crate) fn min_t(&self) -> i64 {
        self.meta.min_time
    }

    /// End of the block's range (exclusive).
    pub(crate) fn max_t(&self) -> i64 {
        self.meta.max_time
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Whether the block's range meets `mint..=maxt`.
    pub(crate) fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_t() <= maxt && self.max_t() > mint
    }

    pub(crate) fn num_series(&self) -> usize {
        self.series.len()
    }

    /// The labels of series `id`.
    pub(crate) fn labels(&self, id: SeriesId) -> Labels {
        let sym = |n: u32| {
            self.symbols
                .get(n as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from(""))
        };
        self.series
            .get(id as usize)
            .map_or_else(Labels::empty, |s| {
                Labels::from_pairs(s.labels.iter().map(|(n, v)| (sym(*n), sym(*v))))
            })
    }

    /// The chunk references of series `id`.
    pub(crate) fn chunks(&self, id: SeriesId) -> &[ChunkMeta] {
        self.series.get(id as usize).map_or(&[], |s| &s.chunks)
    }

    pub(crate) fn has_tombstones(&self) -> bool {
        !self.read_tombstones().is_empty()
    }

    fn read_tombstones(&self) -> std::sync::RwLockReadGuard<'_, Tombstones> {
        self.tombstones.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The numbers of the series matching every matcher.
    pub(crate) fn matching(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        self.index.select(matchers)
    }

    /// The samples of series `id` in `mint..=maxt`, tombstones applied.
    pub(crate) fn samples(&self, id: SeriesId, mint: i64, maxt: i64) -> io::Result<Vec<Sample>> {
        let Some(s) = self.series.get(id as usize) else {
            return Ok(Vec::new());
        };
        let from = s.chunks.partition_point(|c| c.max_t < mint);
        let to = from + s.chunks[from..].partition_point(|c| c.min_t <= maxt);
        let chunks = &s.chunks[from..to];
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return Ok(Vec::new());
        };
        // The chunks of a series are contiguous: one read for all of them.
        let start = first.off;
        let end = last.off + u64::from(last.len) + 4;
        let mut buf = vec![0u8; usize::try_from(end - start).map_err(invalid)?];
        self.chunks.read_exact_at(&mut buf, start)?;
        let mut out = Vec::new();
        for c in chunks {
            let at = usize::try_from(c.off - start).map_err(invalid)?;
            let bytes = buf
                .get(at..at + c.len as usize)
                .ok_or_else(|| invalid("chunk reference out of bounds"))?;
            let crc = buf
                .get(at + c.len as usize..at + c.len as usize + 4)
                .ok_or_else(|| invalid("chunk reference out of bounds"))?;
            if crc32fast::hash(bytes).to_le_bytes() != crc {
                return Err(invalid(format!(
                    "{}: chunk at {} fails its checksum",
                    self.dir.display(),
                    c.off
                )));
            }
            let mut it = ChunkRef::new(bytes).map_err(invalid)?.iter();
            if let Some(first) = it.seek(mint) {
                out.extend(std::iter::once(first).chain(it).take_while(|p| p.t <= maxt));
            }
        }
        if let Some(ranges) = self.read_tombstones().get(&id) {
            out.retain(|p| !tombstones::deleted(ranges, p.t));
        }
        Ok(out)
    }

    /// The matching series with samples in `mint..=maxt`.
    pub(crate) fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<(Labels, Vec<Sample>)>> {
        let mut out = Vec::new();
        if !self.overlaps(mint, maxt) {
            return Ok(out);
        }
        for id in self.matching(matchers) {
            let samples = self.samples(id, mint, maxt)?;
            if !samples.is_empty() {
                out.push((self.labels(id), samples));
            }
        }
        Ok(out)
    }

    /// Label sets of the matching series with samples in `mint..=maxt`; decodes only series
    /// whose chunks do not settle it.
    pub(crate) fn series_in(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<Labels>> {
        let mut out = Vec::new();
        if !self.overlaps(mint, maxt) {
            return Ok(out);
        }
        let dead = self.read_tombstones().clone();
        for id in self.matching(matchers) {
            let s = &self.series[id as usize];
            let inside = s.chunks.iter().any(|c| c.min_t >= mint && c.max_t <= maxt);
            let has = if inside && !dead.contains_key(&id) {
                true
            } else if !s.chunks.iter().any(|c| c.min_t <= maxt && c.max_t >= mint) {
                false
            } else {
                !self.samples(id, mint, maxt)?.is_empty()
            };
            if has {
                out.push(self.labels(id));
            }
        }
        Ok(out)
    }

    /// Label names of the matching series with samples in `mint..=maxt`.
    pub(crate) fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        into: &mut BTreeSet<String>,
    ) -> io::Result<()> {
        if matchers.is_empty() && self.whole(mint, maxt) {
            into.extend(self.index.names());
            return Ok(());
        }
        for l in self.series_in(matchers, mint, maxt)? {
            into.extend(l.iter().map(|l| l.name.to_string()));
        }
        Ok(())
    }

    /// Values of label `name` among the matching series with samples in `mint..=maxt`.
    pub(crate) fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        into: &mut BTreeSet<String>,
    ) -> io::Result<()> {
        if matchers.is_empty() && self.whole(mint, maxt) {
            into.extend(self.index.values(name));
            return Ok(());
        }
        for l in self.series_in(matchers, mint, maxt)? {
            if let Some(v) = l.get(name) {
                into.insert(v.to_string());
            }
        }
        Ok(())
    }

    /// Whether every series of the block answers a read of `mint..=maxt` (the range covers
    /// the block and nothing is deleted).
    fn whole(&self, mint: i64, maxt: i64) -> bool {
        mint <= self.min_t() && maxt >= self.max_t() - 1 && !self.has_tombstones()
    }

    /// Deletes `mint..=maxt` of the matching series by tombstones (durable on return);
    /// returns how many series got one.
    pub(crate) fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> io::Result<usize> {
        if !self.overlaps(mint, maxt) {
            return Ok(0);
        }
        let ids: Vec<SeriesId> = self
            .matching(matchers)
            .into_iter()
            .filter(|id| {
                self.series[*id as usize]
                    .chunks
                    .iter()
                    .any(|c| c.min_t <= maxt && c.max_t >= mint)
            })
            .collect();
        let ranges = ids.into_iter().map(|id| (id, mint, maxt)).collect();
        self.add_tombstones(ranges)
    }

    /// Adds tombstones `(series, mint, maxt)` not already covered; returns how many were
    /// added. The file is written before they apply.
    pub(crate) fn add_tombstones(&self, ranges: Vec<(SeriesId, i64, i64)>) -> io::Result<usize> {
        let mut t = self.tombstones.write().unwrap_or_else(|e| e.into_inner());
        let mut next = t.clone();
        let mut added = 0;
        for (id, lo, hi) in ranges {
            let have = next.entry(id).or_default();
            if !tombstones::covers(have, lo, hi) {
                have.push((lo, hi));
                added += 1;
            }
        }
        if added > 0 {
            tombstones::write(&self.dir, &next)?;
            *t = next;
        }
        Ok(added)
    }

    /// Whether tombstones delete every sample of the block.
    pub(crate) fn fully_deleted(&self) -> bool {
        let t = self.read_tombstones();
        self.series.iter().enumerate().all(|(i, s)| {
            t.get(&(i as SeriesId)).is_some_and(|r| {
                s.chunks
                    .iter()
                    .all(|c| tombstones::covers(r, c.min_t, c.max_t))
            })
        })
    }
}

#[cfg(test)]
mod tests;

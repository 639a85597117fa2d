//! The tenant's blocks: cutting the head into a block, level-based compaction, and retention
//! of whole blocks.
//!
//! Invariants:
//! - Blocks are cut from the head at multiples of `tsdb.blocks.range`; the head then holds no
//!   sample before the newest block's end (`Head::min_valid`) and refuses appends before it
//!   as too old (Prometheus 2.x's "out of bounds"), so blocks cut from the head never overlap.
//! - A block is written to `<id>.tmp`, fsynced and renamed: a directory without the suffix
//!   is complete. The head is truncated after the block is in place, then checkpointed; a
//!   crash in between leaves samples in both, which the open removes from the head.
//! - A compacted block lists its parents; parents still present at open are removed (the
//!   crash came between writing the child and removing them).
//! - Readers take the head's snapshot before the block list, so a sample moving from the
//!   head into a block is always seen (twice at worst, and de-duplicated).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::block::{Block, BlockWriter, Compaction, TMP_SUFFIX};
use super::{Tsdb, TsdbError};
use crate::head::{ChunkData, SeriesId};
use crate::labels::Labels;
use crate::storage::Sample;

/// Opens every block in `dir`, removing unfinished ones and parents of compacted ones.
pub(crate) fn open_all(dir: &Path) -> Result<Vec<Arc<Block>>, TsdbError> {
    fs::create_dir_all(dir).map_err(TsdbError::io(dir))?;
    let mut blocks = Vec::new();
    for e in fs::read_dir(dir).map_err(TsdbError::io(dir))? {
        let e = e.map_err(TsdbError::io(dir))?;
        let path = e.path();
        if !e.file_type().map_err(TsdbError::io(&path))?.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(TMP_SUFFIX) {
            tracing::info!(dir = %path.display(), "tsdb: removing a half-written block");
            fs::remove_dir_all(&path).map_err(TsdbError::io(&path))?;
            continue;
        }
        blocks.push(Arc::new(Block::open(&path)?));
    }
    let superseded: std::collections::HashSet<String> = blocks
        .iter()
        .flat_map(|b| b.meta().compaction.parents.iter().cloned())
        .collect();
    let mut kept = Vec::with_capacity(blocks.len());
    for b in blocks {
        if superseded.contains(b.id()) {
            tracing::info!(
                block = b.id(),
                "tsdb: removing a block its compaction replaced"
            );
            fs::remove_dir_all(b.dir()).map_err(TsdbError::io(b.dir()))?;
        } else {
            kept.push(b);
        }
    }
    kept.sort_by_key(|b| (b.min_t(), b.max_t()));
    Ok(kept)
}

/// Merges sample lists (each in time order) into one, keeping the first of equal times.
pub(crate) fn merge_samples(parts: Vec<Vec<Sample>>) -> Vec<Sample> {
    let mut it = parts.into_iter().filter(|p| !p.is_empty());
    let Some(mut out) = it.next() else {
        return Vec::new();
    };
    for p in it {
        if out.last().is_some_and(|l| p[0].t > l.t) {
            out.extend(p);
        } else {
            out.extend(p);
            out.sort_by_key(|s| s.t);
            out.dedup_by_key(|s| s.t);
        }
    }
    out
}

impl Tsdb {
    pub(crate) fn blocks_dir(&self) -> std::path::PathBuf {
        self.dir.join("blocks")
    }

    /// The blocks, oldest first.
    pub(crate) fn blocks(&self) -> Vec<Arc<Block>> {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the block list, keeping the block metrics right.
    fn update_blocks(&self, f: impl FnOnce(&mut Vec<Arc<Block>>)) {
        let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        let (n, bytes) = (
            blocks.len() as i64,
            blocks.iter().map(|b| b.size()).sum::<u64>(),
        );
        f(&mut blocks);
        blocks.sort_by_key(|b| (b.min_t(), b.max_t()));
        crate::metrics::BLOCKS_LOADED.add(blocks.len() as i64 - n);
        crate::metrics::BLOCKS_BYTES
            .add(blocks.iter().map(|b| b.size()).sum::<u64>() as i64 - bytes as i64);
    }

    /// Adds `add` and removes the blocks `ids` in one step (readers see either list), then
    /// deletes the removed blocks' directories.
    pub(crate) fn replace_blocks(
        &self,
        add: Option<Arc<Block>>,
        ids: &[String],
    ) -> Result<(), TsdbError> {
        let mut gone = Vec::new();
        self.update_blocks(|blocks| {
            blocks.extend(add);
            blocks.retain(|b| {
                let drop = ids.iter().any(|id| id == b.id());
                if drop {
                    gone.push(b.dir().to_path_buf());
                }
                !drop
            });
        });
        // Readers holding a block keep reading its open files.
        for dir in gone {
            fs::remove_dir_all(&dir).map_err(TsdbError::io(&dir))?;
        }
        Ok(())
    }

    /// Cuts the head into blocks while it spans more than 1.5 × the block range: the oldest
    /// range goes into a block, then out of the head (and, by the checkpoint that follows, out
    /// of the WAL). Times are the data's (the head's own bounds), as Prometheus's head
    /// compaction; no clock is involved. Returns how many blocks were written.
    pub fn cut(&self) -> Result<usize, TsdbError> {
        let _blocks = self.blocks_lock.lock().unwrap_or_else(|e| e.into_inner());
        let range = self.block_ranges[0];
        let mut n = 0;
        loop {
            let (min, max) = {
                let head = self.read();
                (head.usage().0, head.bounds().1)
            };
            let Some(min) = min else { break };
            if max.saturating_sub(min) <= range / 2 * 3 {
                break;
            }
            let mint = min.div_euclid(range).saturating_mul(range);
            let maxt = mint.saturating_add(range);
            let started = std::time::Instant::now();
            let block = self.write_head_block(mint, maxt)?;
            let removed = {
                let mut head = self.head.write().unwrap_or_else(|e| e.into_inner());
                let before = head.num_series();
                let (removed, res) = head.truncate_before(maxt);
                crate::metrics::HEAD_SERIES.sub(before as i64 - head.num_series() as i64);
                if let Err(e) = res {
                    tracing::error!(error = %e, "tsdb: truncating the head failed for some series");
                }
                removed
            };
            self.compact_chunk_files()?;
            {
                let _one = self.checkpointing.lock().unwrap_or_else(|e| e.into_inner());
                self.checkpoint_inner(None)?;
            }
            crate::metrics::HEAD_TRUNCATIONS.inc();
            tracing::info!(
                dir = %self.dir.display(),
                block = block.as_ref().map_or("", |b| b.id()),
                mint,
                maxt,
                series = block.as_ref().map_or(0, |b| b.meta().stats.num_series),
                samples = block.as_ref().map_or(0, |b| b.meta().stats.num_samples),
                head_series_removed = removed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "tsdb: head cut into a block"
            );
            n += 1;
        }
        Ok(n)
    }

    /// After a cut, most of the head's chunk files is dead space (the cut range): the head's
    /// remaining closed chunks are copied into a new file, so that the next checkpoint frees
    /// the old files. Copies are made without the head's lock; a chunk replaced meanwhile
    /// keeps its new place.
    fn compact_chunk_files(&self) -> Result<(), TsdbError> {
        let store = self.read().store();
        let chunks_dir = self.dir.join("chunks");
        let current = store.rotate().map_err(TsdbError::io(&chunks_dir))?;
        let refs = self.read().disk_chunks_before(current);
        let mut moved = Vec::with_capacity(refs.len());
        for (id, from) in refs {
            let bytes = match store.get(&ChunkData::Disk(from)) {
                Ok(b) => b.into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(TsdbError::io(&chunks_dir)(e)),
            };
            if let ChunkData::Disk(to) = store.put(bytes) {
                moved.push((id, from, to));
            }
        }
        self.head
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .relocate(&moved);
        Ok(())
    }

    /// Writes the head's samples before `maxt` into a block `mint..maxt` and adds it (the
    /// head keeps them until truncated). From here on the head refuses samples before `maxt`.
    pub(crate) fn write_head_block(
        &self,
        mint: i64,
        maxt: i64,
    ) -> Result<Option<Arc<Block>>, TsdbError> {
        self.head
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_min_valid(maxt);
        let store;
        let _pin;
        let snapshots;
        {
            let head = self.read();
            store = head.store();
            snapshots = head.snapshots_before(maxt);
            _pin = store.pin();
        }
        let dir = self.blocks_dir();
        let mut w = BlockWriter::new(&dir)?;
        for (labels, snap) in snapshots {
            let samples = snap.samples(&store).map_err(TsdbError::io(&self.dir))?;
            w.add(labels, &samples)?;
        }
        if w.num_series() == 0 {
            return Ok(None);
        }
        let block = Arc::new(w.finish(
            mint,
            maxt,
            Compaction {
                level: 1,
                ..Compaction::default()
            },
            0,
        )?);
        self.update_blocks(|b| b.push(block.clone()));
        Ok(Some(block))
    }

    /// What to compact next, as Prometheus's leveled planner: overlapping blocks first; then,
    /// for each level range above the first, the first group of blocks within one aligned
    /// window that fills it or lies before the newest block (which is never picked, so new data
    /// is not compacted early); then a block with tombstones on its own (rewritten without
    /// the deleted samples).
    fn plan(&self) -> Option<Vec<Arc<Block>>> {
        let blocks = self.blocks();
        // Overlaps: blocks sorted by start; a block starting before the group's end joins it.
        let mut group: Vec<Arc<Block>> = Vec::new();
        let mut end = i64::MIN;
        for b in &blocks {
            if !group.is_empty() && b.min_t() < end {
                group.push(b.clone());
                end = end.max(b.max_t());
                continue;
            }
            if group.len() > 1 {
                return Some(group);
            }
            group = vec![b.clone()];
            end = b.max_t();
        }
        if group.len() > 1 {
            return Some(group);
        }
        if let Some((_, older)) = blocks.split_last()
            && let Some(newest_start) = blocks.last().map(|b| b.min_t())
        {
            for &r in &self.block_ranges[1..] {
                // Blocks of one resolution only: raw and downsampled data are not mixed.
                let mut windows: BTreeMap<(i64, i64), Vec<Arc<Block>>> = BTreeMap::new();
                for b in older {
                    let w = b.min_t().div_euclid(r).saturating_mul(r);
                    if b.max_t() <= w.saturating_add(r) {
                        windows
                            .entry((w, b.meta().resolution))
                            .or_default()
                            .push(b.clone());
                    }
                }
                for (_, g) in windows {
                    let (Some(first), Some(last)) = (g.first(), g.last()) else {
                        continue;
                    };
                    let (mint, maxt) = (first.min_t(), last.max_t());
                    if g.len() > 1 && (maxt - mint == r || maxt <= newest_start) {
                        return Some(g);
                    }
                }
            }
        }
        blocks
            .iter()
            .find(|b| b.has_tombstones())
            .map(|b| vec![b.clone()])
    }

    /// Compacts until the planner has nothing left; returns how many compactions ran. Runs
    /// beside appends and reads (it holds only the blocks' own lock).
    pub fn compact(&self) -> Result<usize, TsdbError> {
        let _blocks = self.blocks_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while let Some(group) = self.plan() {
            let started = std::time::Instant::now();
            let res = self.compact_group(&group);
            let secs = started.elapsed().as_secs_f64();
            crate::metrics::COMPACTION_SECONDS.observe(secs);
            let result = if res.is_ok() { "ok" } else { "error" };
            crate::metrics::COMPACTIONS
                .with_label_values(&[result])
                .inc();
            res?;
            n += 1;
        }
        Ok(n)
    }

    /// Merges `group` into one block (tombstones materialised, identical samples once) and
    /// replaces the group with it.
    fn compact_group(&self, group: &[Arc<Block>]) -> Result<(), TsdbError> {
        let started = std::time::Instant::now();
        let mint = group.iter().map(|b| b.min_t()).min().unwrap_or(0);
        let maxt = group.iter().map(|b| b.max_t()).max().unwrap_or(0);
        let mut by_labels: BTreeMap<Labels, Vec<(usize, SeriesId)>> = BTreeMap::new();
        for (i, b) in group.iter().enumerate() {
            for id in 0..b.num_series() as SeriesId {
                by_labels.entry(b.labels(id)).or_default().push((i, id));
            }
        }
        let mut w = BlockWriter::new(&self.blocks_dir())?;
        for (labels, refs) in by_labels {
            let mut parts = Vec::with_capacity(refs.len());
            for (i, id) in refs {
                let b = &group[i];
                parts.push(
                    b.samples(id, i64::MIN, i64::MAX)
                        .map_err(TsdbError::io(b.dir()))?,
                );
            }
            w.add(labels, &merge_samples(parts))?;
        }
        let mut sources: Vec<String> = group
            .iter()
            .flat_map(|b| b.meta().compaction.sources.iter().cloned())
            .collect();
        sources.sort();
        sources.dedup();
        let parents: Vec<String> = group.iter().map(|b| b.id().to_owned()).collect();
        let level = group
            .iter()
            .map(|b| b.meta().compaction.level)
            .max()
            .unwrap_or(1)
            + u32::from(group.len() > 1);
        let out = if w.num_series() == 0 {
            None
        } else {
            Some(Arc::new(w.finish(
                mint,
                maxt,
                Compaction {
                    level,
                    sources,
                    parents: parents.clone(),
                },
                group.iter().map(|b| b.meta().resolution).max().unwrap_or(0),
            )?))
        };
        self.replace_blocks(out.clone(), &parents)?;
        tracing::info!(
            dir = %self.dir.display(),
            parents = ?parents,
            block = out.as_ref().map_or("", |b| b.id()),
            mint,
            maxt,
            level,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tsdb: blocks compacted"
        );
        Ok(())
    }

    /// Retention of blocks, relative to the newest sample (as the head's): a block wholly
    /// older than the longest retention is removed; in the others, a series whose samples in
    /// the block are all older than its own retention (`tsdb.retention.rules`, else
    /// `tsdb.retention.time`) gets a tombstone, applied at read and materialised by
    /// compaction; a block whose series are all deleted is removed.
    pub fn apply_block_retention(&self) -> Result<(), TsdbError> {
        let _blocks = self.blocks_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(newest) = self.newest() else {
            return Ok(());
        };
        let longest = self
            .rules
            .iter()
            .map(|r| r.1)
            .chain([self.retention])
            .max()
            .unwrap_or(self.retention);
        let shortest = self
            .rules
            .iter()
            .map(|r| r.1)
            .chain([self.retention])
            .min()
            .unwrap_or(self.retention);
        let mut expired = Vec::new();
        for b in self.blocks() {
            if b.max_t() <= newest.saturating_sub(longest) {
                expired.push(b.id().to_owned());
                continue;
            }
            if b.min_t() >= newest.saturating_sub(shortest) {
                continue;
            }
            let mut cutoff: HashMap<SeriesId, i64> = HashMap::new();
            for (matchers, keep) in &self.rules {
                for id in b.matching(matchers) {
                    cutoff.entry(id).or_insert(newest.saturating_sub(*keep));
                }
            }
            let default = newest.saturating_sub(self.retention);
            let dead: Vec<(SeriesId, i64, i64)> = (0..b.num_series() as SeriesId)
                .filter(|id| {
                    let c = cutoff.get(id).copied().unwrap_or(default);
                    b.chunks(*id).last().is_some_and(|last| last.max_t < c)
                })
                .map(|id| (id, i64::MIN, i64::MAX))
                .collect();
            if !dead.is_empty() {
                b.add_tombstones(dead).map_err(TsdbError::io(b.dir()))?;
            }
            if b.fully_deleted() {
                expired.push(b.id().to_owned());
            }
        }
        if !expired.is_empty() {
            tracing::info!(dir = %self.dir.display(), blocks = ?expired, "tsdb: retention removes blocks");
            self.replace_blocks(None, &expired)?;
        }
        Ok(())
    }

    /// Removes the blocks that end at or before `cutoff` (size retention).
    pub(crate) fn drop_blocks_before(&self, cutoff: i64) -> Result<(), TsdbError> {
        let _blocks = self.blocks_lock.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<String> = self
            .blocks()
            .iter()
            .filter(|b| b.max_t() <= cutoff)
            .map(|b| b.id().to_owned())
            .collect();
        self.replace_blocks(None, &ids)
    }

    /// The background work of a round: cut the head, apply block retention, downsample old
    /// blocks, compact.
    pub fn maintain(&self) -> Result<(), TsdbError> {
        self.cut()?;
        self.apply_block_retention()?;
        self.downsample()?;
        self.compact()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

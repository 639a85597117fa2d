//! One tenant's persistent store: the head, its WAL and checkpoints, behind the storage seams.
//!
//! Layout of a tenant directory: `wal/<segment>` files, `checkpoint.<segment>`, `chunks/` (the
//! head's closed chunks) and `blocks/<id>/` (immutable blocks, see [`blocks`]).
//! Writes: the head checks and stores a batch under its write lock and queues the WAL records
//! of what it stored; the append returns once those records are fdatasync'ed (group commit).
//! Reads merge the head with the blocks overlapping the range.

mod annotations;
pub(crate) mod block;
mod blocks;
pub(crate) mod checkpoint;
mod downsample;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::TsdbConfig;
use crate::head::{ChunkStore, Head, Snapshot};
use crate::labels::Labels;
use crate::storage::{
    AppendReport, Appendable, Matcher, Queryable, RawBatch, Sample, SeriesSamples, StorageError,
    Store, StoreStats,
};
use crate::wal::{self, Record, Wal, WalError};
use block::Block;

#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("{0}: corrupt checkpoint")]
    Corrupt(PathBuf),
    #[error("{path}: corrupt block: {reason}")]
    CorruptBlock { path: PathBuf, reason: String },
}

impl TsdbError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TsdbError + '_ {
        move |source| TsdbError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<TsdbError> for StorageError {
    fn from(e: TsdbError) -> StorageError {
        StorageError::Internal(e.to_string())
    }
}

impl From<WalError> for StorageError {
    fn from(e: WalError) -> StorageError {
        StorageError::Internal(e.to_string())
    }
}

/// Series or samples per WAL record.
const RECORD_ITEMS: usize = 20_000;

/// A tenant's persistent store.
#[derive(Debug)]
pub struct Tsdb {
    dir: PathBuf,
    head: RwLock<Head>,
    wal: Wal,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    /// A WAL write failed after the head changed: the next write checkpoints first.
    wal_behind: AtomicBool,
    /// Exemplars and metric metadata, in files of their own.
    annotations: annotations::TenantAnnotations,
    /// Immutable blocks, oldest first.
    blocks: RwLock<Vec<Arc<Block>>>,
    /// One change of the blocks at a time (cut, compaction, retention, deletes); taken
    /// before `checkpointing`.
    blocks_lock: Mutex<()>,
    /// The compaction levels' block ranges (milliseconds), the first one cut from the head.
    block_ranges: Vec<i64>,
    /// Retention in milliseconds and per-metric rules, for blocks.
    retention: i64,
    rules: Vec<(Vec<Matcher>, i64)>,
    /// `tsdb.blocks.downsampling` as (age, resolution) milliseconds.
    downsampling: Vec<(i64, i64)>,
}

impl Tsdb {
    /// Opens (or creates) the store in `dir`: loads the newest valid checkpoint and replays the
    /// WAL written after it.
    pub fn open(dir: &Path, cfg: &TsdbConfig) -> Result<Tsdb, TsdbError> {
        std::fs::create_dir_all(dir).map_err(TsdbError::io(dir))?;
        let started = std::time::Instant::now();
        let chunks_dir = dir.join("chunks");
        let store = ChunkStore::open(&chunks_dir).map_err(TsdbError::io(&chunks_dir))?;
        let blocks = blocks::open_all(&dir.join("blocks"))?;
        let persisted = blocks.iter().map(|b| b.max_t()).max();
        let mut head = Head::new(cfg, Arc::new(store));
        if let Some(t) = persisted {
            head.set_min_valid(t);
        }
        // Only the newest checkpoint counts: the WAL before it is gone, so an older one would
        // silently lose data. A corrupt one stops the open for the operator to see.
        let mut first_segment = 0;
        if let Some(seg) = checkpoint::list(dir)?.last() {
            checkpoint::load(&checkpoint::path(dir, *seg), &mut head)?;
            first_segment = *seg;
        }
        let mut replayed = 0u64;
        let mut in_blocks = 0u64;
        let wal = Wal::open(
            &dir.join("wal"),
            cfg.wal.segment_size.as_u64(),
            first_segment,
            |rec| {
                replayed += 1;
                match rec {
                    Record::Series(s) => {
                        for (id, labels) in s {
                            head.insert_series(id, &labels, crate::head::MemSeries::default());
                        }
                    }
                    Record::Samples(s) => {
                        for (id, p) in s {
                            if !head.apply_sample(id, p) {
                                in_blocks += 1;
                            }
                        }
                    }
                    Record::Delete { ids, mint, maxt } => {
                        if let Err(e) = head.apply_delete(&ids, mint, maxt) {
                            tracing::error!(error = %e, "tsdb: replaying a delete failed");
                        }
                    }
                }
            },
        )?;
        // A crash between writing a block and checkpointing the truncated head left its
        // samples in the checkpoint or WAL too: they are dropped, and a checkpoint makes that
        // durable (a later compaction may remove the block, and with it the bound).
        let stale_head =
            in_blocks > 0 || persisted.is_some_and(|t| head.usage().0.is_some_and(|m| m < t));
        if let Some(t) = persisted
            && let (_, Err(e)) = head.truncate_before(t)
        {
            return Err(TsdbError::io(dir)(e));
        }
        head.drop_empty_series();
        crate::metrics::HEAD_SERIES.add(head.num_series() as i64);
        crate::metrics::BLOCKS_LOADED.add(blocks.len() as i64);
        crate::metrics::BLOCKS_BYTES.add(blocks.iter().map(|b| b.size()).sum::<u64>() as i64);
        tracing::info!(
            dir = %dir.display(),
            series = head.num_series(),
            blocks = blocks.len(),
            checkpoint_segment = first_segment,
            wal_records = replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tsdb: opened"
        );
        let db = Tsdb {
            dir: dir.to_path_buf(),
            head: RwLock::new(head),
            wal,
            checkpointing: Mutex::new(()),
            wal_behind: AtomicBool::new(false),
            annotations: annotations::TenantAnnotations::open(dir, cfg)?,
            blocks: RwLock::new(blocks),
            blocks_lock: Mutex::new(()),
            block_ranges: cfg.block_ranges(),
            retention: cfg.retention_ms(),
            rules: cfg.retention_rules(),
            downsampling: cfg.downsampling_ms(),
        };
        // Older checkpoints than the one loaded are superseded.
        db.remove_checkpoints_before(first_segment)?;
        if stale_head {
            db.checkpoint()?;
        }
        Ok(db)
    }

    fn remove_checkpoints_before(&self, seg: u64) -> Result<(), TsdbError> {
        for old in checkpoint::list(&self.dir)? {
            if old < seg {
                let p = checkpoint::path(&self.dir, old);
                std::fs::remove_file(&p).map_err(TsdbError::io(&p))?;
            }
        }
        Ok(())
    }

    /// Writes a checkpoint of the head, applying retention first, and removes the WAL segments
    /// and checkpoints it supersedes.
    pub fn checkpoint(&self) -> Result<(), TsdbError> {
        let _one = self.checkpointing.lock().unwrap_or_else(|e| e.into_inner());
        self.annotations.flush();
        let res = self.checkpoint_inner(None);
        let result = if res.is_ok() { "ok" } else { "error" };
        crate::metrics::CHECKPOINTS
            .with_label_values(&[result])
            .inc();
        res
    }

    /// Drops the blocks and chunks that end before `cutoff` (size retention) and checkpoints.
    pub fn drop_before(&self, cutoff: i64) -> Result<(), TsdbError> {
        self.drop_blocks_before(cutoff)?;
        let _one = self.checkpointing.lock().unwrap_or_else(|e| e.into_inner());
        self.checkpoint_inner(Some(cutoff))
    }

    /// Oldest sample time and the bytes the store uses: blocks, the head's compressed chunks,
    /// WAL segments and the checkpoint (dead space in chunk files is not counted: it is freed
    /// with its file).
    pub fn usage(&self) -> Result<(Option<i64>, u64), TsdbError> {
        let (mut min, mut chunks) = self.read().usage();
        for b in self.blocks() {
            chunks += b.size();
            min = Some(min.map_or(b.min_t(), |m| m.min(b.min_t())));
        }
        let mut files = 0u64;
        for dir in [self.dir.clone(), self.dir.join("wal")] {
            for e in std::fs::read_dir(&dir).map_err(TsdbError::io(&dir))? {
                let e = e.map_err(TsdbError::io(&dir))?;
                let meta = e.metadata().map_err(TsdbError::io(&dir))?;
                if meta.is_file() {
                    files += meta.len();
                }
            }
        }
        Ok((min, chunks + files))
    }

    fn checkpoint_inner(&self, cutoff: Option<i64>) -> Result<(), TsdbError> {
        let started = std::time::Instant::now();
        let (segment, tmp, file, bytes, live, current_file, store, series) = {
            let mut head = self.head.write().unwrap_or_else(|e| e.into_inner());
            let before = head.num_series();
            // Retention drops whole chunks; it is not logged, so it runs only here, where the
            // checkpoint records its result before the WAL that preceded it is removed.
            head.apply_retention();
            if let Some(cutoff) = cutoff {
                head.drop_before(cutoff);
            }
            head.merge_ooo();
            crate::metrics::HEAD_SERIES.sub(before as i64 - head.num_series() as i64);
            let segment = self.wal.cut()?;
            // Streamed to the file under the lock (to the page cache); synced after it.
            let (tmp, file) = checkpoint::create(&self.dir, segment)?;
            let (bytes, live) = checkpoint::encode(&head, &file).map_err(TsdbError::io(&tmp))?;
            let store = head.store();
            let current_file = store.current_file();
            (
                segment,
                tmp,
                file,
                bytes,
                live,
                current_file,
                store,
                head.num_series(),
            )
        };
        let chunks_dir = self.dir.join("chunks");
        store.sync().map_err(TsdbError::io(&chunks_dir))?;
        checkpoint::commit(&self.dir, segment, &tmp, file)?;
        self.wal.remove_before(segment)?;
        self.remove_checkpoints_before(segment)?;
        store
            .remove_unreferenced(&live, current_file)
            .map_err(TsdbError::io(&chunks_dir))?;
        tracing::info!(
            dir = %self.dir.display(),
            segment,
            series,
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tsdb: checkpoint written"
        );
        Ok(())
    }

    /// The earliest time at which a series' oldest chunk (or the oldest block) ends.
    pub fn first_chunk_end(&self) -> Option<i64> {
        let head = self.read().first_chunk_end();
        let block = self.blocks().first().map(|b| b.max_t() - 1);
        match (head, block) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The newest sample time (of the head, else of the blocks).
    pub fn newest(&self) -> Option<i64> {
        let (_, max) = self.read().bounds();
        let block = self.blocks().iter().map(|b| b.max_t() - 1).max();
        match ((max != i64::MIN).then_some(max), block) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The oldest sample time the store accepts: older ranges are in immutable blocks.
    pub fn min_valid_time(&self) -> i64 {
        self.read().min_valid()
    }

    /// The blocks overlapping `mint..=maxt`, oldest first.
    fn blocks_in(&self, mint: i64, maxt: i64) -> Vec<Arc<Block>> {
        self.blocks()
            .into_iter()
            .filter(|b| b.overlaps(mint, maxt))
            .collect()
    }

    /// Checkpoints for a fast next start.
    pub fn close(&self) -> Result<(), TsdbError> {
        self.checkpoint()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Head> {
        self.head.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Tsdb {
    /// After a failed WAL write the head holds changes the WAL lacks (and re-sent samples
    /// would be acknowledged as duplicates): a checkpoint makes the head durable again. Until
    /// one succeeds, writes are refused.
    fn recover(&self, e: WalError) -> Result<(), StorageError> {
        self.wal_behind.store(true, Ordering::SeqCst);
        tracing::error!(dir = %self.dir.display(), error = %e,
            "tsdb: wal write failed; checkpointing the head");
        self.ensure_durable_head()
            .map_err(|ce| StorageError::Internal(format!("{e}; then {ce}")))
    }

    fn ensure_durable_head(&self) -> Result<(), StorageError> {
        if !self.wal_behind.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.checkpoint() {
            Ok(()) => {
                self.wal_behind.store(false, Ordering::SeqCst);
                tracing::info!(dir = %self.dir.display(), "tsdb: head durable again");
                Ok(())
            }
            Err(e) => Err(StorageError::Internal(format!(
                "not writable until a checkpoint succeeds: {e}"
            ))),
        }
    }
}

fn read_error(e: std::io::Error) -> StorageError {
    StorageError::Internal(format!("reading chunks: {e}"))
}

/// Chunks one thread decodes before a select spreads its series over more (about 50 000
/// samples, half a millisecond).
const CHUNKS_PER_THREAD: usize = 400;

/// The samples of head snapshots (series without any in the range left out), decoded on as
/// many threads as their chunks warrant, in the snapshots' order.
fn decode_snapshots(
    store: &ChunkStore,
    snapshots: Vec<(Labels, Snapshot)>,
) -> Result<Vec<SeriesSamples>, StorageError> {
    let chunks: usize = snapshots.iter().map(|(_, s)| s.chunks()).sum();
    let parts = crate::parallel::parts(chunks, CHUNKS_PER_THREAD);
    let decoded = crate::parallel::map_owned(snapshots, parts, |run| {
        let mut out = Vec::with_capacity(run.len());
        for (labels, snap) in run {
            let samples = snap.samples(store).map_err(read_error)?;
            if !samples.is_empty() {
                out.push(SeriesSamples { labels, samples });
            }
        }
        Ok::<_, StorageError>(out)
    });
    let mut out = Vec::new();
    for d in decoded {
        let d = d?;
        if out.is_empty() {
            out = d;
        } else {
            out.extend(d);
        }
    }
    Ok(out)
}

impl Queryable for Tsdb {
    /// Copies the matching chunk references under the head's read lock and decodes after
    /// releasing it, so long queries do not hold up appends; then reads the blocks overlapping
    /// the range (taken after the head, see [`blocks`]) and merges per series.
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, StorageError> {
        let store;
        let _pin;
        let snapshots;
        {
            let head = self.read();
            store = head.store();
            snapshots = head.snapshots(matchers, mint, maxt);
            _pin = store.pin();
        }
        let blocks = self.blocks_in(mint, maxt);
        let mut out = Vec::with_capacity(snapshots.len());
        if blocks.is_empty() {
            out = decode_snapshots(&store, snapshots)?;
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            return Ok(out);
        }
        let mut parts: BTreeMap<Labels, Vec<Vec<Sample>>> = BTreeMap::new();
        for b in &blocks {
            for (labels, samples) in b.select(matchers, mint, maxt).map_err(read_error)? {
                parts.entry(labels).or_default().push(samples);
            }
        }
        for s in decode_snapshots(&store, snapshots)? {
            parts.entry(s.labels).or_default().push(s.samples);
        }
        for (labels, p) in parts {
            out.push(SeriesSamples {
                labels,
                samples: blocks::merge_samples(p),
            });
        }
        Ok(out)
    }

    fn series(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let head = self
            .read()
            .series_labels(matchers, mint, maxt)
            .map_err(read_error)?;
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(head);
        }
        let mut all: BTreeSet<Labels> = head.into_iter().collect();
        for b in blocks {
            all.extend(b.series_in(matchers, mint, maxt).map_err(read_error)?);
        }
        Ok(all.into_iter().collect())
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        let head = self
            .read()
            .label_names(matchers, mint, maxt)
            .map_err(read_error)?;
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(head);
        }
        let mut all: BTreeSet<String> = head.into_iter().collect();
        for b in blocks {
            b.label_names(matchers, mint, maxt, &mut all)
                .map_err(read_error)?;
        }
        Ok(all.into_iter().collect())
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        let head = self
            .read()
            .label_values(name, matchers, mint, maxt)
            .map_err(read_error)?;
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(head);
        }
        let mut all: BTreeSet<String> = head.into_iter().collect();
        for b in blocks {
            b.label_values(name, matchers, mint, maxt, &mut all)
                .map_err(read_error)?;
        }
        Ok(all.into_iter().collect())
    }
}

impl Tsdb {
    /// Appends what `append` stores in the head (under its write lock) and logs it; returns
    /// once it is durable.
    fn append_with(
        &self,
        append: impl FnOnce(&mut Head) -> crate::head::Appended,
    ) -> Result<AppendReport, StorageError> {
        self.ensure_durable_head()?;
        let (report, seq, error) = {
            let mut head = self.head.write().unwrap_or_else(|e| e.into_inner());
            let before = head.num_series();
            let out = append(&mut head);
            crate::metrics::HEAD_SERIES.add(head.num_series() as i64 - before as i64);
            // About 12 bytes per sample (id, time delta, value) and 200 per new series.
            let mut framed =
                Vec::with_capacity(64 + out.samples.len() * 12 + out.new_series.len() * 200);
            // Bounded records: a huge batch is several frames (all in one group commit).
            for part in out.new_series.chunks(RECORD_ITEMS) {
                wal::frame_with(&mut framed, |o| wal::record::encode_series(part, o));
            }
            for part in out.samples.chunks(RECORD_ITEMS) {
                wal::frame_with(&mut framed, |o| wal::record::encode_samples(part, o));
            }
            // Without records of its own (only re-delivered samples), the batch waits for
            // the records before it: a duplicate is acknowledged only once its original is
            // durable.
            let seq = if framed.is_empty() {
                self.wal.last_enqueued()
            } else {
                self.wal.enqueue(&framed)
            };
            (out.report, seq, out.error)
        };
        if seq > 0
            && let Err(e) = self.wal.wait_durable(seq)
        {
            self.recover(e)?;
        }
        if let Some(e) = error {
            // What was stored is durable; the client retries the batch (re-delivered samples
            // are accepted as duplicates).
            crate::metrics::count_append(&report);
            return Err(read_error(e));
        }
        crate::metrics::count_append(&report);
        Ok(report)
    }
}

impl Appendable for Tsdb {
    fn append(&self, batch: &[SeriesSamples]) -> Result<AppendReport, StorageError> {
        self.append_with(|head| head.append(batch))
    }

    /// Known series are found from their raw labels by the head's series cache.
    fn append_raw(&self, batch: &RawBatch) -> Result<AppendReport, StorageError> {
        self.append_with(|head| head.append_raw(batch))
    }

    /// Deletes from the head (logged to the WAL) and from the blocks (by tombstones, durable
    /// when written), under the blocks' lock so that a cut or compaction cannot miss it.
    fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<(), StorageError> {
        self.ensure_durable_head()?;
        let blocks_guard = self.blocks_lock.lock().unwrap_or_else(|e| e.into_inner());
        for b in self.blocks_in(mint, maxt) {
            b.delete(matchers, mint, maxt).map_err(read_error)?;
        }
        let seq = {
            let mut head = self.head.write().unwrap_or_else(|e| e.into_inner());
            let before = head.num_series();
            let ids = head.matching(matchers);
            if ids.is_empty() {
                return Ok(());
            }
            let res = head.apply_delete(&ids, mint, maxt);
            crate::metrics::HEAD_SERIES.sub(before as i64 - head.num_series() as i64);
            let mut framed = Vec::new();
            wal::frame(&Record::Delete { ids, mint, maxt }, &mut framed);
            (self.wal.enqueue(&framed), res)
        };
        drop(blocks_guard);
        if let Err(e) = self.wal.wait_durable(seq.0) {
            self.recover(e)?;
        }
        seq.1.map_err(read_error)
    }
}

impl Store for Tsdb {
    /// The head's cardinality (as Prometheus's `headStats`), with the time bounds and chunk
    /// count of the blocks included.
    fn stats(&self, limit: usize) -> Result<StoreStats, StorageError> {
        let mut s = self.read().stats(limit);
        for b in self.blocks() {
            s.chunk_count += b.meta().stats.num_chunks;
            s.min_time = Some(s.min_time.map_or(b.min_t(), |m| m.min(b.min_t())));
            s.max_time = Some(s.max_time.map_or(b.max_t() - 1, |m| m.max(b.max_t() - 1)));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests;

//! The in-memory head of one tenant: series keyed by label sets with interned symbols, the
//! inverted index, compressed chunks with an out-of-order buffer, and the write checks
//! (out-of-order window, duplicates, limits).
//!
//! The head is not durable by itself: [`crate::tsdb::Tsdb`] logs what it accepted to the WAL
//! and replays it with the `apply_*` methods.

mod append;
mod chunks;
mod index;
mod series;
#[cfg(test)]
mod tests;

use rustc_hash::FxHashMap;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;

pub(crate) use chunks::{ChunkData, ChunkStore, DiskRef};
pub(crate) use index::{Index, SeriesId};
pub(crate) use index::{SeriesLabels, Symbols};
pub(crate) use series::{ClosedChunk, MemSeries, Snapshot};

use crate::config::{Limits, TsdbConfig};
use crate::labels::{Labels, METRIC_NAME};
#[cfg(test)]
use crate::storage::SeriesSamples;
use crate::storage::{AppendReport, Matcher, Sample, StoreStats};

/// What an append changed, for the WAL.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    pub(crate) report: AppendReport,
    pub(crate) new_series: Vec<(SeriesId, Labels)>,
    /// Stored samples (not the accepted duplicates).
    pub(crate) samples: Vec<(SeriesId, Sample)>,
    /// A chunk read failed for some samples (they are neither stored nor rejected).
    pub(crate) error: Option<io::Error>,
}

#[derive(Debug)]
pub(crate) struct Head {
    ooo_window: i64,
    retention: i64,
    /// Per-metric retention rules: matchers and milliseconds, first match wins.
    rules: Vec<(Vec<Matcher>, i64)>,
    /// The longest retention of all (samples older than that behind the newest are refused).
    max_retention: i64,
    limits: Limits,
    store: Arc<ChunkStore>,
    symbols: Symbols,
    /// Series by the hash of their labels ([`labels_hash`]); the rare second series with the
    /// same hash is in `collisions`. Keeps one copy of each label set (in its series).
    /// By `labels_hash` (already a good hash, so hashed again cheaply with Fx, not SipHash).
    by_hash: FxHashMap<u64, SeriesId>,
    collisions: HashMap<Labels, SeriesId>,
    series: Vec<Option<MemSeries>>,
    /// Known series by their labels as remote-write encodes them.
    refs: append::RawRefs,
    index: Index,
    per_metric: foldhash::HashMap<Arc<str>, usize>,
    /// Bounds of all samples ever stored (they only widen): a query covering them needs no
    /// per-series time checks.
    min_t: i64,
    max_t: i64,
    /// Samples before this are in blocks: appends of older ones are refused (too old), as
    /// Prometheus refuses samples before the head ("out of bounds").
    min_valid: i64,
}

/// A 64-bit hash of a label set (xxh3 of its names and values with separators).
fn labels_hash(labels: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    for l in labels.iter() {
        h.update(l.name.as_bytes());
        h.update(&[0xff]);
        h.update(l.value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// Why a label set is invalid, if it is.
fn invalid_labels(labels: &Labels, limits: &Limits) -> Option<String> {
    if labels.metric_name().is_none() {
        return Some(format!("series {labels} has no metric name"));
    }
    if labels.len() > limits.max_labels_per_series {
        return Some(format!(
            "series {labels} has {} labels, more than the limit of {}",
            labels.len(),
            limits.max_labels_per_series
        ));
    }
    for l in labels.iter() {
        if l.name.len() > limits.max_label_name_length {
            return Some(format!(
                "series {labels}: label name {:?} is longer than the limit of {} bytes",
                &*l.name, limits.max_label_name_length
            ));
        }
        if l.value.len() > limits.max_label_value_length {
            return Some(format!(
                "series {labels}: the value of label {:?} is longer than the limit of {} bytes",
                &*l.name, limits.max_label_value_length
            ));
        }
        if l.name.is_empty() {
            return Some(format!("series {labels} has an empty label name"));
        }
    }
    None
}

impl Head {
    /// A head keeping closed chunks in `store`.
    pub(crate) fn new(cfg: &TsdbConfig, store: Arc<ChunkStore>) -> Head {
        Head {
            ooo_window: cfg.ooo_window_ms(),
            retention: cfg.retention_ms(),
            rules: cfg.retention_rules(),
            max_retention: cfg
                .retention_rules()
                .iter()
                .map(|r| r.1)
                .chain([cfg.retention_ms()])
                .max()
                .unwrap_or(i64::MAX),
            limits: cfg.limits.clone(),
            store,
            symbols: Symbols::default(),
            by_hash: FxHashMap::default(),
            collisions: HashMap::new(),
            series: Vec::new(),
            refs: append::RawRefs::default(),
            index: Index::default(),
            per_metric: foldhash::HashMap::default(),
            min_t: i64::MAX,
            max_t: i64::MIN,
            min_valid: i64::MIN,
        }
    }

    /// The oldest time the head accepts (the end of the newest block).
    pub(crate) fn min_valid(&self) -> i64 {
        self.min_valid
    }

    /// Refuses samples before `t` from now on (a block covering them is being written).
    pub(crate) fn set_min_valid(&mut self, t: i64) {
        self.min_valid = self.min_valid.max(t);
    }

    /// Removes every sample before `t` (now in a block); returns how many series were
    /// removed. A chunk straddling `t` is rewritten without the older samples; on a read
    /// error that series keeps them (reads de-duplicate them with the block's) and the
    /// error is returned after the others.
    pub(crate) fn truncate_before(&mut self, t: i64) -> (usize, io::Result<()>) {
        self.set_min_valid(t);
        let mut emptied = Vec::new();
        let mut error = None;
        for (i, s) in self.series.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            if s.min_time().is_none_or(|m| m >= t) {
                continue;
            }
            match s.truncate_exact(&self.store, t) {
                Ok(true) => emptied.push(i as SeriesId),
                Ok(false) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let n = emptied.len();
        for id in emptied {
            self.remove_series(id);
        }
        if error.is_none() {
            self.min_t = self.min_t.max(t);
        }
        (n, error.map_or(Ok(()), Err))
    }

    /// The closed chunks stored in chunk files before `file`.
    pub(crate) fn disk_chunks_before(&self, file: u32) -> Vec<(SeriesId, DiskRef)> {
        let mut out = Vec::new();
        for (id, s) in self.iter_series() {
            for c in &s.closed {
                if let ChunkData::Disk(r) = c.data
                    && r.file < file
                {
                    out.push((id, r));
                }
            }
        }
        out
    }

    /// Points closed chunks copied elsewhere at their copy, if they are still where they
    /// were copied from (a delete or merge may have replaced them meanwhile).
    pub(crate) fn relocate(&mut self, moved: &[(SeriesId, DiskRef, DiskRef)]) {
        for (id, from, to) in moved {
            let Some(s) = self.series.get_mut(*id as usize).and_then(Option::as_mut) else {
                continue;
            };
            if let Some(c) = s
                .closed
                .iter_mut()
                .find(|c| matches!(c.data, ChunkData::Disk(r) if r == *from))
            {
                c.data = ChunkData::Disk(*to);
            }
        }
    }

    /// Every series with samples before `maxt`, sorted by labels, with what reading them
    /// needs (for cutting a block without the head's lock).
    pub(crate) fn snapshots_before(&self, maxt: i64) -> Vec<(Labels, Snapshot)> {
        let mut out: Vec<(Labels, Snapshot)> = self
            .iter_series()
            .filter(|(_, s)| s.min_time().is_some_and(|m| m < maxt))
            .map(|(_, s)| {
                (
                    self.symbols.labels(&s.labels),
                    s.snapshot(i64::MIN, maxt - 1),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) fn num_series(&self) -> usize {
        self.index.len()
    }

    /// The id the next new series gets.
    pub(crate) fn next_id(&self) -> SeriesId {
        self.series.len() as SeriesId
    }

    /// Makes sure new series get ids from `next` on.
    pub(crate) fn reserve_ids(&mut self, next: SeriesId) {
        if self.series.len() < next as usize {
            self.series.resize_with(next as usize, || None);
        }
    }

    pub(crate) fn bounds(&self) -> (i64, i64) {
        (self.min_t, self.max_t)
    }

    pub(crate) fn set_bounds(&mut self, min_t: i64, max_t: i64) {
        self.min_t = self.min_t.min(min_t);
        self.max_t = self.max_t.max(max_t);
    }

    /// Live series in id order.
    pub(crate) fn iter_series(&self) -> impl Iterator<Item = (SeriesId, &MemSeries)> {
        self.series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as SeriesId, s)))
    }

    /// The id of the series with exactly these labels.
    fn lookup(&self, labels: &Labels) -> Option<SeriesId> {
        let id = *self.by_hash.get(&labels_hash(labels))?;
        if self
            .get(id)
            .is_some_and(|s| self.symbols.equals(&s.labels, labels))
        {
            return Some(id);
        }
        self.collisions.get(labels).copied()
    }

    fn labels_of(&self, id: SeriesId) -> Labels {
        self.series
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|s| self.symbols.labels(&s.labels))
            .unwrap_or_default()
    }

    /// Adds a series under `id` (new, replayed or loaded from a checkpoint).
    pub(crate) fn insert_series(&mut self, id: SeriesId, labels: &Labels, mut series: MemSeries) {
        if let Some(old) = self.lookup(labels) {
            if old == id {
                return;
            }
            self.remove_series(old);
        }
        // A series replaced under the same id gives its symbols back.
        if let Some(old) = self.series.get_mut(id as usize).and_then(Option::take) {
            self.unlink(id, &old.labels);
        }
        series.labels = self.symbols.intern_labels(labels);
        let i = id as usize;
        if self.series.len() <= i {
            self.series.resize_with(i + 1, || None);
        }
        if let Some(name) = labels.metric_name() {
            *self.per_metric.entry(Arc::from(name)).or_default() += 1;
        }
        self.index.add(id, labels);
        let h = labels_hash(labels);
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.insert(labels.clone(), id);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(id);
            }
        }
        self.series[i] = Some(series);
    }

    fn remove_series(&mut self, id: SeriesId) {
        let Some(series) = self.series.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.unlink(id, &series.labels);
    }

    /// Removes a series' labels from the index, the series cache, the hash maps and the
    /// symbols.
    fn unlink(&mut self, id: SeriesId, interned: &SeriesLabels) {
        let labels = self.symbols.labels(interned);
        self.index.remove(id, &labels);
        self.refs.remove(&labels, id);
        let h = labels_hash(&labels);
        if self.by_hash.get(&h) == Some(&id) {
            self.by_hash.remove(&h);
            // A colliding series takes the hash's main slot.
            let moved = self
                .collisions
                .iter()
                .find(|(l, _)| labels_hash(l) == h)
                .map(|(l, i)| (l.clone(), *i));
            if let Some((l, i)) = moved {
                self.collisions.remove(&l);
                self.by_hash.insert(h, i);
            }
        } else {
            self.collisions.remove(&labels);
        }
        self.symbols.release_labels(interned);
        if let Some(name) = labels.metric_name()
            && let Some(n) = self.per_metric.get_mut(name)
        {
            *n -= 1;
            if *n == 0 {
                self.per_metric.remove(name);
            }
        }
    }

    /// Replays a stored sample (accepted before: no checks); returns false for a sample
    /// already in a block (the WAL outlived a cut that crashed before its checkpoint).
    pub(crate) fn apply_sample(&mut self, id: SeriesId, s: Sample) -> bool {
        if s.t < self.min_valid {
            return false;
        }
        if let Some(series) = self.series.get_mut(id as usize).and_then(Option::as_mut) {
            if let Err(e) = series.append(&self.store, s.t, s.v, self.ooo_window, false) {
                tracing::error!(error = %e, series = %self.symbols.labels(&series.labels), "tsdb: replaying a sample failed");
            }
            self.min_t = self.min_t.min(s.t);
            self.max_t = self.max_t.max(s.t);
        }
        true
    }

    /// Removes series without samples (a replayed series record whose samples were torn off).
    pub(crate) fn drop_empty_series(&mut self) {
        let empty: Vec<SeriesId> = self
            .iter_series()
            .filter(|(_, s)| s.is_empty())
            .map(|(id, _)| id)
            .collect();
        for id in empty {
            self.remove_series(id);
        }
    }

    /// The ids of the series matching every matcher.
    pub(crate) fn matching(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        self.index.select(matchers)
    }

    /// Deletes samples in `mint..=maxt` of the series `ids`; series it empties are removed.
    /// A read error leaves the failing series unchanged and is returned after the others.
    pub(crate) fn apply_delete(
        &mut self,
        ids: &[SeriesId],
        mint: i64,
        maxt: i64,
    ) -> io::Result<()> {
        let mut emptied = Vec::new();
        let mut error = None;
        for id in ids {
            if let Some(series) = self.series.get_mut(*id as usize).and_then(Option::as_mut) {
                // A series empty before (in a replay, its samples were in a block) stays: later
                // records may add samples under its id.
                let was_empty = series.is_empty();
                if let Err(e) = series.delete(&self.store, mint, maxt) {
                    error.get_or_insert(e);
                }
                if !was_empty && series.is_empty() {
                    emptied.push(*id);
                }
            }
        }
        for id in emptied {
            self.remove_series(id);
        }
        error.map_or(Ok(()), Err)
    }

    /// Drops chunks older than the retention behind the newest sample; returns how many
    /// series were removed.
    pub(crate) fn apply_retention(&mut self) -> usize {
        if self.max_t == i64::MIN {
            return 0;
        }
        if self.rules.is_empty() {
            return self.drop_before(self.max_t.saturating_sub(self.retention));
        }
        // Each series' cutoff: the first rule matching it, else the default.
        let mut cutoffs: HashMap<SeriesId, i64> = HashMap::new();
        for (matchers, keep) in &self.rules {
            for id in self.index.select(matchers) {
                cutoffs
                    .entry(id)
                    .or_insert(self.max_t.saturating_sub(*keep));
            }
        }
        let default = self.max_t.saturating_sub(self.retention);
        self.drop_where(|id| cutoffs.get(&id).copied().unwrap_or(default))
    }

    /// Drops whole chunks that end before `cutoff`; returns how many series were removed.
    pub(crate) fn drop_before(&mut self, cutoff: i64) -> usize {
        self.drop_where(|_| cutoff)
    }

    /// Drops whole chunks that end before each series' cutoff; returns how many series were
    /// removed.
    fn drop_where(&mut self, cutoff_of: impl Fn(SeriesId) -> i64) -> usize {
        let mut emptied = Vec::new();
        for (i, s) in self.series.iter_mut().enumerate() {
            let cutoff = cutoff_of(i as SeriesId);
            if let Some(s) = s
                && s.min_time().is_some_and(|m| m < cutoff)
                && s.truncate_before(cutoff)
            {
                emptied.push(i as SeriesId);
            }
        }
        let n = emptied.len();
        for id in emptied {
            self.remove_series(id);
        }
        n
    }

    /// Oldest sample time and the bytes of the compressed chunks (in files or memory).
    pub(crate) fn usage(&self) -> (Option<i64>, u64) {
        let mut min: Option<i64> = None;
        let mut bytes = 0u64;
        for (_, s) in self.iter_series() {
            if let Some(m) = s.min_time() {
                min = Some(min.map_or(m, |x| x.min(m)));
            }
            bytes += s.chunk_bytes();
        }
        (min, bytes)
    }

    /// The earliest time at which a series' oldest chunk ends.
    pub(crate) fn first_chunk_end(&self) -> Option<i64> {
        self.iter_series()
            .filter_map(|(_, s)| match s.closed.first() {
                Some(c) => Some(c.max_t),
                None => s.last.map(|l| l.t),
            })
            .min()
    }

    /// Folds every out-of-order buffer into its chunks (before a checkpoint).
    pub(crate) fn merge_ooo(&mut self) {
        for s in self.series.iter_mut().flatten() {
            if let Err(e) = s.merge_ooo(&self.store) {
                tracing::error!(error = %e, series = %self.symbols.labels(&s.labels), "tsdb: merging out-of-order samples failed");
            }
        }
    }

    /// The symbols the series' labels are interned in.
    pub(crate) fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    pub(crate) fn store(&self) -> Arc<ChunkStore> {
        self.store.clone()
    }

    fn covers(&self, mint: i64, maxt: i64) -> bool {
        mint <= self.min_t && maxt >= self.max_t
    }

    fn get(&self, id: SeriesId) -> Option<&MemSeries> {
        self.series.get(id as usize).and_then(Option::as_ref)
    }

    /// Selects under the caller's lock (tests; the store decodes without it).
    #[cfg(test)]
    pub(crate) fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<SeriesSamples>> {
        let mut out = Vec::new();
        for (labels, snap) in self.snapshots(matchers, mint, maxt) {
            let samples = snap.samples(&self.store)?;
            if !samples.is_empty() {
                out.push(SeriesSamples { labels, samples });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The matching series with what reading `mint..=maxt` of them needs, for decoding
    /// without the head's lock ([`Snapshot::samples`] with [`Head::store`]).
    pub(crate) fn snapshots(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(Labels, Snapshot)> {
        self.matching(matchers)
            .into_iter()
            .filter_map(|id| self.get(id))
            .filter(|s| {
                s.last.is_some_and(|l| l.t >= mint) && s.min_time().is_some_and(|m| m <= maxt)
            })
            .map(|s| (self.symbols.labels(&s.labels), s.snapshot(mint, maxt)))
            .collect()
    }

    fn matching_in_range(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<&MemSeries>> {
        let all = self.covers(mint, maxt);
        let mut out = Vec::new();
        for s in self
            .matching(matchers)
            .into_iter()
            .filter_map(|id| self.get(id))
        {
            if all || s.has_samples_in(&self.store, mint, maxt)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    pub(crate) fn series_labels(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<Labels>> {
        let mut out: Vec<Labels> = self
            .matching_in_range(matchers, mint, maxt)?
            .into_iter()
            .map(|s| self.symbols.labels(&s.labels))
            .collect();
        out.sort();
        Ok(out)
    }

    pub(crate) fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<String>> {
        if matchers.is_empty() && self.covers(mint, maxt) {
            return Ok(self.index.names());
        }
        let mut names = BTreeSet::new();
        for s in self.matching_in_range(matchers, mint, maxt)? {
            for name in self.symbols.names(&s.labels) {
                if !names.contains(name) {
                    names.insert(name.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    pub(crate) fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<String>> {
        if matchers.is_empty() && self.covers(mint, maxt) {
            return Ok(self.index.values(name));
        }
        let mut values = BTreeSet::new();
        for s in self.matching_in_range(matchers, mint, maxt)? {
            if let Some(v) = self.symbols.get(&s.labels, name)
                && !values.contains(v)
            {
                values.insert(v.to_string());
            }
        }
        Ok(values.into_iter().collect())
    }

    /// Cardinality figures from the index (Prometheus's head statistics).
    pub(crate) fn stats(&self, limit: usize) -> StoreStats {
        let mut by_metric = Vec::new();
        let mut value_counts = Vec::new();
        let mut memory = Vec::new();
        let mut pairs = Vec::new();
        let mut num_label_pairs = 0u64;
        for (name, values) in self.index.postings() {
            value_counts.push((name.to_string(), values.len() as u64));
            let mut size = 0u64;
            for (value, ids) in values {
                let n = ids.len() as u64;
                if &**name == METRIC_NAME {
                    by_metric.push((value.to_string(), n));
                }
                pairs.push((format!("{name}={value}"), n));
                size += value.len() as u64 * n;
                num_label_pairs += 1;
            }
            memory.push((name.to_string(), size));
        }
        let top = |mut v: Vec<(String, u64)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(limit);
            v
        };
        let mut chunk_count = 0u64;
        let mut bounds: Option<(i64, i64)> = None;
        for (_, s) in self.iter_series() {
            chunk_count += s.chunk_count() as u64;
            if let (Some(lo), Some(hi)) = (s.min_time(), s.last.map(|l| l.t)) {
                bounds = Some(match bounds {
                    None => (lo, hi),
                    Some((a, b)) => (a.min(lo), b.max(hi)),
                });
            }
        }
        StoreStats {
            num_series: self.index.len() as u64,
            num_label_pairs,
            chunk_count,
            min_time: bounds.map(|b| b.0),
            max_time: bounds.map(|b| b.1),
            series_count_by_metric_name: top(by_metric),
            label_value_count_by_label_name: top(value_counts),
            memory_in_bytes_by_label_name: top(memory),
            series_count_by_label_value_pair: top(pairs),
        }
    }
}

//! One series in the head: closed chunks, the open chunk, and the out-of-order buffer.

use std::io;

use thin_vec::ThinVec;

use super::chunks::{ChunkData, ChunkStore};
use super::index::SeriesLabels;
use crate::chunk::{Chunk, ChunkRef, SAMPLES_PER_CHUNK};
use crate::storage::Sample;

/// Out-of-order samples kept beside the chunks before they are merged into them.
const OOO_MERGE_AT: usize = SAMPLES_PER_CHUNK as usize / 4;

/// A closed, immutable chunk.
#[derive(Clone, Debug)]
pub(crate) struct ClosedChunk {
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) data: ChunkData,
}

impl ClosedChunk {
    pub(crate) fn new(c: &Chunk, store: &ChunkStore) -> ClosedChunk {
        ClosedChunk {
            min_t: c.min_time(),
            max_t: c.max_time(),
            data: store.put(c.sealed()),
        }
    }

    /// The chunk's samples.
    fn samples(&self, store: &ChunkStore) -> io::Result<Vec<Sample>> {
        let b = store.get(&self.data)?;
        let c = ChunkRef::new(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(c.iter().collect())
    }
}

/// All samples of `chunks` in order.
fn decode_all(chunks: &[ClosedChunk], store: &ChunkStore) -> io::Result<Vec<Sample>> {
    let mut out = Vec::with_capacity(chunks.len() * usize::from(SAMPLES_PER_CHUNK));
    for c in chunks {
        out.extend(c.samples(store)?);
    }
    Ok(out)
}

/// The chunks of one series overlapping a time range (see [`MemSeries::snapshot`]).
#[derive(Debug)]
pub(crate) struct Snapshot {
    mint: i64,
    maxt: i64,
    closed: Vec<ClosedChunk>,
    open: Option<Chunk>,
    ooo: Vec<Sample>,
}

impl Snapshot {
    /// The chunks a read decodes (a measure of its work).
    pub(crate) fn chunks(&self) -> usize {
        self.closed.len() + usize::from(self.open.is_some())
    }

    /// Decodes the samples in the range. A chunk whose file retention removed meanwhile is
    /// skipped (its samples are gone).
    pub(crate) fn samples(&self, store: &ChunkStore) -> io::Result<Vec<Sample>> {
        let (mint, maxt) = (self.mint, self.maxt);
        // Every closed chunk holds at most SAMPLES_PER_CHUNK samples: one allocation.
        let open = self.open.as_ref().map_or(0, Chunk::len);
        let mut out = Vec::with_capacity(self.closed.len() * usize::from(SAMPLES_PER_CHUNK) + open);
        for c in &self.closed {
            let b = match store.get(&c.data) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let r = ChunkRef::new(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            r.iter().decode_into(mint, maxt, &mut out);
        }
        if let Some(open) = &self.open {
            open.iter().decode_into(mint, maxt, &mut out);
        }
        if !self.ooo.is_empty() {
            out = merge(out, &self.ooo);
        }
        Ok(out)
    }
}

/// Where an appended sample went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placed {
    /// Stored (in order or in the out-of-order buffer).
    Stored,
    /// The same sample was already stored: nothing to do.
    Duplicate,
    /// A different value exists at that time.
    Conflict,
    /// Older than the series' newest sample by more than the window.
    TooOld,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct MemSeries {
    /// Interned in the head's symbols (set when the head inserts the series).
    pub(crate) labels: SeriesLabels,
    // `ThinVec`s (one pointer; their length lives in the allocation, and an empty one has
    // none): 32 bytes less per series than two `Vec`s, and most series' out-of-order buffer
    // is empty.
    pub(crate) closed: ThinVec<ClosedChunk>,
    pub(crate) open: Chunk,
    /// Samples older than the newest, sorted by time, not in any chunk.
    pub(crate) ooo: ThinVec<Sample>,
    /// The newest sample.
    pub(crate) last: Option<Sample>,
}

impl MemSeries {
    pub(crate) fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    pub(crate) fn min_time(&self) -> Option<i64> {
        let chunks = self
            .closed
            .first()
            .map(|c| c.min_t)
            .or((!self.open.is_empty()).then(|| self.open.min_time()));
        match (chunks, self.ooo.first()) {
            (Some(a), Some(b)) => Some(a.min(b.t)),
            (a, b) => a.or(b.map(|s| s.t)),
        }
    }

    /// Bytes of the compressed chunks (and 16 per buffered out-of-order sample).
    pub(crate) fn chunk_bytes(&self) -> u64 {
        let closed: u64 = self
            .closed
            .iter()
            .map(|c| match &c.data {
                ChunkData::Mem(b) => b.len() as u64,
                ChunkData::Disk(r) => u64::from(r.len),
            })
            .sum();
        closed + self.open.size() as u64 + 16 * self.ooo.len() as u64
    }

    pub(crate) fn chunk_count(&self) -> usize {
        self.closed.len() + usize::from(!self.open.is_empty())
    }

    /// Appends a sample; `window` is how far behind the newest sample a sample may be.
    /// `check_window` is off during replay (the sample was accepted before).
    pub(crate) fn append(
        &mut self,
        store: &ChunkStore,
        t: i64,
        v: f64,
        window: i64,
        check_window: bool,
    ) -> io::Result<Placed> {
        let Some(last) = self.last else {
            self.push(store, t, v);
            return Ok(Placed::Stored);
        };
        if t > last.t {
            self.push(store, t, v);
            return Ok(Placed::Stored);
        }
        let same = |old: f64| {
            if old.to_bits() == v.to_bits() {
                Placed::Duplicate
            } else {
                Placed::Conflict
            }
        };
        if t == last.t {
            return Ok(same(last.v));
        }
        // A stored sample re-delivered (at-least-once consumers, retrying senders) is accepted
        // however old; only new samples must be inside the window.
        if let Some(old) = self.value_at(store, t)? {
            return Ok(same(old));
        }
        if check_window && t < last.t.saturating_sub(window) {
            return Ok(Placed::TooOld);
        }
        let i = self.ooo.partition_point(|s| s.t < t);
        self.ooo.insert(i, Sample { t, v });
        if self.ooo.len() >= OOO_MERGE_AT {
            self.merge_ooo(store)?;
        }
        Ok(Placed::Stored)
    }

    fn push(&mut self, store: &ChunkStore, t: i64, v: f64) {
        if self.open.is_full() {
            self.closed.push(ClosedChunk::new(&self.open, store));
            self.open = Chunk::default();
        }
        self.open.append(t, v);
        self.last = Some(Sample { t, v });
    }

    /// The stored value at `t`, if any.
    fn value_at(&self, store: &ChunkStore, t: i64) -> io::Result<Option<f64>> {
        if let Ok(i) = self.ooo.binary_search_by_key(&t, |s| s.t) {
            return Ok(Some(self.ooo[i].v));
        }
        for c in self.closed.iter().rev() {
            if c.max_t < t {
                break;
            }
            if c.min_t <= t
                && let Some(s) = c.samples(store)?.into_iter().find(|s| s.t == t)
            {
                return Ok(Some(s.v));
            }
        }
        if !self.open.is_empty() && self.open.min_time() <= t {
            return Ok(self.open.iter().find(|s| s.t == t).map(|s| s.v));
        }
        Ok(None)
    }

    /// Folds the out-of-order buffer into the chunks: the chunks from the first one it
    /// overlaps on are rewritten. On a read error nothing changes.
    pub(crate) fn merge_ooo(&mut self, store: &ChunkStore) -> io::Result<()> {
        if self.ooo.is_empty() {
            return Ok(());
        }
        let from_t = self.ooo[0].t;
        let keep = self.closed.partition_point(|c| c.max_t < from_t);
        let mut samples = decode_all(&self.closed[keep..], store)?;
        samples.extend(self.open.iter());
        let ooo = std::mem::take(&mut self.ooo);
        samples = merge(samples, &ooo);
        self.closed.truncate(keep);
        self.rechunk(store, &samples)
    }

    /// Replaces the chunks after `self.closed` with `samples` (sorted).
    fn rechunk(&mut self, store: &ChunkStore, samples: &[Sample]) -> io::Result<()> {
        let per = usize::from(SAMPLES_PER_CHUNK);
        let mut parts = samples.chunks(per).peekable();
        self.open = Chunk::default();
        while let Some(part) = parts.next() {
            let c = Chunk::from_samples(part);
            if parts.peek().is_some() {
                self.closed.push(ClosedChunk::new(&c, store));
            } else {
                self.open = c;
            }
        }
        self.last = match samples.last() {
            Some(s) => Some(*s),
            None => match self.closed.last() {
                Some(c) => c.samples(store)?.last().copied(),
                None => None,
            },
        };
        Ok(())
    }

    /// Samples in `mint..=maxt`, in time order.
    pub(crate) fn samples(
        &self,
        store: &ChunkStore,
        mint: i64,
        maxt: i64,
    ) -> io::Result<Vec<Sample>> {
        self.snapshot(mint, maxt).samples(store)
    }

    /// What a read of `mint..=maxt` needs, copied so that it can be decoded without the
    /// head's lock.
    pub(crate) fn snapshot(&self, mint: i64, maxt: i64) -> Snapshot {
        let from = self.closed.partition_point(|c| c.max_t < mint);
        let to = from + self.closed[from..].partition_point(|c| c.min_t <= maxt);
        let open =
            (!self.open.is_empty() && self.open.min_time() <= maxt && self.open.max_time() >= mint)
                .then(|| self.open.clone());
        let lo = self.ooo.partition_point(|s| s.t < mint);
        let hi = self.ooo.partition_point(|s| s.t <= maxt);
        Snapshot {
            mint,
            maxt,
            closed: self.closed[from..to].to_vec(),
            open,
            ooo: self.ooo[lo..hi.max(lo)].to_vec(),
        }
    }

    /// Whether any sample lies in `mint..=maxt`.
    pub(crate) fn has_samples_in(
        &self,
        store: &ChunkStore,
        mint: i64,
        maxt: i64,
    ) -> io::Result<bool> {
        let Some(last) = self.last else {
            return Ok(false);
        };
        match self.min_time() {
            Some(min) if min >= mint && last.t <= maxt => Ok(true),
            Some(min) if min > maxt || last.t < mint => Ok(false),
            _ => Ok(!self.samples(store, mint, maxt)?.is_empty()),
        }
    }

    /// Removes samples in `mint..=maxt`; on a read error nothing changes.
    pub(crate) fn delete(&mut self, store: &ChunkStore, mint: i64, maxt: i64) -> io::Result<()> {
        let Some(last) = self.last else {
            return Ok(());
        };
        match self.min_time() {
            Some(min) if min > maxt || last.t < mint => return Ok(()),
            _ => {}
        }
        self.merge_ooo(store)?;
        let keep = self.closed.partition_point(|c| c.max_t < mint);
        let mut before = decode_all(&self.closed[keep..], store)?;
        before.extend(self.open.iter());
        let n = before.len();
        before.retain(|s| s.t < mint || s.t > maxt);
        if before.len() == n {
            return Ok(());
        }
        self.closed.truncate(keep);
        self.last = None;
        self.rechunk(store, &before)
    }

    /// Removes every sample before `t`, rewriting the chunk that straddles it; returns whether
    /// the series is now empty. On a read error nothing changes.
    pub(crate) fn truncate_exact(&mut self, store: &ChunkStore, t: i64) -> io::Result<bool> {
        let Some(last) = self.last else {
            return Ok(true);
        };
        if last.t < t {
            self.closed.clear();
            self.open = Chunk::default();
            self.ooo.clear();
            self.last = None;
            return Ok(true);
        }
        let n = self.closed.partition_point(|c| c.max_t < t);
        if let Some(first) = self.closed.get(n)
            && first.min_t < t
        {
            let kept: Vec<Sample> = first
                .samples(store)?
                .into_iter()
                .filter(|s| s.t >= t)
                .collect();
            let replaced =
                (!kept.is_empty()).then(|| ClosedChunk::new(&Chunk::from_samples(&kept), store));
            self.closed.drain(..n);
            match replaced {
                Some(c) => self.closed[0] = c,
                None => {
                    self.closed.remove(0);
                }
            }
        } else {
            self.closed.drain(..n);
        }
        if self.closed.is_empty() && !self.open.is_empty() && self.open.min_time() < t {
            let kept: Vec<Sample> = self.open.iter().filter(|s| s.t >= t).collect();
            self.open = Chunk::from_samples(&kept);
        }
        self.ooo.retain(|s| s.t >= t);
        Ok(false)
    }

    /// Drops whole chunks (and buffered samples) that end before `t`; returns whether the
    /// series is now empty.
    pub(crate) fn truncate_before(&mut self, t: i64) -> bool {
        let n = self.closed.partition_point(|c| c.max_t < t);
        self.closed.drain(..n);
        self.ooo.retain(|s| s.t >= t);
        if !self.open.is_empty() && self.open.max_time() < t && self.closed.is_empty() {
            self.open = Chunk::default();
            if self.ooo.is_empty() {
                self.last = None;
            }
        }
        self.is_empty()
    }
}

/// Merges two sorted sample lists with distinct times.
fn merge(a: Vec<Sample>, b: &[Sample]) -> Vec<Sample> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].t <= b[j].t {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

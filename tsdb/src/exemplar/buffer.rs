//! One tenant's exemplars in a circular buffer of fixed capacity, as Prometheus's
//! `CircularExemplarStorage`: the newest exemplar overwrites the oldest stored one (in order
//! of arrival, whatever its series); each series' exemplars form a doubly linked list in time
//! order through the buffer, reached from an index by series labels.
//!
//! The buffer grows up to its capacity as exemplars arrive rather than being allocated whole,
//! so that a tenant with few exemplars costs little.

use std::collections::HashMap;

use super::{Exemplar, ExemplarReject, MAX_LABEL_RUNES, SeriesExemplars};
use crate::labels::Labels;
use crate::storage::Matcher;

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Entry {
    ex: Exemplar,
    /// The series' slot in `series`.
    series: u32,
    prev: u32,
    next: u32,
}

#[derive(Debug)]
struct SeriesEntry {
    labels: Labels,
    oldest: u32,
    newest: u32,
}

/// The circular buffer. Not synchronised: the owner locks it.
#[derive(Debug)]
pub struct ExemplarBuffer {
    capacity: usize,
    /// Exemplars up to this far behind a series' newest are still inserted in time order.
    ooo_window_ms: i64,
    entries: Vec<Entry>,
    /// The slot the next exemplar takes (the oldest one, once the buffer is full).
    next: usize,
    index: HashMap<Labels, u32>,
    series: Vec<Option<SeriesEntry>>,
    free_series: Vec<u32>,
}

impl ExemplarBuffer {
    /// A buffer of at most `capacity` exemplars (0 disables it; capped at `u32::MAX - 1`).
    pub fn new(capacity: usize, ooo_window_ms: i64) -> ExemplarBuffer {
        ExemplarBuffer {
            capacity: capacity.min((NONE - 1) as usize),
            ooo_window_ms: ooo_window_ms.max(0),
            entries: Vec::new(),
            next: 0,
            index: HashMap::new(),
            series: Vec::new(),
            free_series: Vec::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Exemplars stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Series with exemplars stored.
    pub fn num_series(&self) -> usize {
        self.index.len()
    }

    fn entry(&self, i: u32) -> &Entry {
        &self.entries[i as usize]
    }

    fn entry_mut(&mut self, i: u32) -> &mut Entry {
        &mut self.entries[i as usize]
    }

    fn series_of(&self, s: u32) -> Option<&SeriesEntry> {
        self.series.get(s as usize).and_then(Option::as_ref)
    }

    fn series_mut(&mut self, s: u32) -> Option<&mut SeriesEntry> {
        self.series.get_mut(s as usize).and_then(Option::as_mut)
    }

    /// Why `e` would not be stored for the series `series`, if it would not.
    fn check(&self, series: Option<u32>, e: &Exemplar) -> Result<(), ExemplarReject> {
        if self.capacity == 0 {
            return Err(ExemplarReject::Disabled);
        }
        if e.label_runes() > MAX_LABEL_RUNES {
            return Err(ExemplarReject::LabelLength);
        }
        let Some(s) = series.and_then(|s| self.series_of(s)) else {
            return Ok(());
        };
        let newest = &self.entry(s.newest).ex;
        if newest.same_as(e) {
            return Err(ExemplarReject::Duplicate);
        }
        // Exemplars at the same time are ordered by value, then labels, so that a repeated one
        // is found without walking the list (native histograms have several per time).
        let ooo = (e.t < newest.t && e.t <= newest.t.saturating_sub(self.ooo_window_ms))
            || (e.t == newest.t && e.value < newest.value)
            || (e.t == newest.t && e.value == newest.value && e.labels < newest.labels);
        if ooo {
            return Err(ExemplarReject::OutOfOrder);
        }
        Ok(())
    }

    /// The newest exemplar of series `s` at or before `t` (the oldest when none is).
    fn insertion_point(&self, s: &SeriesEntry, t: i64) -> u32 {
        let mut i = s.newest;
        while i != NONE {
            let e = self.entry(i);
            if e.ex.t <= t {
                return i;
            }
            i = e.prev;
        }
        s.oldest
    }

    /// Stores `e` for the series `labels`, evicting the oldest exemplar when full.
    pub fn add(&mut self, labels: &Labels, e: Exemplar) -> Result<(), ExemplarReject> {
        let mut sid = self.index.get(labels).copied();
        self.check(sid, &e)?;
        if let Some(s) = sid.and_then(|s| self.series_of(s)) {
            let (oldest_t, newest_t) = (self.entry(s.oldest).ex.t, self.entry(s.newest).ex.t);
            if e.t >= oldest_t && e.t < newest_t {
                let at = self.insertion_point(s, e.t);
                if self.entry(at).ex.t == e.t {
                    // One already at this time: taken as the same (Prometheus does not compare
                    // further here either).
                    return Err(ExemplarReject::Duplicate);
                }
            }
        }
        let slot = if self.entries.len() < self.capacity {
            u32::try_from(self.entries.len()).unwrap_or(NONE)
        } else {
            let slot = u32::try_from(self.next).unwrap_or(NONE);
            self.unlink(slot);
            slot
        };
        // The eviction may have emptied this very series.
        if sid.is_some_and(|s| self.series_of(s).is_none()) {
            sid = None;
        }
        let s = match sid {
            Some(s) => s,
            None => self.new_series(labels),
        };
        let entry = Entry {
            ex: e,
            series: s,
            prev: NONE,
            next: NONE,
        };
        if (slot as usize) == self.entries.len() {
            self.entries.push(entry);
        } else {
            self.entries[slot as usize] = entry;
        }
        self.link(s, slot);
        self.next = (slot as usize + 1) % self.capacity.max(1);
        Ok(())
    }

    fn new_series(&mut self, labels: &Labels) -> u32 {
        let entry = SeriesEntry {
            labels: labels.clone(),
            oldest: NONE,
            newest: NONE,
        };
        let s = match self.free_series.pop() {
            Some(s) => {
                self.series[s as usize] = Some(entry);
                s
            }
            None => {
                self.series.push(Some(entry));
                u32::try_from(self.series.len() - 1).unwrap_or(NONE)
            }
        };
        self.index.insert(labels.clone(), s);
        s
    }

    /// Links the exemplar in `slot` into its series' list, in time order.
    fn link(&mut self, s: u32, slot: u32) {
        let t = self.entry(slot).ex.t;
        let Some(se) = self.series_of(s) else {
            return;
        };
        let (oldest, newest) = (se.oldest, se.newest);
        if newest == NONE {
            if let Some(se) = self.series_mut(s) {
                se.oldest = slot;
                se.newest = slot;
            }
        } else if t >= self.entry(newest).ex.t {
            self.entry_mut(newest).next = slot;
            self.entry_mut(slot).prev = newest;
            if let Some(se) = self.series_mut(s) {
                se.newest = slot;
            }
        } else if t < self.entry(oldest).ex.t {
            self.entry_mut(oldest).prev = slot;
            self.entry_mut(slot).next = oldest;
            if let Some(se) = self.series_mut(s) {
                se.oldest = slot;
            }
        } else {
            let at = match self.series_of(s) {
                Some(se) => self.insertion_point(se, t),
                None => return,
            };
            let after = self.entry(at).next;
            self.entry_mut(slot).prev = at;
            self.entry_mut(slot).next = after;
            self.entry_mut(at).next = slot;
            if after != NONE {
                self.entry_mut(after).prev = slot;
            }
        }
    }

    /// Takes the exemplar in `slot` out of its series' list; forgets a series left empty.
    fn unlink(&mut self, slot: u32) {
        let (s, prev, next) = {
            let e = self.entry(slot);
            (e.series, e.prev, e.next)
        };
        if prev != NONE {
            self.entry_mut(prev).next = next;
        }
        if next != NONE {
            self.entry_mut(next).prev = prev;
        }
        let Some(se) = self.series_mut(s) else {
            return;
        };
        if se.oldest == slot {
            se.oldest = next;
        }
        if se.newest == slot {
            se.newest = prev;
        }
        if se.oldest == NONE {
            let labels = se.labels.clone();
            self.series[s as usize] = None;
            self.free_series.push(s);
            self.index.remove(&labels);
        }
        let e = self.entry_mut(slot);
        e.series = NONE;
        e.prev = NONE;
        e.next = NONE;
    }

    /// Exemplars in `mint..=maxt` of the series matching every matcher of at least one set,
    /// sorted by series labels, each series' exemplars in time order.
    pub fn select(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<SeriesExemplars> {
        let mut out = Vec::new();
        for se in self.series.iter().flatten() {
            if self.entry(se.oldest).ex.t > maxt || self.entry(se.newest).ex.t < mint {
                continue;
            }
            if !sets
                .iter()
                .any(|set| set.iter().all(|m| m.matches_labels(&se.labels)))
            {
                continue;
            }
            let mut exemplars = Vec::new();
            let mut i = se.oldest;
            while i != NONE {
                let e = self.entry(i);
                if e.ex.t > maxt {
                    break;
                }
                if e.ex.t >= mint {
                    exemplars.push(e.ex.clone());
                }
                i = e.next;
            }
            if !exemplars.is_empty() {
                out.push(SeriesExemplars {
                    labels: se.labels.clone(),
                    exemplars,
                });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Every stored exemplar with its series' labels, oldest arrival first (replaying them into
    /// an empty buffer of the same capacity rebuilds this one).
    pub fn iter_arrival(&self) -> impl Iterator<Item = (&Labels, &Exemplar)> {
        let n = self.entries.len();
        let start = if n < self.capacity { 0 } else { self.next };
        (0..n).filter_map(move |k| {
            let e = &self.entries[(start + k) % n];
            let s = self.series_of(e.series)?;
            Some((&s.labels, &e.ex))
        })
    }
}

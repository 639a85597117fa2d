//! Appends: the write checks sample by sample, and the series cache that finds a known series
//! from its labels as remote-write 1.0 encodes them, as VictoriaMetrics finds a TSID from a
//! metric name, without building a label set.

use rustc_hash::FxHashMap;

use super::series::Placed;
use super::{Appended, Head, SeriesId, invalid_labels};
use crate::labels::Labels;
use crate::raw::{RawBatch, SpanKey, encode_labels, span_key};
use crate::storage::{RejectReason, Sample, SeriesSamples};

/// The series cache: series by a seeded 128-bit hash of their encoded label fields.
///
/// An entry is made only for a series whose labels passed the checks (validity, limits) when
/// a request's encoded labels were byte for byte the canonical encoding of the stored set
/// ([`encode_labels`]), so that removing the series finds and removes its entry (by encoding
/// the stored labels). A hit is used only while its series exists. Two label sets sharing a
/// 128-bit [`span_key`] (about 2^-88 for a million series, with a seed the senders do not
/// know) are the one risk taken; comparing the labels instead cost as much as the rest of a cached
/// series' append.
#[derive(Debug, Default)]
pub(super) struct RawRefs {
    /// The key's low half → its high half and the series.
    map: FxHashMap<u64, (u64, SeriesId)>,
    scratch: Vec<u8>,
}

impl RawRefs {
    fn get(&self, key: SpanKey) -> Option<SeriesId> {
        match self.map.get(&key.0) {
            Some((hi, id)) if *hi == key.1 => Some(*id),
            _ => None,
        }
    }

    /// Caches `id` under `key` if `encoded` is the canonical encoding of `labels`.
    fn insert(&mut self, key: SpanKey, encoded: &[u8], labels: &Labels, id: SeriesId) {
        self.scratch.clear();
        encode_labels(labels, &mut self.scratch);
        if self.scratch == encoded {
            self.map.insert(key.0, (key.1, id));
        }
    }

    /// Forgets series `id` (with these labels), if cached.
    pub(super) fn remove(&mut self, labels: &Labels, id: SeriesId) {
        if self.map.is_empty() {
            return;
        }
        self.scratch.clear();
        encode_labels(labels, &mut self.scratch);
        let key = span_key(&self.scratch);
        if self.get(key) == Some(id) {
            self.map.remove(&key.0);
        }
    }
}

impl Head {
    /// Samples older than this are refused: older than the longest retention behind the
    /// newest sample.
    fn too_old_before(&self) -> i64 {
        if self.max_t == i64::MIN {
            i64::MIN
        } else {
            self.max_t.saturating_sub(self.max_retention)
        }
    }

    /// Checks and stores a batch; rejected samples are reported one by one.
    pub(crate) fn append(&mut self, batch: &[SeriesSamples]) -> Appended {
        let mut out = Appended::default();
        let too_old_before = self.too_old_before();
        for s in batch {
            if s.samples.is_empty() {
                continue;
            }
            if let Some(msg) = invalid_labels(&s.labels, &self.limits) {
                for _ in &s.samples {
                    out.report
                        .reject(RejectReason::InvalidLabels, || msg.clone());
                }
                continue;
            }
            let id = self.lookup(&s.labels);
            self.append_series(Some(&s.labels), id, &s.samples, too_old_before, &mut out);
        }
        out
    }

    /// [`Head::append`] for series with raw labels: a series in the cache costs a hash of its
    /// encoded labels and a lookup; others get their labels checked and built as in
    /// [`Head::append`], and are cached.
    pub(crate) fn append_raw(&mut self, batch: &RawBatch) -> Appended {
        let mut out = Appended::default();
        out.samples.reserve(batch.num_samples());
        let too_old_before = self.too_old_before();
        for s in batch.iter() {
            if s.samples.is_empty() {
                continue;
            }
            let key = s.key;
            if let Some(id) = key.and_then(|k| self.refs.get(k))
                && self.get(id).is_some()
            {
                self.append_series(None, Some(id), s.samples, too_old_before, &mut out);
                continue;
            }
            let labels = match s.labels() {
                Ok(l) => l,
                Err(why) => {
                    s.reject_invalid(&mut out.report, &why);
                    continue;
                }
            };
            if let Some(msg) = invalid_labels(&labels, &self.limits) {
                for _ in s.samples {
                    out.report
                        .reject(RejectReason::InvalidLabels, || msg.clone());
                }
                continue;
            }
            let id = self.lookup(&labels);
            let id = self.append_series(Some(&labels), id, s.samples, too_old_before, &mut out);
            if let (Some(key), Some(span), Some(id)) = (key, s.span, id)
                && self.get(id).is_some()
            {
                // `labels` are the stored series' (found or created with exactly them).
                self.refs.insert(key, span, &labels, id);
            }
        }
        out
    }

    /// The labels of a series for a message: `labels` when given, else those of `id`.
    fn shown(&self, labels: Option<&Labels>, id: Option<SeriesId>) -> String {
        match (labels, id) {
            (Some(l), _) => l.to_string(),
            (None, Some(id)) => self.labels_of(id).to_string(),
            (None, None) => "{}".to_string(),
        }
    }

    /// Checks and stores the samples of one series: `id` when it exists, else created from
    /// `labels` (checked by the caller) at its first sample that is not too old. Returns the
    /// series' id, if it exists now.
    fn append_series(
        &mut self,
        labels: Option<&Labels>,
        mut id: Option<SeriesId>,
        samples: &[Sample],
        too_old_before: i64,
        out: &mut Appended,
    ) -> Option<SeriesId> {
        for p in samples {
            if p.t < self.min_valid {
                out.report.reject(RejectReason::TooOld, || {
                    format!(
                        "sample of {} at {} is older than the head, whose older data is \
                         in immutable blocks (before {})",
                        self.shown(labels, id),
                        p.t,
                        self.min_valid
                    )
                });
                continue;
            }
            if p.t < too_old_before {
                out.report.reject(RejectReason::TooOld, || {
                    format!(
                        "sample of {} at {} is older than the retention allows",
                        self.shown(labels, id),
                        p.t
                    )
                });
                continue;
            }
            let sid = match (id, labels) {
                (Some(sid), _) => sid,
                (None, None) => return None,
                (None, Some(l)) => match self.create_series(l) {
                    Ok(sid) => {
                        out.new_series.push((sid, self.labels_of(sid)));
                        id = Some(sid);
                        sid
                    }
                    Err(msg) => {
                        out.report.reject(RejectReason::SeriesLimit, || msg.clone());
                        continue;
                    }
                },
            };
            let Some(series) = self.series.get_mut(sid as usize).and_then(Option::as_mut) else {
                continue;
            };
            let placed = match series.append(&self.store, p.t, p.v, self.ooo_window, true) {
                Ok(placed) => placed,
                Err(e) => {
                    out.error.get_or_insert(e);
                    continue;
                }
            };
            match placed {
                Placed::Stored => {
                    out.report.accepted += 1;
                    out.samples.push((sid, *p));
                    self.min_t = self.min_t.min(p.t);
                    self.max_t = self.max_t.max(p.t);
                }
                Placed::Duplicate => out.report.accepted += 1,
                Placed::Conflict => out.report.reject(RejectReason::DuplicateTimestamp, || {
                    format!(
                        "sample of {} at {} has a different value than the stored one",
                        self.shown(labels, id),
                        p.t
                    )
                }),
                Placed::TooOld => out.report.reject(RejectReason::OutOfOrder, || {
                    format!(
                        "sample of {} at {} is older than the series' newest sample by \
                         more than the out-of-order window",
                        self.shown(labels, id),
                        p.t
                    )
                }),
            }
        }
        id
    }

    /// Creates a series within the limits.
    fn create_series(&mut self, labels: &Labels) -> Result<SeriesId, String> {
        let max = self.limits.max_series_per_tenant;
        if max > 0 && self.index.len() >= max {
            return Err(format!(
                "new series {labels} would exceed the limit of {max} series per tenant"
            ));
        }
        let max = self.limits.max_series_per_metric;
        if max > 0 {
            let name = labels.metric_name().unwrap_or_default();
            if self.per_metric.get(name).copied().unwrap_or(0) >= max {
                return Err(format!(
                    "new series {labels} would exceed the limit of {max} series for metric {name:?}"
                ));
            }
        }
        let id = self.next_id();
        self.insert_series(id, labels, super::MemSeries::default());
        Ok(id)
    }
}

#[cfg(test)]
impl RawRefs {
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn entries(&self) -> Vec<(u64, (u64, SeriesId))> {
        self.map.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Puts entries back (a stale cache, for tests).
    pub(super) fn restore(&mut self, entries: &[(u64, (u64, SeriesId))]) {
        self.map.extend(entries.iter().copied());
    }
}

#[cfg(test)]
mod tests;

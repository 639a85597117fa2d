//! The read seam between stores and the query engine.
//!
//! The PromQL engine reads only through [`Queryable`]; the in-memory [`MemStorage`] and the
//! persistent store implement it. Times are milliseconds since the Unix epoch; ranges are closed
//! (`mint..=maxt`), and the engine narrows them to its own window rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use regex::Regex;

use crate::exemplar::ExemplarBuffer;
pub use crate::exemplar::{ExemplarReport, SeriesExemplars};
use crate::labels::Labels;
pub use crate::metadata::Metadata;
use crate::metadata::MetadataSet;
pub use crate::raw::RawBatch;

/// The NaN bit pattern Prometheus writes as a staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is a staleness marker (not just any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A float sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    pub v: f64,
}

/// How a [`Matcher`] compares a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// Compiled regexes of recent matchers, by pattern: dashboards send the same few patterns
/// with every refresh, and compiling one costs more than evaluating a small query.
static REGEX_CACHE: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, Regex>>,
> = std::sync::LazyLock::new(Default::default);

/// Patterns kept in [`REGEX_CACHE`]; it is emptied when full (dashboards refill it quickly).
const REGEX_CACHE_SIZE: usize = 1024;

/// The anchored regex of a matcher's pattern, from the cache or compiled.
fn compiled(pattern: &str) -> Result<Regex, StorageError> {
    let cache = || REGEX_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = cache().get(pattern) {
        return Ok(re.clone());
    }
    let re = Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| StorageError::BadMatcher(format!("{pattern:?}: {e}")))?;
    let mut c = cache();
    if c.len() >= REGEX_CACHE_SIZE {
        c.clear();
    }
    c.insert(pattern.to_owned(), re.clone());
    Ok(re)
}

/// A label matcher. A missing label matches as the empty string, as in Prometheus.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// The fully anchored regex for `Regex`/`NotRegex`.
    regex: Option<Regex>,
}

impl Matcher {
    /// A matcher; for regex operators `value` is anchored at both ends (`^(?s:value)$`) as
    /// Prometheus does.
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Matcher, StorageError> {
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(compiled(&value)?),
            _ => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value,
            regex,
        })
    }

    /// Whether a label value (empty when the label is missing) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether a series' label set satisfies the matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// A selected series with its samples in the requested range, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// Errors of storage reads.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid matcher: {0}")]
    BadMatcher(String),
    #[error("query would load {0} samples, more than the limit")]
    TooManySamples(usize),
    #[error("storage: {0}")]
    Internal(String),
}

/// Read access to series.
pub trait Queryable: Send + Sync {
    /// Series matching every matcher that have samples in `mint..=maxt`, sorted by labels, each
    /// with those samples.
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, StorageError>;

    /// Label sets of the series matching every matcher with samples in `mint..=maxt`, sorted.
    /// The default selects samples; indexed stores answer from their index.
    fn series(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        Ok(self
            .select(matchers, mint, maxt)?
            .into_iter()
            .map(|s| s.labels)
            .collect())
    }

    /// Sorted, distinct label names of the matching series (all series when `matchers` is
    /// empty).
    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut names = std::collections::BTreeSet::new();
        for l in self.series(matchers, mint, maxt)? {
            names.extend(l.iter().map(|l| l.name.to_string()));
        }
        Ok(names.into_iter().collect())
    }

    /// Sorted, distinct values of label `name` among the matching series.
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut values = std::collections::BTreeSet::new();
        for l in self.series(matchers, mint, maxt)? {
            if let Some(v) = l.get(name) {
                values.insert(v.to_string());
            }
        }
        Ok(values.into_iter().collect())
    }
}

/// Why a sample was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// Older than the series' newest sample by more than the out-of-order window.
    OutOfOrder,
    /// Older than the oldest time the store still accepts (before retention or the head).
    TooOld,
    /// Same timestamp as a stored sample with a different value.
    DuplicateTimestamp,
    /// A new series over the tenant's or the metric's series limit.
    SeriesLimit,
    /// Labels over the length/count limits, invalid names, or no metric name.
    InvalidLabels,
}

impl RejectReason {
    /// The `reason` label of `sextant_tsdb_samples_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::TooOld => "too_old",
            RejectReason::DuplicateTimestamp => "duplicate_timestamp",
            RejectReason::SeriesLimit => "series_limit",
            RejectReason::InvalidLabels => "invalid_labels",
        }
    }
}

/// The outcome of an append: samples are accepted or rejected one by one (as Prometheus's
/// remote_write receiver does), and the first rejection is described for the client's error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppendReport {
    pub accepted: usize,
    pub rejected: BTreeMap<RejectReason, usize>,
    /// A message naming the first rejected sample's series and reason.
    pub first_rejection: Option<String>,
}

impl AppendReport {
    pub fn rejected_total(&self) -> usize {
        self.rejected.values().sum()
    }

    /// Adds another report's counts (its first rejection counts if this one has none).
    pub fn merge(&mut self, other: AppendReport) {
        self.accepted += other.accepted;
        for (reason, n) in other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        if self.first_rejection.is_none() {
            self.first_rejection = other.first_rejection;
        }
    }

    /// Records a rejection.
    pub fn reject(&mut self, reason: RejectReason, message: impl FnOnce() -> String) {
        *self.rejected.entry(reason).or_default() += 1;
        if self.first_rejection.is_none() {
            self.first_rejection = Some(message());
        }
    }
}

/// Write access to series.
pub trait Appendable: Send + Sync {
    /// Appends samples. When this returns `Ok`, accepted samples are durable (they survive a
    /// crash of the process). `Err` means nothing of the batch may be assumed stored (I/O).
    fn append(&self, batch: &[SeriesSamples]) -> Result<AppendReport, StorageError>;

    /// Appends series as a remote-write request carries them (raw label bytes), with the
    /// guarantees of [`Appendable::append`]; series with invalid labels are rejected sample by
    /// sample (`InvalidLabels`). The default builds label sets and appends them; stores with a
    /// series cache find known series from the raw bytes.
    fn append_raw(&self, batch: &RawBatch) -> Result<AppendReport, StorageError> {
        let (series, mut report) = batch.to_series();
        if !series.is_empty() {
            report.merge(self.append(&series)?);
        }
        Ok(report)
    }

    /// Deletes samples in `mint..=maxt` of the series matching every matcher (Prometheus's
    /// `admin/tsdb/delete_series`).
    fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<(), StorageError>;
}

/// Cardinality figures for `/api/v1/status/tsdb`: totals of the head and the top entries (at
/// most the requested limit, largest first) of each table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreStats {
    pub num_series: u64,
    pub num_label_pairs: u64,
    pub chunk_count: u64,
    /// Oldest and newest sample times, when there are samples.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    pub series_count_by_metric_name: Vec<(String, u64)>,
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    /// Keys are `name=value`.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

impl StoreStats {
    /// Computes the figures from label sets and time bounds; for stores without better ways.
    pub fn from_series<'a>(
        series: impl IntoIterator<Item = &'a Labels>,
        bounds: Option<(i64, i64)>,
        chunk_count: u64,
        limit: usize,
    ) -> StoreStats {
        let mut by_metric: HashMap<String, u64> = HashMap::new();
        let mut values_by_name: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        let mut by_pair: HashMap<String, u64> = HashMap::new();
        let mut num_series = 0;
        for labels in series {
            num_series += 1;
            if let Some(m) = labels.metric_name() {
                *by_metric.entry(m.to_string()).or_default() += 1;
            }
            for l in labels.iter() {
                values_by_name
                    .entry(l.name.to_string())
                    .or_default()
                    .insert(l.value.to_string());
                *by_pair
                    .entry(format!("{}={}", l.name, l.value))
                    .or_default() += 1;
            }
        }
        let top = |m: HashMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(limit);
            v
        };
        let num_label_pairs = by_pair.len() as u64;
        let value_counts = values_by_name
            .iter()
            .map(|(n, vs)| (n.clone(), vs.len() as u64))
            .collect();
        let memory = values_by_name
            .iter()
            .map(|(n, vs)| (n.clone(), vs.iter().map(|v| v.len() as u64).sum()))
            .collect();
        StoreStats {
            num_series,
            num_label_pairs,
            chunk_count,
            min_time: bounds.map(|b| b.0),
            max_time: bounds.map(|b| b.1),
            series_count_by_metric_name: top(by_metric),
            label_value_count_by_label_name: top(value_counts),
            memory_in_bytes_by_label_name: top(memory),
            series_count_by_label_value_pair: top(by_pair),
        }
    }
}

/// What a tenant keeps beside its samples: exemplars and metric metadata.
pub trait Annotations: Send + Sync {
    /// Stores exemplars, each checked on its own (Prometheus's rules: label length,
    /// duplicates, the out-of-order window). When this returns `Ok`, the accepted ones are
    /// durable.
    fn append_exemplars(&self, batch: &[SeriesExemplars]) -> Result<ExemplarReport, StorageError>;

    /// Exemplars in `mint..=maxt` of the series matching every matcher of at least one set,
    /// sorted by series labels.
    fn select_exemplars(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesExemplars>, StorageError>;

    /// Records metric metadata `(family, entry)`.
    fn record_metadata(&self, entries: Vec<(String, Metadata)>) -> Result<(), StorageError>;

    /// Families (optionally only `metric`) with their metadata, at most `limit` families and
    /// `limit_per_metric` entries each (negative: no limit).
    fn metadata(
        &self,
        metric: Option<&str>,
        limit: i64,
        limit_per_metric: i64,
    ) -> Result<BTreeMap<String, Vec<Metadata>>, StorageError>;
}

/// A tenant's store: read, write and statistics.
pub trait Store: Queryable + Appendable + Annotations {
    /// Cardinality figures with at most `limit` entries per table.
    fn stats(&self, limit: usize) -> Result<StoreStats, StorageError>;
}

/// The stores of all tenants. A tenant's store is created on its first use; one tenant never
/// sees another's series.
pub trait Tenants: Send + Sync {
    fn tenant(&self, org_id: &str) -> Result<Arc<dyn Store>, StorageError>;
}

/// A simple in-memory store: the reference model for tests and the promqltest runner.
#[derive(Debug, Default)]
pub struct MemStorage {
    series: RwLock<BTreeMap<Labels, Vec<Sample>>>,
    annotations: MemAnnotations,
}

/// Exemplars and metadata of a [`MemStorage`], with the default configuration's limits.
#[derive(Debug)]
struct MemAnnotations {
    exemplars: Mutex<ExemplarBuffer>,
    metadata: Mutex<MetadataSet>,
}

impl Default for MemAnnotations {
    fn default() -> Self {
        let cfg = crate::config::TsdbConfig::default();
        MemAnnotations {
            exemplars: Mutex::new(ExemplarBuffer::new(
                cfg.exemplars.max_exemplars,
                cfg.ooo_window_ms(),
            )),
            metadata: Mutex::new(MetadataSet::default()),
        }
    }
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Adds a sample; a sample at an existing timestamp replaces it.
    pub fn insert(&self, labels: &Labels, t: i64, v: f64) {
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        let samples = series.entry(labels.clone()).or_default();
        match samples.binary_search_by_key(&t, |s| s.t) {
            Ok(i) => samples[i].v = v,
            Err(i) => samples.insert(i, Sample { t, v }),
        }
    }

    /// Removes every series.
    pub fn clear(&self) {
        self.series
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl Queryable for MemStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, StorageError> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (labels, samples) in series.iter() {
            if !matchers.iter().all(|m| m.matches_labels(labels)) {
                continue;
            }
            let from = samples.partition_point(|s| s.t < mint);
            let to = samples.partition_point(|s| s.t <= maxt);
            if from < to {
                out.push(SeriesSamples {
                    labels: labels.clone(),
                    samples: samples[from..to].to_vec(),
                });
            }
        }
        Ok(out)
    }
}

impl Appendable for MemStorage {
    fn append(&self, batch: &[SeriesSamples]) -> Result<AppendReport, StorageError> {
        let mut report = AppendReport::default();
        for s in batch {
            if s.labels.metric_name().is_none() {
                for _ in &s.samples {
                    report.reject(RejectReason::InvalidLabels, || {
                        format!("series {} has no metric name", s.labels)
                    });
                }
                continue;
            }
            for p in &s.samples {
                self.insert(&s.labels, p.t, p.v);
                report.accepted += 1;
            }
        }
        Ok(report)
    }

    fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<(), StorageError> {
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        for (labels, samples) in series.iter_mut() {
            if matchers.iter().all(|m| m.matches_labels(labels)) {
                samples.retain(|s| s.t < mint || s.t > maxt);
            }
        }
        series.retain(|_, samples| !samples.is_empty());
        Ok(())
    }
}

impl Store for MemStorage {
    fn stats(&self, limit: usize) -> Result<StoreStats, StorageError> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let mut bounds: Option<(i64, i64)> = None;
        for samples in series.values() {
            if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
                bounds = Some(match bounds {
                    None => (first.t, last.t),
                    Some((lo, hi)) => (lo.min(first.t), hi.max(last.t)),
                });
            }
        }
        Ok(StoreStats::from_series(series.keys(), bounds, 0, limit))
    }
}

impl Annotations for MemStorage {
    fn append_exemplars(&self, batch: &[SeriesExemplars]) -> Result<ExemplarReport, StorageError> {
        let mut buf = self
            .annotations
            .exemplars
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut report = ExemplarReport::default();
        for s in batch {
            for e in &s.exemplars {
                match buf.add(&s.labels, e.clone()) {
                    Ok(()) => report.accepted += 1,
                    Err(why) => report.reject(why, || {
                        format!("out of order exemplar for series {}", s.labels)
                    }),
                }
            }
        }
        Ok(report)
    }

    fn select_exemplars(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesExemplars>, StorageError> {
        let buf = self
            .annotations
            .exemplars
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(buf.select(sets, mint, maxt))
    }

    fn record_metadata(&self, entries: Vec<(String, Metadata)>) -> Result<(), StorageError> {
        self.annotations
            .metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(entries);
        Ok(())
    }

    fn metadata(
        &self,
        metric: Option<&str>,
        limit: i64,
        limit_per_metric: i64,
    ) -> Result<BTreeMap<String, Vec<Metadata>>, StorageError> {
        Ok(self
            .annotations
            .metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(metric, limit, limit_per_metric))
    }
}

/// In-memory stores per tenant, for tests and the conformance runners.
#[derive(Debug, Default)]
pub struct MemTenants {
    stores: RwLock<HashMap<String, Arc<MemStorage>>>,
}

impl MemTenants {
    pub fn new() -> MemTenants {
        MemTenants::default()
    }
}

impl Tenants for MemTenants {
    fn tenant(&self, org_id: &str) -> Result<Arc<dyn Store>, StorageError> {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        let store = stores.entry(org_id.to_string()).or_default().clone();
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_follow_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap().matches_labels(&l);
        assert!(m(MatchOp::Equal, "job", "api"));
        assert!(m(MatchOp::Regex, "job", "a.*"));
        assert!(!m(MatchOp::Regex, "job", "p")); // anchored
        assert!(m(MatchOp::Equal, "missing", "")); // missing = empty
        assert!(m(MatchOp::NotRegex, "missing", ".+"));
        assert!(Matcher::new(MatchOp::Regex, "a", "(").is_err());
    }

    #[test]
    fn select_returns_the_closed_range() {
        let s = MemStorage::new();
        let a = Labels::from_pairs([("__name__", "a")]);
        for t in [0, 10, 20, 30] {
            s.insert(&a, t, t as f64);
        }
        s.insert(&a, 10, 99.0);
        let m = Matcher::new(MatchOp::Equal, "__name__", "a").unwrap();
        let got = s.select(&[m], 10, 20).unwrap();
        assert_eq!(
            got[0].samples,
            vec![Sample { t: 10, v: 99.0 }, Sample { t: 20, v: 20.0 }]
        );
        assert!(is_stale_nan(stale_nan()) && !is_stale_nan(f64::NAN));
    }
}

//! The read seam between stores and the query engine.
//!
//! The PromQL engine reads only through [`Queryable`]; the in-memory [`MemStorage`] and the
//! persistent store implement it. Times are milliseconds since the Unix epoch; ranges are closed
//! (`mint..=maxt`), and the engine narrows them to its own window rules.

use std::collections::BTreeMap;
use std::sync::RwLock;

use regex::Regex;

use crate::labels::Labels;

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
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| StorageError::BadMatcher(format!("{value:?}: {e}")))?,
            ),
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
}

/// A simple in-memory store: the reference model for tests and the promqltest runner.
#[derive(Debug, Default)]
pub struct MemStorage {
    series: RwLock<BTreeMap<Labels, Vec<Sample>>>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Adds a sample; a sample at an existing timestamp replaces it.
    pub fn append(&self, labels: &Labels, t: i64, v: f64) {
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
            s.append(&a, t, t as f64);
        }
        s.append(&a, 10, 99.0);
        let m = Matcher::new(MatchOp::Equal, "__name__", "a").unwrap();
        let got = s.select(&[m], 10, 20).unwrap();
        assert_eq!(
            got[0].samples,
            vec![Sample { t: 10, v: 99.0 }, Sample { t: 20, v: 20.0 }]
        );
        assert!(is_stale_nan(stale_nan()) && !is_stale_nan(f64::NAN));
    }
}

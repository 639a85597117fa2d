//! RED metrics (rate, errors, duration) derived from access-log lines.
//!
//! Per `host`, `service`, `upstream`, `method` and `status_class`:
//! - `sextant_http_requests_total` (counter),
//! - `sextant_http_request_duration_seconds` (histogram of `$request_time`, cumulative `le`
//!   buckets, `_sum`, `_count`; lines without a request time are not observed),
//! - `sextant_http_response_bytes_total` (counter).
//!
//! Counters are cumulative from the first line ever tailed: their state is part of the access-log
//! checkpoint, written together with the file positions the counts correspond to, so that after a
//! restart they continue where they were (lines re-read after a crash are counted once, since the
//! restored counts exclude them). A series idle for `series_ttl` is forgotten and, should it come
//! back, starts again at 0: a counter reset, which `rate()` handles.

use std::collections::HashMap;

use bus::proto::Label;
use serde::{Deserialize, Serialize};

use super::parse::Access;
use crate::source::SeriesGroup;

pub const REQUESTS: &str = "sextant_http_requests_total";
pub const DURATION: &str = "sextant_http_request_duration_seconds";
pub const BYTES: &str = "sextant_http_response_bytes_total";

/// Prometheus's default histogram buckets (client_golang `DefBuckets`).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The labels of one RED series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RedKey {
    pub host: String,
    pub service: String,
    pub upstream: String,
    pub method: String,
    pub status_class: String,
}

/// The counts of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedCounts {
    pub requests: u64,
    pub bytes: u64,
    /// Observations per bucket (not cumulative), one per bound; `+Inf` is `duration_count`.
    pub buckets: Vec<u64>,
    pub duration_count: u64,
    pub duration_sum: f64,
    /// The flush second at which the series last changed (for `series_ttl`).
    pub changed_s: i64,
    /// Changed since the last flush.
    #[serde(skip)]
    pub dirty: bool,
}

/// Aggregates RED series.
#[derive(Clone, Debug, PartialEq)]
pub struct Red {
    bounds: Vec<f64>,
    upstream_label: bool,
    max_series: usize,
    /// Kept sorted by key at flush time; `index` finds a key's entry from its joined labels, so
    /// that counting a line allocates nothing for a known series (a map ordered by the five label
    /// strings spent most of its time comparing them).
    series: Vec<(RedKey, RedCounts)>,
    index: HashMap<Box<str>, usize>,
    buf: String,
}

/// What is checkpointed.
pub type RedState = Vec<(RedKey, RedCounts)>;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Label value for series past `max_series`.
pub const OVERFLOW: &str = "__overflow__";

impl Red {
    /// `bounds` must be sorted, finite and unique (checked by the config).
    pub fn new(bounds: Vec<f64>, upstream_label: bool, max_series: usize) -> Self {
        Red {
            bounds,
            upstream_label,
            max_series,
            series: Vec::new(),
            index: HashMap::new(),
            buf: String::new(),
        }
    }

    /// Continues from checkpointed counts (series with other bucket bounds are dropped: their
    /// histograms could not continue).
    pub fn restore(&mut self, state: RedState) {
        let n = self.bounds.len();
        self.series = state
            .into_iter()
            .filter(|(_, c)| c.buckets.len() == n)
            .collect();
        self.reindex();
    }

    fn reindex(&mut self) {
        self.series.sort_by(|a, b| a.0.cmp(&b.0));
        self.index = self
            .series
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (joined(&mut self.buf, k).into(), i))
            .collect();
    }

    /// The counts to checkpoint.
    pub fn state(&self) -> RedState {
        let mut s = self.series.clone();
        s.sort_by(|a, b| a.0.cmp(&b.0));
        s
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn lookup(&mut self, parts: &[&str]) -> Option<usize> {
        let k = join_parts(&mut self.buf, parts);
        self.index.get(k).copied()
    }

    /// Counts one request.
    pub fn observe(&mut self, a: &Access<'_>) {
        let method = match a.method {
            Some(m) => METHODS
                .iter()
                .find(|x| **x == m)
                .copied()
                .unwrap_or("OTHER"),
            None => "",
        };
        let status_class = match a.status {
            Some(s @ 100..=599) => ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from(s / 100 - 1)],
            _ => "unknown",
        };
        let upstream = if self.upstream_label {
            a.upstream.unwrap_or_default()
        } else {
            ""
        };
        let mut parts = [
            a.host.unwrap_or_default(),
            a.service.unwrap_or_default(),
            upstream,
            method,
            status_class,
        ];
        let mut i = self.lookup(&parts);
        if i.is_none() && self.series.len() >= self.max_series {
            parts[..3].fill(OVERFLOW);
            i = self.lookup(&parts);
        }
        let i = match i {
            Some(i) => i,
            None => {
                let key = RedKey {
                    host: parts[0].to_owned(),
                    service: parts[1].to_owned(),
                    upstream: parts[2].to_owned(),
                    method: parts[3].to_owned(),
                    status_class: parts[4].to_owned(),
                };
                let counts = RedCounts {
                    requests: 0,
                    bytes: 0,
                    buckets: vec![0; self.bounds.len()],
                    duration_count: 0,
                    duration_sum: 0.0,
                    changed_s: 0,
                    dirty: false,
                };
                self.index
                    .insert(joined(&mut self.buf, &key).into(), self.series.len());
                self.series.push((key, counts));
                self.series.len() - 1
            }
        };
        let c = &mut self.series[i].1;
        c.dirty = true;
        c.requests += 1;
        c.bytes += a.bytes.unwrap_or(0);
        if let Some(t) = a.request_time {
            c.duration_count += 1;
            c.duration_sum += t;
            if let Some(i) = self.bounds.iter().position(|b| t <= *b) {
                c.buckets[i] += 1;
            }
        }
    }

    /// Every series' samples at `ts_ms`, one group per series with `base` labels added; forgets
    /// series unchanged for `ttl_s` seconds.
    pub fn flush(&mut self, ts_ms: i64, base: &[Label], ttl_s: i64) -> Vec<SeriesGroup> {
        let now_s = ts_ms.div_euclid(1000);
        for (_, c) in &mut self.series {
            if std::mem::take(&mut c.dirty) {
                c.changed_s = now_s;
            }
        }
        self.series.retain(|(_, c)| now_s - c.changed_s < ttl_s);
        self.reindex();
        let mut out = Vec::with_capacity(self.series.len());
        for (k, c) in &self.series {
            let mut identity: Vec<Label> = base.to_vec();
            for (n, v) in [
                ("host", &k.host),
                ("method", &k.method),
                ("service", &k.service),
                ("status_class", &k.status_class),
                ("upstream", &k.upstream),
            ] {
                identity.retain(|l| l.name != n);
                identity.push(Label {
                    name: n.to_owned(),
                    value: v.clone(),
                });
            }
            identity.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            let mut g = SeriesGroup {
                identity,
                series: Vec::with_capacity(self.bounds.len() + 5),
            };
            g.push(REQUESTS, &[], c.requests as f64, ts_ms);
            g.push(BYTES, &[], c.bytes as f64, ts_ms);
            let bucket = format!("{DURATION}_bucket");
            let mut cumulative = 0;
            for (b, n) in self.bounds.iter().zip(&c.buckets) {
                cumulative += n;
                g.push(&bucket, &[("le", &format_le(*b))], cumulative as f64, ts_ms);
            }
            g.push(&bucket, &[("le", "+Inf")], c.duration_count as f64, ts_ms);
            g.push(&format!("{DURATION}_sum"), &[], c.duration_sum, ts_ms);
            g.push(
                &format!("{DURATION}_count"),
                &[],
                c.duration_count as f64,
                ts_ms,
            );
            out.push(g);
        }
        out
    }
}

/// The five labels joined with a separator no label value of a log line holds.
fn join_parts<'b>(buf: &'b mut String, parts: &[&str]) -> &'b str {
    buf.clear();
    for p in parts {
        buf.push_str(p);
        buf.push('\u{1}');
    }
    buf
}

fn joined<'b>(buf: &'b mut String, k: &RedKey) -> &'b str {
    join_parts(
        buf,
        &[&k.host, &k.service, &k.upstream, &k.method, &k.status_class],
    )
}

/// A bucket bound as Prometheus client libraries write it (`0.005`, `1`, `2.5`).
fn format_le(b: f64) -> String {
    let s = format!("{b}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(method: &str, status: u16, t: Option<f64>, bytes: u64) -> Access<'_> {
        Access {
            host: Some("a.example"),
            method: Some(method),
            status: Some(status),
            request_time: t,
            bytes: Some(bytes),
            upstream: Some("10.0.0.1:80"),
            ..Default::default()
        }
    }

    fn value(groups: &[SeriesGroup], name: &str, want: &[(&str, &str)]) -> Option<f64> {
        groups.iter().flat_map(|g| &g.series).find_map(|s| {
            let has = |n: &str, v: &str| s.labels.iter().any(|l| l.name == n && l.value == v);
            (has("__name__", name) && want.iter().all(|(n, v)| has(n, v)))
                .then(|| s.samples[0].value)
        })
    }

    #[test]
    fn counts_are_exact_and_cumulative() {
        let mut red = Red::new(DEFAULT_BUCKETS.to_vec(), true, 100);
        let base = [Label {
            name: "job".into(),
            value: "access-log".into(),
        }];
        for _ in 0..7 {
            red.observe(&access("GET", 200, Some(0.003), 100));
        }
        red.observe(&access("GET", 204, Some(0.3), 0));
        red.observe(&access("GET", 503, Some(12.0), 10));
        red.observe(&access("BREW", 418, None, 1));
        let g = red.flush(1_000_000, &base, 3600);
        let ok = [
            ("method", "GET"),
            ("status_class", "2xx"),
            ("job", "access-log"),
        ];
        assert_eq!(value(&g, REQUESTS, &ok), Some(8.0));
        assert_eq!(value(&g, BYTES, &ok), Some(700.0));
        let b = "sextant_http_request_duration_seconds_bucket";
        assert_eq!(value(&g, b, &[ok[0], ok[1], ("le", "0.005")]), Some(7.0));
        assert_eq!(value(&g, b, &[ok[0], ok[1], ("le", "0.25")]), Some(7.0));
        assert_eq!(value(&g, b, &[ok[0], ok[1], ("le", "0.5")]), Some(8.0));
        assert_eq!(value(&g, b, &[ok[0], ok[1], ("le", "+Inf")]), Some(8.0));
        let err = [("status_class", "5xx")];
        assert_eq!(value(&g, b, &[err[0], ("le", "10.0")]), Some(0.0));
        assert_eq!(value(&g, b, &[err[0], ("le", "+Inf")]), Some(1.0));
        let other = [("method", "OTHER"), ("status_class", "4xx")];
        assert_eq!(value(&g, REQUESTS, &other), Some(1.0));
        assert_eq!(
            value(&g, "sextant_http_request_duration_seconds_count", &other),
            Some(0.0)
        );
        // Labels are sorted and the timestamp is the flush's.
        for s in g.iter().flat_map(|g| &g.series) {
            assert!(s.labels.windows(2).all(|w| w[0].name < w[1].name));
            assert_eq!(s.samples[0].timestamp, 1_000_000);
        }

        // Cumulative across flushes and across a restore.
        red.observe(&access("GET", 200, Some(0.003), 100));
        let state = red.state();
        let mut again = Red::new(DEFAULT_BUCKETS.to_vec(), true, 100);
        again.restore(state);
        let g = again.flush(1_001_000, &base, 3600);
        assert_eq!(value(&g, REQUESTS, &ok), Some(9.0));
    }

    #[test]
    fn idle_series_expire_and_cardinality_is_capped() {
        let mut red = Red::new(vec![1.0], false, 2);
        red.observe(&access("GET", 200, None, 0));
        red.flush(0, &[], 10);
        assert_eq!(red.len(), 1);
        red.flush(9_000, &[], 10);
        assert_eq!(red.len(), 1);
        red.flush(10_000, &[], 10);
        assert!(red.is_empty());

        for s in [200, 300, 400, 500] {
            red.observe(&access("GET", s, None, 0));
        }
        let g = red.flush(20_000, &[], 10);
        // Past the cap only method and status class tell series apart.
        assert_eq!(red.len(), 4);
        let over = [("host", OVERFLOW), ("status_class", "4xx")];
        assert_eq!(value(&g, REQUESTS, &over), Some(1.0));
        assert_eq!(value(&g, REQUESTS, &[("upstream", "")]), Some(1.0));
    }
}

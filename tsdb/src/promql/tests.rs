//! Engine tests beside the code; Prometheus's own scripts run in the `tests` crate.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::*;
use crate::labels::Labels;
use crate::storage::MemStorage;

fn store() -> MemStorage {
    let s = MemStorage::new();
    for (job, step) in [("a", 1.0), ("b", 2.0)] {
        let l = Labels::from_pairs([("__name__", "req_total"), ("job", job)]);
        for i in 0..=40 {
            s.insert(&l, i * 15_000, i as f64 * step);
        }
    }
    s
}

fn vector(out: QueryOutput) -> Vec<(String, f64)> {
    match out.value {
        Value::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect(),
        other => panic!("not a vector: {other:?}"),
    }
}

#[test]
fn rate_extrapolates_like_prometheus() {
    let s = store();
    let out = instant_query(&s, "rate(req_total[1m])", 600_000, &QueryOptions::default()).unwrap();
    let mut v = vector(out);
    v.sort_by(|a, b| a.0.cmp(&b.0));
    // 1 per 15 s and 2 per 15 s, sampled exactly on the window boundary.
    assert_eq!(v.len(), 2);
    assert!((v[0].1 - 1.0 / 15.0).abs() < 1e-12, "{v:?}");
    assert!((v[1].1 - 2.0 / 15.0).abs() < 1e-12, "{v:?}");
    assert_eq!(v[0].0, "{job=\"a\"}", "the name is dropped");
}

#[test]
fn range_query_is_a_sorted_matrix() {
    let s = store();
    let out = range_query(
        &s,
        "req_total * 2",
        0,
        60_000,
        30_000,
        &QueryOptions::default(),
    )
    .unwrap();
    let Value::Matrix(m) = out.value else {
        panic!("not a matrix");
    };
    assert_eq!(m.len(), 2);
    assert!(m[0].labels < m[1].labels);
    let pts: Vec<(i64, f64)> = m[1].samples.iter().map(|p| (p.t, p.v)).collect();
    assert_eq!(pts, [(0, 0.0), (30_000, 8.0), (60_000, 16.0)]);
    let out = range_query(&s, "time()", 0, 60_000, 30_000, &QueryOptions::default()).unwrap();
    let Value::Matrix(m) = out.value else {
        panic!("not a matrix");
    };
    assert_eq!(m.len(), 1);
    assert!(m[0].labels.is_empty());
}

#[test]
fn errors_map_to_prometheus_types() {
    let s = store();
    let o = QueryOptions::default();
    assert!(matches!(
        instant_query(&s, "sum(", 0, &o),
        Err(QueryError::BadData(_))
    ));
    assert!(matches!(
        range_query(&s, "req_total[1m]", 0, 60_000, 15_000, &o),
        Err(QueryError::BadData(_))
    ));
    let err = instant_query(&s, "req_total + on() req_total", 60_000, &o).unwrap_err();
    assert!(matches!(err, QueryError::Execution(_)));
    assert!(
        err.to_string()
            .contains("many-to-many matching not allowed"),
        "{err}"
    );
    let err = instant_query(
        &s,
        "label_replace(req_total, \"job\", \"x\", \"job\", \".*\")",
        60_000,
        &o,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
}

#[test]
fn limits_cancel_and_deadline() {
    let s = store();
    let small = QueryOptions {
        max_samples: 10,
        ..QueryOptions::default()
    };
    assert!(matches!(
        instant_query(&s, "sum_over_time(req_total[5m])", 600_000, &small),
        Err(QueryError::TooManySamples(_))
    ));
    let cancel = Arc::new(AtomicBool::new(true));
    let canceled = QueryOptions {
        cancel: Some(cancel),
        ..QueryOptions::default()
    };
    assert!(matches!(
        range_query(&s, "req_total", 0, 600_000, 15_000, &canceled),
        Err(QueryError::Canceled(_))
    ));
    let late = QueryOptions {
        deadline: Instant::now().checked_sub(Duration::from_secs(1)),
        ..QueryOptions::default()
    };
    assert!(matches!(
        instant_query(&s, "req_total", 0, &late),
        Err(QueryError::Timeout(_))
    ));
}

#[test]
fn lookback_and_staleness() {
    let s = MemStorage::new();
    let l = Labels::from_pairs([("__name__", "up")]);
    s.insert(&l, 0, 1.0);
    s.insert(&l, 60_000, crate::storage::stale_nan());
    let o = QueryOptions::default();
    assert_eq!(
        vector(instant_query(&s, "up", 30_000, &o).unwrap()).len(),
        1
    );
    assert!(
        vector(instant_query(&s, "up", 90_000, &o).unwrap()).is_empty(),
        "stale marker hides"
    );
    let short = QueryOptions {
        lookback_delta_ms: 10_000,
        ..QueryOptions::default()
    };
    assert!(vector(instant_query(&s, "up", 30_000, &short).unwrap()).is_empty());
}

#[test]
fn helpers() {
    use super::aggregate::quantile;
    use super::functions::{format_g, natsort_less};
    assert_eq!(quantile(0.5, &mut [3.0, 1.0, 2.0]), 2.0);
    assert!(quantile(f64::NAN, &mut [1.0]).is_nan());
    assert!(natsort_less("a2", "a10"));
    assert!(!natsort_less("a10", "a2"));
    assert_eq!(format_g(1.1), "1.1");
    assert_eq!(format_g(1e21), "1e+21");
    assert_eq!(format_g(f64::NAN), "NaN");
}

/// Found by promql-diff against Prometheus 2.42: Go's math.Max/Min propagate NaN.
#[test]
fn clamp_propagates_nan_like_go() {
    let s = MemStorage::new();
    s.insert(&Labels::from_pairs([("__name__", "x")]), 0, f64::NAN);
    s.insert(&Labels::from_pairs([("__name__", "y")]), 0, 7.0);
    let v = |q: &str| vector(instant_query(&s, q, 0, &QueryOptions::default()).unwrap());
    for q in [
        "clamp(x, 0, 5)",
        "clamp_min(x, 0)",
        "clamp_max(x, 5)",
        "clamp(y, NaN, 5)",
    ] {
        let got = v(q);
        assert!(got.len() == 1 && got[0].1.is_nan(), "{q}: {got:?}");
    }
    assert_eq!(v("clamp(y, 0, 5)")[0].1, 5.0);
}

/// Found by promql-diff: date functions convert like Go's `int64(v)`, toward zero.
#[test]
fn date_functions_truncate_toward_zero() {
    let s = MemStorage::new();
    let v = |q: &str| vector(instant_query(&s, q, 0, &QueryOptions::default()).unwrap());
    assert_eq!(v("minute(vector(-0.5))")[0].1, 0.0);
    assert_eq!(v("minute(vector(-61))")[0].1, 58.0);
    assert_eq!(v("hour(vector(3599.9))")[0].1, 0.0);
}

#[test]
fn a_repeated_query_is_parsed_once_and_errors_are_not_kept() {
    let text = "sum by (job) (rate(parse_cache_test_total{job=~\"a|b\"}[5m]))";
    let ctx = ParseContext::default();
    let a = parse_cached(text, &ctx).unwrap();
    let b = parse_cached(text, &ctx).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(parse_cached("sum(", &ctx).is_err());
    assert!(!PARSE_CACHE.lock().unwrap().contains_key("sum("));
}

fn experimental() -> QueryOptions {
    QueryOptions {
        experimental: true,
        ..QueryOptions::default()
    }
}

#[test]
fn parses_reading_the_step_are_cached_per_step_and_stay_gated() {
    let on = experimental();
    let text = "count_over_time(parse_cache_ctx_test[step()])";
    let a = parse_cached(text, &ParseContext::range(0, 60_000, 10_000, &on)).unwrap();
    let b = parse_cached(text, &ParseContext::range(0, 60_000, 20_000, &on)).unwrap();
    assert_eq!(
        a.expr.to_string(),
        "count_over_time(parse_cache_ctx_test[10s])"
    );
    assert_eq!(
        b.expr.to_string(),
        "count_over_time(parse_cache_ctx_test[20s])"
    );
    let again = parse_cached(text, &ParseContext::range(0, 60_000, 10_000, &on)).unwrap();
    assert!(Arc::ptr_eq(&a, &again));
    assert!(a.uses_query_context());
    // A parse for one step does not serve another.
    let s = MemStorage::new();
    let e = range_query_parsed(&s, &a, 0, 60_000, 20_000, &on).unwrap_err();
    assert!(matches!(e, QueryError::BadData(_)), "{e}");
    // Without the feature flag the cached parse is not handed out.
    let off = ParseContext::range(0, 60_000, 10_000, &QueryOptions::default());
    let e = parse_cached(text, &off).unwrap_err().to_string();
    assert!(
        e.contains("1:38: parse error: experimental duration expression is not enabled"),
        "{e}"
    );
    let e = range_query(&s, text, 0, 60_000, 10_000, &QueryOptions::default()).unwrap_err();
    assert!(matches!(e, QueryError::BadData(_)), "{e}");
}

/// `metric` 0, 1, 2, … every 10 s.
fn counter_store() -> MemStorage {
    let s = MemStorage::new();
    let l = Labels::from_pairs([("__name__", "metric")]);
    for i in 0..=30 {
        s.insert(&l, i * 10_000, i as f64);
    }
    s
}

#[test]
fn smoothed_selectors_interpolate_in_instant_and_range_queries() {
    let s = counter_store();
    let on = experimental();
    let v = vector(instant_query(&s, "metric smoothed", 15_000, &on).unwrap());
    assert_eq!(v, vec![("metric{}".to_string(), 1.5)]);
    let v = vector(instant_query(&s, "metric offset -100 smoothed", 15_000, &on).unwrap());
    assert_eq!(v, vec![("metric{}".to_string(), 11.5)]);
    // Past the last sample the value is carried forward (within the lookback delta).
    let v = vector(instant_query(&s, "metric smoothed", 305_000, &on).unwrap());
    assert_eq!(v, vec![("metric{}".to_string(), 30.0)]);
    let out = range_query(&s, "metric smoothed", 0, 60_000, 15_000, &on).unwrap();
    let Value::Matrix(m) = out.value else {
        panic!("not a matrix")
    };
    let got: Vec<f64> = m[0].samples.iter().map(|p| p.v).collect();
    assert_eq!(got, vec![0.0, 1.5, 3.0, 4.5, 6.0]);
}

#[test]
fn anchored_and_smoothed_windows_feed_rate_functions() {
    let s = counter_store();
    let on = experimental();
    let one = |q: &str, t: i64| {
        let v = vector(instant_query(&s, q, t, &on).unwrap());
        assert_eq!(v.len(), 1, "{q}: {v:?}");
        v[0].1
    };
    // Window (35s, 95s]: the anchor is the sample at 30 s, the last at 90 s.
    assert_eq!(one("increase(metric[1m] anchored)", 95_000), 6.0);
    // Smoothed: 3.5 at 35 s to 9.5 at 95 s, per second over 60 s.
    assert!((one("rate(metric[1m] smoothed)", 95_000) - 0.1).abs() < 1e-12);
    assert_eq!(one("changes(metric[1m] anchored)", 95_000), 6.0);
    // A range query gives each step's instant value.
    let out = range_query(
        &s,
        "increase(metric[1m] anchored)",
        95_000,
        155_000,
        30_000,
        &on,
    )
    .unwrap();
    let Value::Matrix(m) = out.value else {
        panic!("not a matrix")
    };
    let got: Vec<f64> = m[0].samples.iter().map(|p| p.v).collect();
    assert_eq!(got, vec![6.0, 6.0, 6.0]);
    // Functions that do not accept the modifier fail as upstream's do.
    let e = instant_query(&s, "max_over_time(metric[1m] anchored)", 95_000, &on).unwrap_err();
    assert_eq!(
        e.to_string(),
        "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with max_over_time"
    );
    // Without the feature flag the keyword is refused.
    let e = instant_query(
        &s,
        "rate(metric[1m] smoothed)",
        95_000,
        &QueryOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "1:6: parse error: smoothed modifier is experimental and not enabled"
    );
}

#[test]
fn an_anchored_range_selector_alone_has_its_edge_values() {
    let s = counter_store();
    let out = instant_query(&s, "metric[20s] anchored", 95_000, &experimental()).unwrap();
    let Value::Matrix(m) = out.value else {
        panic!("not a matrix")
    };
    let got: Vec<(i64, f64)> = m[0].samples.iter().map(|p| (p.t, p.v)).collect();
    assert_eq!(
        got,
        vec![(75_000, 7.0), (80_000, 8.0), (90_000, 9.0), (95_000, 9.0)]
    );
}

#[test]
fn range_output_joins_steps_by_labels_and_rejects_duplicates_within_one() {
    let sample = |pairs: &[(&str, &str)], v: f64| Sample {
        labels: Arc::new(Labels::from_pairs(pairs.iter().copied())),
        v,
        drop_name: true,
    };
    let mut out = RangeOutput {
        steps: 2,
        ..RangeOutput::default()
    };
    // Two label sets that are one once the name is dropped, at different steps: one series.
    out.push(sample(&[("__name__", "a"), ("job", "x")], 1.0), 0)
        .unwrap();
    out.end_step();
    out.push(sample(&[("__name__", "b"), ("job", "x")], 2.0), 60)
        .unwrap();
    out.end_step();
    assert_eq!(out.series.len(), 1);
    assert_eq!(out.series[0].0, Labels::from_pairs([("job", "x")]));
    assert_eq!(out.series[0].1.len(), 2);
    // The same at one step: Prometheus's duplicate label set error.
    let e = out
        .push(sample(&[("__name__", "c"), ("job", "x")], 3.0), 60)
        .unwrap_err();
    assert!(e.to_string().contains("same labelset"), "{e}");
    // A shared label set found by address keeps its slot.
    let shared = sample(&[("job", "y")], 1.0);
    out.push(shared.clone(), 120).unwrap();
    out.push(shared, 180).unwrap();
    assert_eq!(out.series.len(), 2);
    assert_eq!(out.series[1].1.len(), 2);
}

/// Found by the `promql` fuzz target: promql-parser 0.11 panics on a range of 5e53 seconds.
#[test]
fn a_parser_panic_is_a_bad_query() {
    let q = "up[500000000000000000000000000000000000000000000000000000]";
    assert!(matches!(
        parse_query(q, &ParseContext::default()),
        Err(QueryError::BadData(_))
    ));
    assert!(crate::api::params::parse_selector(q).is_err());
    assert!(crate::config::parse_selector(q).is_err());
}

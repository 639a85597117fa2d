use super::*;
use crate::storage::{MatchOp, RejectReason};

fn cfg() -> TsdbConfig {
    TsdbConfig::default()
}

fn batch(labels: &Labels, samples: &[(i64, f64)]) -> Vec<SeriesSamples> {
    vec![SeriesSamples {
        labels: labels.clone(),
        samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
    }]
}

fn metric(name: &str, extra: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(std::iter::once(("__name__", name)).chain(extra.iter().copied()))
}

fn all(h: &Head, name: &str) -> Vec<Sample> {
    let m = Matcher::new(MatchOp::Equal, "__name__", name).unwrap();
    h.select(&[m], i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.samples)
        .collect()
}

#[test]
fn out_of_order_window_and_duplicates() {
    let mut h = Head::new(&cfg(), Default::default());
    let a = metric("a", &[]);
    let min = 60_000;
    let r = h
        .append(&batch(&a, &[(100 * min, 1.0), (101 * min, 2.0)]))
        .report;
    assert_eq!(r.accepted, 2);
    // Late but inside the 10 m window: accepted and merged at read.
    let out = h.append(&batch(&a, &[(95 * min, 0.5)]));
    assert_eq!(out.report.accepted, 1);
    assert_eq!(out.samples.len(), 1);
    // Older than the window.
    let r = h.append(&batch(&a, &[(90 * min, 0.1)])).report;
    assert_eq!(r.rejected.get(&RejectReason::OutOfOrder), Some(&1));
    assert!(r.first_rejection.unwrap().contains("out-of-order window"));
    // Re-delivery of stored samples (newest and out of order) is accepted and not stored again,
    // even long after the window.
    let out = h.append(&batch(&a, &[(101 * min, 2.0), (95 * min, 0.5)]));
    assert_eq!((out.report.accepted, out.samples.len()), (2, 0));
    // The same time with another value.
    let r = h
        .append(&batch(&a, &[(101 * min, 3.0), (95 * min, 9.0)]))
        .report;
    assert_eq!(r.rejected.get(&RejectReason::DuplicateTimestamp), Some(&2));
    // A stale marker is a value like any other, kept bit for bit.
    h.append(&batch(&a, &[(102 * min, crate::storage::stale_nan())]));
    h.append(&batch(&a, &[(200 * min, 5.0)]));
    let out = h.append(&batch(&a, &[(100 * min, 1.0)]));
    assert_eq!((out.report.accepted, out.samples.len()), (1, 0));
    let r = h.append(&batch(&a, &[(100 * min, 1.5)])).report;
    assert_eq!(r.rejected.get(&RejectReason::DuplicateTimestamp), Some(&1));
    let got = all(&h, "a");
    let ts: Vec<i64> = got.iter().map(|s| s.t).collect();
    assert_eq!(ts, [95 * min, 100 * min, 101 * min, 102 * min, 200 * min]);
    assert!(crate::storage::is_stale_nan(got[3].v));
}

#[test]
fn many_out_of_order_samples_merge_into_chunks() {
    let mut h = Head::new(&cfg(), Default::default());
    let a = metric("a", &[]);
    h.append(&batch(&a, &[(1_000_000, 0.0)]));
    for t in (0..500).rev() {
        let r = h
            .append(&batch(&a, &[(1_000_000 - 1 - t * 1000, t as f64)]))
            .report;
        assert_eq!(r.accepted, 1);
    }
    let got = all(&h, "a");
    assert_eq!(got.len(), 501);
    assert!(got.windows(2).all(|w| w[0].t < w[1].t));
}

#[test]
fn invalid_labels_are_rejected_per_sample() {
    let mut c = cfg();
    c.limits.max_labels_per_series = 3;
    c.limits.max_label_name_length = 8;
    c.limits.max_label_value_length = 8;
    let mut h = Head::new(&c, Default::default());
    let cases = [
        Labels::from_pairs([("job", "x")]),
        metric("a", &[("b", "1"), ("c", "2"), ("d", "3")]),
        metric("a", &[("very_long_name", "1")]),
        metric("a", &[("b", "very long value")]),
    ];
    for l in &cases {
        let r = h.append(&batch(l, &[(1, 1.0), (2, 2.0)])).report;
        assert_eq!(r.accepted, 0, "{l}");
        assert_eq!(
            r.rejected.get(&RejectReason::InvalidLabels),
            Some(&2),
            "{l}"
        );
    }
    assert_eq!(h.num_series(), 0);
}

#[test]
fn series_limits_per_tenant_and_metric() {
    let mut c = cfg();
    c.limits.max_series_per_tenant = 3;
    c.limits.max_series_per_metric = 2;
    let mut h = Head::new(&c, Default::default());
    for i in 0..3 {
        let r = h
            .append(&batch(&metric("a", &[("i", &i.to_string())]), &[(1, 1.0)]))
            .report;
        assert_eq!(r.accepted, usize::from(i < 2));
        if i == 2 {
            assert_eq!(r.rejected.get(&RejectReason::SeriesLimit), Some(&1));
            assert!(r.first_rejection.unwrap().contains("for metric \"a\""));
        }
    }
    // Existing series still take samples.
    let r = h
        .append(&batch(&metric("a", &[("i", "0")]), &[(2, 1.0)]))
        .report;
    assert_eq!(r.accepted, 1);
    assert_eq!(
        h.append(&batch(&metric("b", &[]), &[(1, 1.0)]))
            .report
            .accepted,
        1
    );
    let r = h.append(&batch(&metric("c", &[]), &[(1, 1.0)])).report;
    assert_eq!(r.rejected.get(&RejectReason::SeriesLimit), Some(&1));
    assert!(r.first_rejection.unwrap().contains("per tenant"));
    // Deleting a series frees its place.
    let ids = h.matching(&[Matcher::new(MatchOp::Equal, "__name__", "b").unwrap()]);
    h.apply_delete(&ids, i64::MIN, i64::MAX).unwrap();
    assert_eq!(
        h.append(&batch(&metric("c", &[]), &[(1, 1.0)]))
            .report
            .accepted,
        1
    );
}

#[test]
fn too_old_behind_retention() {
    let mut c = cfg();
    c.retention.time = std::time::Duration::from_secs(3600);
    let mut h = Head::new(&c, Default::default());
    h.append(&batch(&metric("a", &[]), &[(10_000_000, 1.0)]));
    let r = h
        .append(&batch(&metric("b", &[]), &[(1, 1.0), (9_000_000, 1.0)]))
        .report;
    assert_eq!(r.rejected.get(&RejectReason::TooOld), Some(&1));
    assert_eq!(r.accepted, 1);
}

#[test]
fn retention_drops_old_chunks() {
    let mut c = cfg();
    c.retention.time = std::time::Duration::from_secs(3600);
    let mut h = Head::new(&c, Default::default());
    let old = metric("old", &[]);
    let samples: Vec<(i64, f64)> = (0..240).map(|i| (i * 15_000, i as f64)).collect();
    h.append(&batch(&old, &samples));
    h.append(&batch(&metric("new", &[]), &[(20_000_000, 1.0)]));
    h.apply_retention();
    assert!(all(&h, "old").is_empty());
    assert_eq!(
        h.label_values("__name__", &[], i64::MIN, i64::MAX).unwrap(),
        ["new"]
    );
}

#[test]
fn per_metric_retention_rules() {
    let mut c = cfg();
    c.retention.time = std::time::Duration::from_secs(3600);
    c.retention.rules = vec![
        crate::config::RetentionRule {
            selector: "slo_total".into(),
            time: std::time::Duration::from_secs(30 * 86400),
        },
        crate::config::RetentionRule {
            selector: "{__name__=~\"debug_.*\"}".into(),
            time: std::time::Duration::from_secs(600),
        },
    ];
    let mut h = Head::new(&c, Default::default());
    let samples: Vec<(i64, f64)> = (0..480).map(|i| (i * 15_000, i as f64)).collect();
    for name in ["slo_total", "debug_x", "other"] {
        h.append(&batch(&metric(name, &[]), &samples));
    }
    h.apply_retention();
    // 2 h of data in 30-minute chunks: the default hour drops the first chunk (the second
    // ends at the cutoff), the 10-minute rule all closed ones, the 30-day rule none.
    assert_eq!(all(&h, "slo_total").len(), 480);
    assert_eq!(all(&h, "other").len(), 360);
    assert_eq!(all(&h, "debug_x").len(), 120);
    // Samples as old as the longest rule allows are accepted.
    let r = h
        .append(&batch(&metric("slo_total", &[("a", "b")]), &[(0, 1.0)]))
        .report;
    assert_eq!(r.accepted, 1);
}

#[test]
fn index_backed_metadata_and_stats() {
    let mut h = Head::new(&cfg(), Default::default());
    h.append(&batch(&metric("a", &[("job", "x")]), &[(10, 1.0)]));
    h.append(&batch(&metric("a", &[("job", "y")]), &[(20, 1.0)]));
    h.append(&batch(&metric("b", &[("env", "p")]), &[(30, 1.0)]));
    assert_eq!(
        h.label_names(&[], 0, 100).unwrap(),
        ["__name__", "env", "job"]
    );
    assert_eq!(h.label_values("job", &[], 0, 100).unwrap(), ["x", "y"]);
    // Narrow time ranges consult the samples.
    assert_eq!(h.label_values("job", &[], 15, 25).unwrap(), ["y"]);
    let m = Matcher::new(MatchOp::Equal, "__name__", "b").unwrap();
    assert_eq!(h.label_names(&[m], 0, 100).unwrap(), ["__name__", "env"]);
    let st = h.stats(10);
    assert_eq!(st.num_series, 3);
    assert_eq!(st.series_count_by_metric_name[0], ("a".to_string(), 2));
    assert_eq!((st.min_time, st.max_time), (Some(10), Some(30)));
    assert_eq!(st.num_label_pairs, 5);
}

/// Scale check, run by hand: `cargo test -p tsdb --release head_at_scale -- --ignored
/// --nocapture`. Prints resident memory per series and matcher latencies for 1 M series.
#[test]
#[ignore]
fn head_at_scale() {
    fn rss() -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    }
    let n = 1_000_000u32;
    let before = rss();
    let mut h = Head::new(&cfg(), Default::default());
    let mut build = std::time::Duration::ZERO;
    let started = std::time::Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let b = std::time::Instant::now();
        let batch: Vec<SeriesSamples> = chunk
            .iter()
            .map(|i| {
                let pod = format!("pod-{}", i / 10);
                let l = Labels::from_pairs([
                    ("__name__", format!("container_metric_{}", i % 10).as_str()),
                    ("namespace", format!("ns-{}", i % 50).as_str()),
                    ("pod", pod.as_str()),
                    ("container", "app"),
                    ("node", format!("node-{}", i % 100).as_str()),
                    ("job", "collector"),
                ]);
                SeriesSamples {
                    labels: l,
                    samples: (0..4)
                        .map(|k| Sample {
                            t: k * 15_000,
                            v: (k * i64::from(*i)) as f64,
                        })
                        .collect(),
                }
            })
            .collect();
        build += b.elapsed();
        assert_eq!(h.append(&batch).report.accepted, batch.len() * 4);
    }
    let ingest = started.elapsed() - build;
    let per_series = (rss() - before) / u64::from(n);
    let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
    let _ = h.select(&[m(MatchOp::Equal, "pod", "pod-4243")], 0, i64::MAX);
    let t = std::time::Instant::now();
    for i in 0..100 {
        let pod = format!("pod-{}", i * 97);
        assert_eq!(h.matching(&[m(MatchOp::Equal, "pod", &pod)]).len(), 10);
    }
    let eq = t.elapsed() / 100;
    let pod = h.select(&[m(MatchOp::Equal, "pod", "pod-4242")], 0, i64::MAX);
    let t = std::time::Instant::now();
    let re = h.matching(&[
        m(MatchOp::Equal, "__name__", "container_metric_3"),
        m(MatchOp::Regex, "namespace", "ns-1.*"),
        m(MatchOp::NotEqual, "node", "node-3"),
    ]);
    let rx = t.elapsed();
    // Steady state: one more sample for every existing series.
    let all: Vec<SeriesSamples> = h
        .select(&[], 0, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|s| SeriesSamples {
            labels: s.labels,
            samples: vec![Sample { t: 60_000, v: 1.0 }],
        })
        .collect();
    let t = std::time::Instant::now();
    for b in all.chunks(10_000) {
        h.append(b);
    }
    let steady = t.elapsed();
    println!(
        "{n} series: ingest (new series, 4 samples each) {ingest:?}, 1 sample to each existing \
         series {steady:?}, {per_series} bytes RSS/series, pod= select {eq:?} \
         ({} series), name=,ns=~,node!= {rx:?} ({} ids)",
        pod.unwrap().len(),
        re.len()
    );
    assert_eq!(h.num_series(), n as usize);
}

#[test]
fn series_with_colliding_hashes_stay_distinct() {
    // Force a collision by registering a second label set under an occupied hash.
    let mut h = Head::new(&cfg(), Default::default());
    let a = metric("a", &[]);
    let b = metric("b", &[]);
    h.append(&batch(&a, &[(1, 1.0)]));
    h.append(&batch(&b, &[(1, 2.0)]));
    let hb = labels_hash(&b);
    let id_b = h.by_hash.remove(&hb).unwrap();
    let ha = labels_hash(&a);
    h.by_hash.insert(hb, h.by_hash[&ha]); // b's hash now points at a
    h.collisions.insert(b.clone(), id_b);
    assert_eq!(h.lookup(&b), Some(id_b));
    assert_eq!(h.append(&batch(&b, &[(2, 3.0)])).report.accepted, 1);
    assert_eq!(all(&h, "b").len(), 2);
    assert_eq!(all(&h, "a").len(), 1);
}

/// Steady-state append cost, run by hand under a profiler:
/// `cargo test -p tsdb --release steady_appends -- --ignored --nocapture`.
#[test]
#[ignore]
fn steady_appends() {
    let n = 100_000u32;
    let mut h = Head::new(&cfg(), Default::default());
    let batches: Vec<Vec<Labels>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| {
            c.iter()
                .map(|i| {
                    Labels::from_pairs([
                        ("__name__", format!("container_metric_{}", i % 10).as_str()),
                        ("namespace", format!("ns-{}", i % 50).as_str()),
                        ("pod", format!("pod-{}", i / 10).as_str()),
                        ("container", "app"),
                        ("node", format!("node-{}", i % 100).as_str()),
                        ("job", "collector"),
                    ])
                })
                .collect()
        })
        .collect();
    let rounds = 60i64;
    let started = std::time::Instant::now();
    for r in 0..rounds {
        for b in &batches {
            let batch: Vec<SeriesSamples> = b
                .iter()
                .map(|l| SeriesSamples {
                    labels: l.clone(),
                    samples: vec![Sample {
                        t: r * 15_000,
                        v: (r * 1000) as f64,
                    }],
                })
                .collect();
            h.append(&batch);
        }
    }
    let per = started.elapsed() / (rounds as u32 * n);
    println!("{per:?} per sample ({n} series)");
}

#[test]
fn symbols_are_counted_and_freed() {
    let mut s = Symbols::default();
    let a = metric("m", &[("pod", "a")]);
    let b = metric("m", &[("pod", "b")]);
    let ia = s.intern_labels(&a);
    let ib = s.intern_labels(&b);
    assert_eq!(s.labels(&ia), a);
    assert!(s.equals(&ib, &b));
    assert!(!s.equals(&ia, &b));
    assert!(!s.equals(&ia, &metric("m", &[])));
    assert_eq!(s.get(&ib, "pod"), Some("b"));
    assert_eq!(s.names(&ib).collect::<Vec<_>>(), ["__name__", "pod"]);
    assert_eq!(s.len(), 5); // __name__ m pod a b
    s.release_labels(&ia);
    assert_eq!(s.len(), 4, "\"a\" is freed, the shared strings stay");
    // The freed id is reused without disturbing the other set.
    let c = metric("n", &[("pod", "c")]);
    let ic = s.intern_labels(&c);
    assert_eq!(s.labels(&ic), c);
    assert_eq!(s.labels(&ib), b);
    s.release_labels(&ib);
    s.release_labels(&ic);
    assert_eq!(s.len(), 0);
}

#[test]
fn removed_series_give_their_symbols_back() {
    let mut h = Head::new(&cfg(), Default::default());
    let a = metric("a", &[("pod", "p1")]);
    let b = metric("a", &[("pod", "p2")]);
    h.append(&batch(&a, &[(1, 1.0), (2, 2.0)]));
    h.append(&batch(&b, &[(1, 1.0)]));
    assert_eq!(h.symbols().len(), 5);
    let m = Matcher::new(MatchOp::Equal, "pod", "p1").unwrap();
    let ids = h.matching(&[m]);
    h.apply_delete(&ids, i64::MIN, i64::MAX).unwrap();
    assert_eq!(h.symbols().len(), 4);
    assert_eq!(h.num_series(), 1);
    // The same labels come back as a new series with their own symbols.
    h.append(&batch(&a, &[(5, 5.0)]));
    assert_eq!(h.symbols().len(), 5);
    let got = h.select(&[], 0, 10).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].labels, a);
    assert_eq!(got[0].samples, vec![Sample { t: 5, v: 5.0 }]);
    assert_eq!(got[1].labels, b);
}

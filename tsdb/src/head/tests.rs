use super::*;
use crate::storage::MatchOp;

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
    // Re-delivery of stored samples (newest and out of order) is accepted and not stored again.
    let out = h.append(&batch(&a, &[(101 * min, 2.0), (95 * min, 0.5)]));
    assert_eq!((out.report.accepted, out.samples.len()), (2, 0));
    // The same time with another value.
    let r = h
        .append(&batch(&a, &[(101 * min, 3.0), (95 * min, 9.0)]))
        .report;
    assert_eq!(r.rejected.get(&RejectReason::DuplicateTimestamp), Some(&2));
    // A stale marker is a value like any other, kept bit for bit.
    h.append(&batch(&a, &[(102 * min, crate::storage::stale_nan())]));
    let got = all(&h, "a");
    let ts: Vec<i64> = got.iter().map(|s| s.t).collect();
    assert_eq!(ts, [95 * min, 100 * min, 101 * min, 102 * min]);
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

//! The matching and conflict rules of `info()`; Prometheus's `info.test` runs in the `tests`
//! crate.

use super::*;
use crate::promql::{QueryOptions, Value, instant_query, range_query};
use crate::storage::{MemStorage, stale_nan};

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn selector(text: &str) -> Selector {
    let ctx = crate::promql::ParseContext::default();
    let p = crate::promql::parse_query(&format!("info(x, {text})"), &ctx).unwrap();
    let Expr::Call(c) = p.expr else {
        panic!("not a call")
    };
    Selector::new(c.args.args.get(1).map(|a| a.as_ref())).unwrap()
}

/// An info series for [`set`]: its labels and its (time, value) samples.
type Spec<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

fn set(series: &[Spec]) -> InfoSet {
    InfoSet::new(
        series
            .iter()
            .map(|(ls, pts)| {
                let pts = pts.iter().map(|(t, v)| Point { t: *t, v: *v }).collect();
                (l(ls), pts)
            })
            .collect(),
    )
}

#[test]
fn grids_hold_the_evaluation_times() {
    let g = Grid::range(10, 40, 10);
    assert_eq!(
        (g.index(10), g.index(40), g.index(50), g.index(15)),
        (Some(0), Some(3), None, None)
    );
    assert_eq!(Grid::range(7, 7, 0), Grid::single(7));
    // A subquery's steps are the multiples of its step in (lo, hi].
    let g = Grid::subquery(-60, 120, 60);
    assert_eq!((g.first, g.len, g.last()), (0, 3, 120));
    assert_eq!(Grid::subquery(0, 30, 60).len, 0);
}

#[test]
fn name_matchers_decide_what_is_an_info_series() {
    let target = l(&[("__name__", "target_info"), ("job", "a")]);
    let build = l(&[("__name__", "build_info"), ("job", "a")]);
    let other = l(&[("__name__", "up"), ("job", "a")]);
    let s = selector("{data=~\".+\"}");
    assert!(s.is_info(&target) && !s.is_info(&build) && !s.is_info(&other));
    let s = selector("{__name__=~\".+_info\", __name__!~\"target.*\"}");
    assert!(!s.is_info(&target) && s.is_info(&build) && !s.is_info(&other));
    // Only negative matchers: narrowed to names ending in `_info`.
    let s = selector("{__name__!=\"target_info\"}");
    assert!(!s.is_info(&target) && s.is_info(&build) && !s.is_info(&other));
    assert!(!s.is_info(&Labels::empty()));
}

#[test]
fn data_matchers_name_the_labels_to_copy() {
    let s = selector("{__name__=\"build_info\", version=~\".+\"}");
    assert!(s.copies("version") && !s.copies("commit"));
    assert!(
        !s.keeps_unmatched(),
        "version=~\".+\" refuses the empty string"
    );
    let s = selector("{}");
    assert!(s.copies("anything") && s.keeps_unmatched());
}

/// The info series `l` matches at `t` (after the index advanced through `ts` before).
fn current_at(index: &mut InfoIndex, t: i64, l: &Labels) -> Result<Vec<usize>, String> {
    index.advance(t, 300)?;
    let mut out = Vec::new();
    index.matching(&index.slots_of(l), &mut out);
    Ok(out)
}

#[test]
fn the_newest_info_sample_wins_and_equal_timestamps_conflict() {
    let old = [("__name__", "target_info"), ("job", "a"), ("v", "1")];
    let new = [("__name__", "target_info"), ("job", "a"), ("v", "2")];
    let base = l(&[("__name__", "m"), ("job", "a")]);
    let s = set(&[(&old, &[(0, 1.0), (60, 1.0)]), (&new, &[(90, 1.0)])]);
    let mut index = InfoIndex::new(&s);
    assert_eq!(current_at(&mut index, 60, &base), Ok(vec![0]));
    assert_eq!(current_at(&mut index, 100, &base), Ok(vec![1]));
    // Outside the lookback delta nothing is current.
    assert_eq!(current_at(&mut index, 500, &base), Ok(vec![]));
    // Times may also go back (off-grid evaluation).
    assert_eq!(current_at(&mut index, 60, &base), Ok(vec![0]));
    let s = set(&[(&old, &[(0, 1.0)]), (&new, &[(0, 1.0)])]);
    assert_eq!(
        current_at(&mut InfoIndex::new(&s), 10, &base).unwrap_err(),
        "found duplicate series for info metric: existing {__name__=\"target_info\", job=\"a\", v=\"1\"} @ 0, new {__name__=\"target_info\", job=\"a\", v=\"2\"} @ 0"
    );
    // A staleness marker ends a series.
    let s = set(&[(&old, &[(0, 1.0), (30, stale_nan())])]);
    let mut index = InfoIndex::new(&s);
    assert_eq!(current_at(&mut index, 10, &base), Ok(vec![0]));
    assert_eq!(current_at(&mut index, 40, &base), Ok(vec![]));
}

#[test]
fn series_match_on_the_identifying_labels_each_has() {
    let s = set(&[
        (
            &[
                ("__name__", "target_info"),
                ("instance", "i"),
                ("job", "a"),
                ("x", "1"),
            ],
            &[(0, 1.0)],
        ),
        (
            &[("__name__", "custom_info"), ("instance", "i"), ("y", "2")],
            &[(0, 1.0)],
        ),
    ]);
    let mut index = InfoIndex::new(&s);
    let both = l(&[("instance", "i"), ("job", "a")]);
    let inst = l(&[("instance", "i")]);
    // Series keep their order: target_info is 0, custom_info 1.
    assert_eq!(current_at(&mut index, 0, &both), Ok(vec![0]));
    assert_eq!(current_at(&mut index, 0, &inst), Ok(vec![1]));
    assert_eq!(current_at(&mut index, 0, &l(&[("job", "a")])), Ok(vec![]));
}

#[test]
fn enrichment_copies_data_labels_and_keeps_the_series_own() {
    let s = set(&[
        (
            &[
                ("__name__", "target_info"),
                ("job", "a"),
                ("x", "t"),
                ("y", "t"),
            ],
            &[(0, 1.0)],
        ),
        (
            &[
                ("__name__", "build_info"),
                ("job", "a"),
                ("x", "b"),
                ("z", "b"),
            ],
            &[(0, 1.0)],
        ),
        (
            &[("__name__", "other_info"), ("job", "a"), ("x", "b")],
            &[(0, 1.0)],
        ),
    ]);
    let base = l(&[("__name__", "m"), ("job", "a"), ("y", "own")]);
    let all = selector("{}");
    let out = s.enrich(&all, &[0], &base).unwrap().unwrap();
    assert_eq!(
        out,
        l(&[("__name__", "m"), ("job", "a"), ("x", "t"), ("y", "own")])
    );
    // Two info metrics giving one data label different values conflict ...
    assert_eq!(
        s.enrich(&all, &[0, 1], &base).unwrap_err(),
        "conflicting label: x"
    );
    // ... unless the values agree, or the label is not a data label asked for.
    let out = s.enrich(&all, &[1, 2], &base).unwrap().unwrap();
    assert_eq!((out.get("x"), out.get("z")), (Some("b"), Some("b")));
    let only_z = selector("{__name__=~\".+_info\", z=~\".+\"}");
    let out = s.enrich(&only_z, &[0, 1], &base).unwrap().unwrap();
    assert_eq!(
        out,
        l(&[("__name__", "m"), ("job", "a"), ("y", "own"), ("z", "b")])
    );
    // Nothing to add: the series is kept as it is.
    let only_y = selector("{y=~\".*\"}");
    assert_eq!(s.enrich(&only_y, &[1], &base).unwrap(), None);
}

fn store() -> MemStorage {
    let s = MemStorage::new();
    for i in 0..10 {
        let t = i * 60_000;
        s.insert(
            &l(&[("__name__", "up"), ("instance", "i"), ("job", "a")]),
            t,
            1.0,
        );
        let version = if i < 5 { "1" } else { "2" };
        s.insert(
            &l(&[
                ("__name__", "target_info"),
                ("instance", "i"),
                ("job", "a"),
                ("version", version),
            ]),
            t,
            1.0,
        );
        s.insert(
            &l(&[
                ("__name__", "build_info"),
                ("instance", "i"),
                ("job", "a"),
                ("version", "9"),
            ]),
            t,
            1.0,
        );
    }
    s
}

fn experimental() -> QueryOptions {
    QueryOptions {
        experimental: true,
        ..QueryOptions::default()
    }
}

#[test]
fn info_is_refused_unless_experimental_functions_are_on() {
    let s = store();
    let err = instant_query(&s, "up + info(up)", 0, &QueryOptions::default()).unwrap_err();
    assert!(matches!(err, QueryError::BadData(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "1:6: parse error: function \"info\" is not enabled"
    );
    assert!(instant_query(&s, "up + info(up)", 0, &experimental()).is_ok());
}

#[test]
fn info_follows_info_series_that_change_over_a_range() {
    let s = store();
    let out = range_query(&s, "info(up)", 0, 540_000, 60_000, &experimental()).unwrap();
    let Value::Matrix(m) = out.value else {
        panic!("not a matrix")
    };
    let got: Vec<(String, Vec<i64>)> = m
        .iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.samples.iter().map(|p| p.t / 60_000).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "up{instance=\"i\", job=\"a\", version=\"1\"}".to_string(),
                vec![0, 1, 2, 3, 4]
            ),
            (
                "up{instance=\"i\", job=\"a\", version=\"2\"}".to_string(),
                vec![5, 6, 7, 8, 9]
            ),
        ]
    );
    // Two info metrics with different versions at once conflict.
    let err = range_query(
        &s,
        "info(up, {__name__=~\".+_info\"})",
        0,
        540_000,
        60_000,
        &experimental(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "conflicting label: version");
    // In a subquery, as in a range query.
    let out = instant_query(
        &s,
        "count_over_time(info(up)[10m:1m])",
        540_000,
        &experimental(),
    )
    .unwrap();
    let Value::Vector(v) = out.value else {
        panic!("not a vector")
    };
    let got: Vec<(String, f64)> = v.iter().map(|s| (s.labels.to_string(), s.v)).collect();
    assert_eq!(
        got,
        [
            (
                "{instance=\"i\", job=\"a\", version=\"1\"}".to_string(),
                5.0
            ),
            (
                "{instance=\"i\", job=\"a\", version=\"2\"}".to_string(),
                5.0
            ),
        ]
    );
}

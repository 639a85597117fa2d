use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::api::remote_decode::decode_write_request;
use crate::api::remote_proto::{self, Label, TimeSeries, WriteRequest};
use crate::config::TsdbConfig;
use crate::storage::{MatchOp, Matcher};

type Pairs<'a> = &'a [(&'a str, &'a [u8])];
type Series<'a> = (Pairs<'a>, &'a [(i64, f64)]);
/// Series of a request: which, with their labels reversed or not, and samples.
type Request = Vec<(usize, bool, Vec<(i64, i8)>)>;
type Owned<'a> = Vec<(Vec<(&'a str, &'a [u8])>, Vec<(i64, f64)>)>;

/// The raw batch a remote-write request carrying these series decodes to.
fn raw(series: &[Series<'_>]) -> RawBatch {
    let req = WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: Bytes::copy_from_slice(n.as_bytes()),
                        value: Bytes::copy_from_slice(v),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| remote_proto::Sample { value, timestamp })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    let buf = Bytes::from(req.encode_to_vec());
    let mut b = RawBatch::new(buf.clone()).unwrap();
    decode_write_request(&buf, |ts| {
        b.push(ts.labels_span, &ts.labels, &ts.samples).unwrap();
    })
    .unwrap();
    b
}

const A: &[(&str, &[u8])] = &[("__name__", b"a"), ("job", b"x")];
const B: &[(&str, &[u8])] = &[("__name__", b"b"), ("job", b"x")];

fn labels(pairs: &[(&str, &[u8])]) -> Labels {
    Labels::from_pairs(
        pairs
            .iter()
            .map(|(n, v)| (*n, std::str::from_utf8(v).unwrap())),
    )
}

/// Every series with its samples.
fn all(h: &Head) -> Vec<(String, Vec<(i64, f64)>)> {
    let m = Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap();
    h.select(&[m], i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.samples.iter().map(|p| (p.t, p.v)).collect(),
            )
        })
        .collect()
}

fn id_of(h: &Head, pairs: &[(&str, &[u8])]) -> Option<SeriesId> {
    h.lookup(&labels(pairs))
}

#[test]
fn known_series_are_found_from_raw_labels() {
    let mut h = Head::new(&TsdbConfig::default(), Default::default());
    let out = h.append_raw(&raw(&[(A, &[(1, 1.0)]), (B, &[(1, 5.0)])]));
    assert_eq!(out.report.accepted, 2);
    assert_eq!(out.new_series.len(), 2);
    assert_eq!(h.refs.len(), 2);
    let out = h.append_raw(&raw(&[(A, &[(2, 2.0), (3, 3.0)])]));
    assert_eq!((out.report.accepted, out.new_series.len()), (2, 0));
    let a = id_of(&h, A).unwrap();
    assert!(out.samples.iter().all(|(id, _)| *id == a));
    // The label-set path finds the same series.
    let out = h.append(&[SeriesSamples {
        labels: labels(A),
        samples: vec![Sample { t: 4, v: 4.0 }],
    }]);
    assert_eq!((out.report.accepted, out.new_series.len()), (1, 0));
    assert_eq!(h.num_series(), 2);
    assert_eq!(
        all(&h),
        [
            (
                "a{job=\"x\"}".to_string(),
                vec![(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
            ),
            ("b{job=\"x\"}".to_string(), vec![(1, 5.0)]),
        ]
    );
}

#[test]
fn labels_not_as_stored_are_the_same_series_but_not_cached() {
    let mut h = Head::new(&TsdbConfig::default(), Default::default());
    let unsorted: &[(&str, &[u8])] = &[("job", b"x"), ("__name__", b"a")];
    let empty: &[(&str, &[u8])] = &[("__name__", b"a"), ("e", b""), ("job", b"x")];
    let r = h.append_raw(&raw(&[(unsorted, &[(1, 1.0)])]));
    assert_eq!(r.report.accepted, 1);
    let r = h.append_raw(&raw(&[(empty, &[(2, 1.0)])]));
    assert_eq!((r.report.accepted, r.new_series.len()), (1, 0));
    assert_eq!(h.refs.len(), 0);
    let r = h.append_raw(&raw(&[(A, &[(3, 1.0)])]));
    assert_eq!((r.report.accepted, r.new_series.len()), (1, 0));
    assert_eq!(h.refs.len(), 1);
    // A cached series sent with its labels in another order is still found.
    let r = h.append_raw(&raw(&[(unsorted, &[(4, 1.0)])]));
    assert_eq!((r.report.accepted, r.new_series.len()), (1, 0));
    assert_eq!(h.num_series(), 1);
    assert_eq!(all(&h)[0].1.len(), 4);
}

#[test]
fn a_dropped_series_ref_never_takes_samples() {
    let mut h = Head::new(&TsdbConfig::default(), Default::default());
    h.append_raw(&raw(&[(A, &[(1, 1.0)])]));
    let old = id_of(&h, A).unwrap();
    let cached = h.refs.entries();
    let ids = h.matching(&[Matcher::new(MatchOp::Equal, "__name__", "a").unwrap()]);
    h.apply_delete(&ids, i64::MIN, i64::MAX).unwrap();
    assert_eq!((h.num_series(), h.refs.len()), (0, 0));
    // Even a stale entry (had it survived) does not send samples to the removed series.
    h.refs.restore(&cached);
    h.append_raw(&raw(&[(B, &[(2, 2.0)])]));
    let r = h.append_raw(&raw(&[(A, &[(3, 3.0)])]));
    assert_eq!((r.report.accepted, r.new_series.len()), (1, 1));
    let new = id_of(&h, A).unwrap();
    assert_ne!(new, old);
    assert!(h.get(old).is_none());
    assert_eq!(
        all(&h),
        [
            ("a{job=\"x\"}".to_string(), vec![(3, 3.0)]),
            ("b{job=\"x\"}".to_string(), vec![(2, 2.0)]),
        ]
    );
    let r = h.append_raw(&raw(&[(A, &[(4, 4.0)])]));
    assert_eq!(r.samples, [(new, Sample { t: 4, v: 4.0 })]);
}

#[test]
fn a_series_recreated_after_truncation_gets_samples() {
    let mut h = Head::new(&TsdbConfig::default(), Default::default());
    h.append_raw(&raw(&[
        (A, &[(1_000, 1.0)]),
        (B, &[(1_000, 1.0), (10_000, 2.0)]),
    ]));
    let (removed, res) = h.truncate_before(5_000);
    res.unwrap();
    assert_eq!(removed, 1);
    assert_eq!(h.refs.len(), 1);
    let r = h.append_raw(&raw(&[
        (A, &[(1_000, 1.0), (6_000, 6.0)]),
        (B, &[(11_000, 3.0)]),
    ]));
    assert_eq!(r.report.accepted, 2);
    assert_eq!(r.report.rejected.get(&RejectReason::TooOld), Some(&1));
    assert_eq!(r.new_series.len(), 1);
    assert_eq!(h.refs.len(), 2);
    assert_eq!(
        all(&h),
        [
            ("a{job=\"x\"}".to_string(), vec![(6_000, 6.0)]),
            (
                "b{job=\"x\"}".to_string(),
                vec![(10_000, 2.0), (11_000, 3.0)]
            ),
        ]
    );
}

#[test]
fn checks_and_limits_apply_to_new_series() {
    let mut c = TsdbConfig::default();
    c.limits.max_series_per_tenant = 1;
    c.limits.max_label_value_length = 8;
    let mut h = Head::new(&c, Default::default());
    assert_eq!(h.append_raw(&raw(&[(A, &[(1, 1.0)])])).report.accepted, 1);
    for _ in 0..2 {
        let r = h.append_raw(&raw(&[(B, &[(1, 1.0), (2, 2.0)])])).report;
        assert_eq!(r.rejected.get(&RejectReason::SeriesLimit), Some(&2));
    }
    assert_eq!(h.refs.len(), 1);
    let cases: [(Pairs<'_>, &str); 5] = [
        (
            &[("__name__", b"a"), ("job", b"very long value")],
            "longer than the limit",
        ),
        (
            &[("job", b"x")],
            "invalid labels {job=\"x\"}: no metric name",
        ),
        (
            &[("__name__", b"a"), ("job", b"x"), ("job", b"y")],
            "duplicate label name \"job\"",
        ),
        (&[("__name__", b"a"), ("", b"x")], "empty label name"),
        (&[("__name__", b"a"), ("job", b"\xff")], "not valid UTF-8"),
    ];
    for (pairs, why) in cases {
        let r = h.append_raw(&raw(&[(pairs, &[(1, 1.0), (2, 2.0)])])).report;
        assert_eq!(r.rejected.get(&RejectReason::InvalidLabels), Some(&2));
        let first = r.first_rejection.unwrap();
        assert!(first.contains(why), "{first}");
    }
    assert_eq!((h.num_series(), h.refs.len()), (1, 1));
}

/// One step of the comparison below: a request of (series, label order reversed, samples),
/// a delete or a truncation.
#[derive(Clone, Debug)]
enum Op {
    Write(Request),
    Delete(usize),
    Truncate(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let write = prop::collection::vec(
        (
            0usize..4,
            any::<bool>(),
            prop::collection::vec((0i64..40, 0i8..3), 0..4),
        ),
        1..5,
    )
    .prop_map(Op::Write);
    prop_oneof![
        6 => write,
        1 => (0usize..4).prop_map(Op::Delete),
        1 => (0i64..40).prop_map(|t| Op::Truncate(t * 60_000)),
    ]
}

proptest! {
    /// The raw path and the label-set path store the same samples and report the same counts.
    #[test]
    fn raw_and_label_paths_agree(ops in prop::collection::vec(op(), 1..30)) {
        let pool: [&[(&str, &[u8])]; 4] = [
            A,
            B,
            &[("__name__", b"a"), ("job", b"y")],
            &[("__name__", b"c"), ("i", b"1"), ("z", b"2")],
        ];
        let mut c = TsdbConfig::default();
        c.limits.max_series_per_tenant = 3;
        let mut by_raw = Head::new(&c, Default::default());
        let mut by_labels = Head::new(&c, Default::default());
        for op in ops {
            match op {
                Op::Write(series) => {
                    let owned: Owned<'_> = series
                        .iter()
                        .map(|(i, rev, s)| {
                            let mut l = pool[*i].to_vec();
                            if *rev {
                                l.reverse();
                            }
                            (l, s.iter().map(|&(t, v)| (t * 60_000, f64::from(v))).collect())
                        })
                        .collect();
                    let req: Vec<Series<'_>> =
                        owned.iter().map(|(l, s)| (&l[..], &s[..])).collect();
                    let batch: Vec<SeriesSamples> = owned
                        .iter()
                        .map(|(l, s)| SeriesSamples {
                            labels: labels(l),
                            samples: s.iter().map(|&(t, v)| Sample { t, v }).collect(),
                        })
                        .collect();
                    let a = by_raw.append_raw(&raw(&req)).report;
                    let b = by_labels.append(&batch).report;
                    prop_assert_eq!(a.accepted, b.accepted);
                    prop_assert_eq!(a.rejected, b.rejected);
                }
                Op::Delete(i) => {
                    let name = std::str::from_utf8(pool[i][0].1).unwrap();
                    let m = [Matcher::new(MatchOp::Equal, "__name__", name).unwrap()];
                    for h in [&mut by_raw, &mut by_labels] {
                        let ids = h.matching(&m);
                        h.apply_delete(&ids, i64::MIN, i64::MAX).unwrap();
                    }
                }
                Op::Truncate(t) => {
                    by_raw.truncate_before(t).1.unwrap();
                    by_labels.truncate_before(t).1.unwrap();
                }
            }
            prop_assert_eq!(all(&by_raw), all(&by_labels));
            prop_assert!(by_raw.refs.len() <= by_raw.num_series());
        }
    }
}

use proptest::prelude::*;

use super::log::DurableExemplars;
use super::*;
use crate::storage::{MatchOp, Matcher};

fn series(name: &str) -> Labels {
    Labels::from_pairs([("__name__", name), ("job", "api")])
}

fn ex(trace: &str, value: f64, t: i64) -> Exemplar {
    Exemplar {
        labels: Labels::from_pairs([("trace_id", trace)]),
        value,
        t,
        has_ts: true,
    }
}

fn all() -> Vec<Vec<Matcher>> {
    vec![vec![
        Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap(),
    ]]
}

fn times(b: &ExemplarBuffer, name: &str) -> Vec<i64> {
    let m = vec![vec![
        Matcher::new(MatchOp::Equal, "__name__", name).unwrap(),
    ]];
    b.select(&m, i64::MIN, i64::MAX)
        .into_iter()
        .flat_map(|s| s.exemplars.into_iter().map(|e| e.t))
        .collect()
}

#[test]
fn capacity_evicts_the_oldest_arrival_whatever_its_series() {
    let mut b = ExemplarBuffer::new(3, 0);
    b.add(&series("a"), ex("1", 1.0, 10)).unwrap();
    b.add(&series("b"), ex("2", 2.0, 5)).unwrap();
    b.add(&series("a"), ex("3", 3.0, 20)).unwrap();
    assert_eq!((b.len(), b.num_series()), (3, 2));
    // Full: the next overwrites a@10, then b@5 (b's only one: the series goes).
    b.add(&series("c"), ex("4", 4.0, 1)).unwrap();
    assert_eq!(times(&b, "a"), [20]);
    b.add(&series("c"), ex("5", 5.0, 2)).unwrap();
    assert!(times(&b, "b").is_empty());
    assert_eq!(b.num_series(), 2);
    assert_eq!(times(&b, "c"), [1, 2]);
    // The series' own oldest can be the one evicted.
    b.add(&series("a"), ex("6", 6.0, 30)).unwrap();
    assert_eq!(times(&b, "a"), [30]);
    assert_eq!(b.len(), 3);
    let order: Vec<i64> = b.iter_arrival().map(|(_, e)| e.t).collect();
    assert_eq!(order, [1, 2, 30]);
}

#[test]
fn duplicates_and_out_of_order_without_a_window() {
    let mut b = ExemplarBuffer::new(10, 0);
    let s = series("a");
    b.add(&s, ex("x", 1.0, 100)).unwrap();
    assert_eq!(b.add(&s, ex("x", 1.0, 100)), Err(ExemplarReject::Duplicate));
    assert_eq!(b.add(&s, ex("y", 1.0, 99)), Err(ExemplarReject::OutOfOrder));
    // Same time: ordered by value, then labels.
    assert_eq!(
        b.add(&s, ex("x", 0.5, 100)),
        Err(ExemplarReject::OutOfOrder)
    );
    b.add(&s, ex("x", 2.0, 100)).unwrap();
    assert_eq!(
        b.add(&s, ex("a", 2.0, 100)),
        Err(ExemplarReject::OutOfOrder)
    );
    b.add(&s, ex("z", 2.0, 100)).unwrap();
    // Another series is not affected.
    b.add(&series("b"), ex("x", 1.0, 1)).unwrap();
    assert_eq!(times(&b, "a"), [100, 100, 100]);
    // Without their own timestamps (a scrape's), the same exemplar at a later scrape is a
    // duplicate.
    let mut untimed = ex("u", 3.0, 200);
    untimed.has_ts = false;
    b.add(&s, untimed.clone()).unwrap();
    untimed.t = 215;
    assert_eq!(b.add(&s, untimed), Err(ExemplarReject::Duplicate));
}

#[test]
fn out_of_order_window_inserts_in_time_order() {
    let mut b = ExemplarBuffer::new(10, 50);
    let s = series("a");
    b.add(&s, ex("1", 1.0, 100)).unwrap();
    b.add(&s, ex("2", 1.0, 200)).unwrap();
    b.add(&s, ex("3", 1.0, 160)).unwrap();
    b.add(&s, ex("4", 1.0, 151)).unwrap();
    assert_eq!(
        b.add(&s, ex("5", 1.0, 150)),
        Err(ExemplarReject::OutOfOrder),
        "at the window's edge"
    );
    // Within the window but at a time already held: taken as the same.
    assert_eq!(b.add(&s, ex("6", 9.0, 160)), Err(ExemplarReject::Duplicate));
    assert_eq!(times(&b, "a"), [100, 151, 160, 200]);
}

#[test]
fn label_length_and_disabled() {
    let mut b = ExemplarBuffer::new(10, 0);
    let s = series("a");
    let long = "é".repeat(MAX_LABEL_RUNES - "trace_id".len());
    b.add(&s, ex(&long, 1.0, 1)).unwrap();
    let too_long = format!("{long}x");
    assert_eq!(
        b.add(&s, ex(&too_long, 1.0, 2)),
        Err(ExemplarReject::LabelLength)
    );
    let mut off = ExemplarBuffer::new(0, 0);
    assert_eq!(off.add(&s, ex("x", 1.0, 1)), Err(ExemplarReject::Disabled));
    assert!(off.select(&all(), i64::MIN, i64::MAX).is_empty());
}

#[test]
fn select_by_time_range_and_matcher_sets() {
    let mut b = ExemplarBuffer::new(100, 0);
    for t in 0..10 {
        b.add(&series("a"), ex("a", t as f64, t * 10)).unwrap();
        b.add(&series("b"), ex("b", t as f64, t * 10 + 5)).unwrap();
    }
    let got = b.select(&all(), 20, 40);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].labels, series("a"));
    let ts: Vec<i64> = got[0].exemplars.iter().map(|e| e.t).collect();
    assert_eq!(ts, [20, 30, 40]);
    let ts: Vec<i64> = got[1].exemplars.iter().map(|e| e.t).collect();
    assert_eq!(ts, [25, 35]);
    assert!(b.select(&all(), 100, 200).is_empty());
    let only_b = vec![
        vec![Matcher::new(MatchOp::Equal, "__name__", "b").unwrap()],
        vec![Matcher::new(MatchOp::Equal, "__name__", "nope").unwrap()],
    ];
    let got = b.select(&only_b, i64::MIN, i64::MAX);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].exemplars.len(), 10);
    assert!(b.select(&[], i64::MIN, i64::MAX).is_empty());
}

/// A model of the buffer: every accepted exemplar in arrival order; the newest `capacity`
/// of them remain.
#[derive(Default)]
struct Model {
    arrivals: Vec<(Labels, Exemplar)>,
}

proptest! {
    #[test]
    fn buffer_keeps_the_newest_arrivals_in_time_order(
        ops in prop::collection::vec((0usize..4, 0i64..60, 0u8..3), 1..120),
        capacity in 1usize..12,
        window in prop::sample::select(vec![0i64, 10, 1000]),
    ) {
        let mut b = ExemplarBuffer::new(capacity, window);
        let mut model = Model::default();
        for (s, t, v) in ops {
            let labels = series(&format!("s{s}"));
            let e = ex("t", f64::from(v), t);
            if b.add(&labels, e.clone()).is_ok() {
                model.arrivals.push((labels, e));
            }
            let kept = &model.arrivals[model.arrivals.len().saturating_sub(capacity)..];
            prop_assert_eq!(b.len(), kept.len());
            let got: Vec<(Labels, i64, u64)> = b
                .iter_arrival()
                .map(|(l, e)| (l.clone(), e.t, e.value.to_bits()))
                .collect();
            let want: Vec<(Labels, i64, u64)> = kept
                .iter()
                .map(|(l, e)| (l.clone(), e.t, e.value.to_bits()))
                .collect();
            prop_assert_eq!(got, want);
            for sel in b.select(&all(), i64::MIN, i64::MAX) {
                let ts: Vec<i64> = sel.exemplars.iter().map(|e| e.t).collect();
                let mut sorted = ts.clone();
                sorted.sort_unstable();
                prop_assert_eq!(ts, sorted);
                let n = kept.iter().filter(|(l, _)| *l == sel.labels).count();
                prop_assert_eq!(sel.exemplars.len(), n);
            }
        }
    }
}

#[test]
fn durable_exemplars_survive_reopen_and_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = |from: i64, n: i64| -> Vec<SeriesExemplars> {
        vec![SeriesExemplars {
            labels: series("a"),
            exemplars: (from..from + n).map(|t| ex("x", t as f64, t)).collect(),
        }]
    };
    {
        let d = DurableExemplars::open(tmp.path(), 1000, 0).unwrap();
        let r = d.append(&batch(0, 10)).unwrap();
        assert_eq!(r.accepted, 10);
        let r = d.append(&batch(5, 10)).unwrap();
        assert_eq!(r.accepted, 5);
        // 9 is the newest again (a duplicate), 5..=8 are out of order.
        assert_eq!(r.rejected[&ExemplarReject::Duplicate], 1);
        assert_eq!(r.rejected[&ExemplarReject::OutOfOrder], 4);
        assert_eq!(
            r.first_out_of_order.as_deref(),
            Some("out of order exemplar for series a{job=\"api\"}")
        );
        // Dropped without a close.
    }
    let d = DurableExemplars::open(tmp.path(), 1000, 0).unwrap();
    assert_eq!(d.len(), 15);
    let got = d.select(&all(), 3, 4);
    assert_eq!(got[0].exemplars, vec![ex("x", 3.0, 3), ex("x", 4.0, 4)]);
    // A smaller capacity at the next open keeps the newest.
    drop(d);
    let d = DurableExemplars::open_with(tmp.path(), 4, 0, 1024).unwrap();
    let ts: Vec<i64> = d.select(&all(), i64::MIN, i64::MAX)[0]
        .exemplars
        .iter()
        .map(|e| e.t)
        .collect();
    assert_eq!(ts, [11, 12, 13, 14]);
    // Many appends: the file is rewritten as a snapshot instead of growing without bound.
    let mut largest = 0;
    for k in 0..200 {
        d.append(&batch(100 + k * 10, 10)).unwrap();
        largest = largest.max(d.file_size());
    }
    assert!(largest < 2048, "{largest}");
    drop(d);
    let d = DurableExemplars::open(tmp.path(), 4, 0).unwrap();
    let ts: Vec<i64> = d.select(&all(), i64::MIN, i64::MAX)[0]
        .exemplars
        .iter()
        .map(|e| e.t)
        .collect();
    assert_eq!(ts, [2096, 2097, 2098, 2099]);
}

#[test]
fn a_torn_tail_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let d = DurableExemplars::open(tmp.path(), 100, 0).unwrap();
        for t in 0..3 {
            d.append(&[SeriesExemplars {
                labels: series("a"),
                exemplars: vec![ex("x", 1.0, t)],
            }])
            .unwrap();
        }
    }
    let path = tmp.path().join(log::FILE);
    let mut data = std::fs::read(&path).unwrap();
    let n = data.len();
    data.truncate(n - 3);
    std::fs::write(&path, &data).unwrap();
    let d = DurableExemplars::open(tmp.path(), 100, 0).unwrap();
    assert_eq!(d.len(), 2);
    // Appends go on after the cut.
    let r = d
        .append(&[SeriesExemplars {
            labels: series("a"),
            exemplars: vec![ex("x", 1.0, 5)],
        }])
        .unwrap();
    assert_eq!(r.accepted, 1);
    drop(d);
    assert_eq!(DurableExemplars::open(tmp.path(), 100, 0).unwrap().len(), 3);
}

/// Figures, not assertions: `cargo test -p tsdb --release -- --ignored exemplar_throughput
/// --nocapture`.
#[test]
#[ignore]
fn exemplar_throughput() {
    let cpu = || {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0.0, |ns| ns as f64 / 1e9)
    };
    let labels: Vec<Labels> = (0..10_000)
        .map(|i| {
            Labels::from_pairs([
                (
                    "__name__",
                    "http_request_duration_seconds_bucket".to_string(),
                ),
                ("job", "api".to_string()),
                ("pod", format!("api-{}", i / 10)),
                ("le", format!("{}", i % 10)),
            ])
        })
        .collect();
    let batch = |round: i64| -> Vec<SeriesExemplars> {
        labels
            .iter()
            .map(|l| SeriesExemplars {
                labels: l.clone(),
                exemplars: vec![ex("0123456789abcdef0123456789abcdef", 0.5, round * 15_000)],
            })
            .collect()
    };
    let mut b = ExemplarBuffer::new(DEFAULT_MAX_EXEMPLARS, 0);
    let started = cpu();
    for round in 0..30 {
        for s in batch(round) {
            b.add(&s.labels, s.exemplars[0].clone()).unwrap();
        }
    }
    println!(
        "buffer: {:.0} exemplars added per CPU-second (full at {})",
        300_000.0 / (cpu() - started),
        b.len()
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = DurableExemplars::open(tmp.path(), DEFAULT_MAX_EXEMPLARS, 0).unwrap();
    let started = cpu();
    let wall = std::time::Instant::now();
    for round in 0..30 {
        d.append(&batch(round)).unwrap();
    }
    println!(
        "durable: {:.0} exemplars per CPU-second, {:.0} per second (batches of 10000, one fsync each); file {} bytes",
        300_000.0 / (cpu() - started),
        300_000.0 / wall.elapsed().as_secs_f64(),
        d.file_size()
    );
}

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::{BlocksConfig, Downsampling, TsdbConfig};
use crate::labels::Labels;
use crate::promql::{QueryOptions, Value, instant_query};
use crate::storage::{Appendable, MatchOp, Matcher, MemStorage, Queryable, SeriesSamples};

/// Prometheus's counter increase between the first and last sample (resets counted).
fn increase(s: &[Sample]) -> f64 {
    s.windows(2)
        .map(|w| {
            if w[1].v >= w[0].v {
                w[1].v - w[0].v
            } else {
                w[1].v
            }
        })
        .sum()
}

/// A counter sampled at irregular times, rising by random steps, with resets at least
/// `res` apart.
fn counter(res: i64) -> impl Strategy<Value = Vec<Sample>> {
    proptest::collection::vec((1i64..40_000, 0u32..1000, 0u8..40), 1..400).prop_map(move |v| {
        let (mut t, mut c, mut last_reset) = (0i64, 0f64, i64::MIN / 2);
        let mut out = Vec::new();
        for (dt, inc, reset) in v {
            t += dt;
            if reset == 0 && t - last_reset > 2 * res {
                c = f64::from(inc);
                last_reset = t;
            } else {
                c += f64::from(inc);
            }
            out.push(Sample { t, v: c });
        }
        out
    })
}

proptest! {
    /// Downsampled samples are a subset with the last sample of every interval, idempotent,
    /// and keep a counter's increase between them when resets are rarer than intervals.
    #[test]
    fn downsampling_keeps_last_samples_and_counter_increase(s in counter(60_000)) {
        let res = 60_000;
        let d = downsample(&s, res);
        prop_assert!(d.iter().all(|p| s.contains(p)));
        prop_assert!(d.windows(2).all(|w| w[0].t < w[1].t));
        for p in &s {
            let w = p.t.div_euclid(res);
            let last = s.iter().rev().find(|q| q.t.div_euclid(res) == w).unwrap();
            prop_assert!(d.contains(last));
        }
        prop_assert_eq!(downsample(&d, res), d.clone());
        // From the first kept sample on (the first interval's earlier samples are gone).
        let from = s.iter().position(|p| p.t == d[0].t).unwrap();
        prop_assert_eq!(increase(&d), increase(&s[from..]));
    }
}

#[test]
fn old_blocks_are_downsampled_and_queries_read_them() {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TsdbConfig {
        blocks: BlocksConfig {
            range: Duration::from_secs(2 * 3600),
            max_range: Duration::ZERO,
            downsampling: vec![Downsampling {
                age: Duration::from_secs(24 * 3600),
                resolution: Duration::from_secs(300),
            }],
        },
        ..TsdbConfig::default()
    };
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    let raw = MemStorage::new();
    let labels = Labels::from_pairs([("__name__", "requests_total")]);
    // Three days at 15 s, one request per second, a reset every 7 h.
    let mut batch = Vec::new();
    let mut c = 0.0;
    for k in 0..(72 * HOUR / 15_000) {
        let t = k * 15_000;
        c = if t % (7 * HOUR) == 0 { 0.0 } else { c + 15.0 };
        batch.push(Sample { t, v: c });
        if batch.len() == 240 {
            let b = [SeriesSamples {
                labels: labels.clone(),
                samples: std::mem::take(&mut batch),
            }];
            db.append(&b).unwrap();
            raw.append(&b).unwrap();
            db.maintain().unwrap();
        }
    }
    db.maintain().unwrap();
    let blocks = db.blocks();
    let old: Vec<_> = blocks.iter().filter(|b| b.max_t() <= 48 * HOUR).collect();
    assert!(!old.is_empty());
    assert!(old.iter().all(|b| b.meta().resolution == 300_000));
    assert!(
        blocks
            .iter()
            .filter(|b| b.min_t() >= 48 * HOUR)
            .all(|b| b.meta().resolution == 0)
    );
    // Old data: one sample per 5 m (plus one per reset) instead of 20.
    let m = Matcher::new(MatchOp::Equal, "__name__", "requests_total").unwrap();
    let got = db
        .select(std::slice::from_ref(&m), 0, 24 * HOUR - 1)
        .unwrap();
    let n = got[0].samples.len();
    assert!((288..=288 + 8).contains(&n), "{n}");
    // The same answers from raw and downsampled data for long windows.
    let opts = QueryOptions::default();
    for (expr, t) in [
        ("increase(requests_total[1d])", 24 * HOUR),
        ("rate(requests_total[1h])", 10 * HOUR),
        ("requests_total", 20 * HOUR),
    ] {
        let value = |q: &dyn Queryable| -> f64 {
            match instant_query(q, expr, t, &opts).unwrap().value {
                Value::Vector(v) if v.len() == 1 => v[0].v,
                other => panic!("{expr}: {other:?}"),
            }
        };
        let (x, y) = (value(&db), value(&raw));
        assert!((x - y).abs() <= y.abs() * 1e-3, "{expr}: {x} vs {y}");
    }
    // Reopen: the downsampled blocks replaced the raw ones for good.
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    assert_eq!(
        db.select(&[m], 0, 24 * HOUR - 1).unwrap()[0].samples.len(),
        n
    );
}

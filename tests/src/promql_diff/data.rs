//! The differential data set: a small, targeted set of series covering counters with resets,
//! gauges, gaps, NaN, ±Inf, staleness markers, series that start and stop, classic histograms
//! and several label dimensions. Samples lie at `t0 + i·15 s + 7 ms` so that no sample sits
//! exactly on a range-window boundary of a whole-second query (Prometheus 2.42 closes windows on
//! the left, 3.x opens them: see the KNOWN list in the binary).

use bus::proto::{Label, Sample, TimeSeries};

/// Sample interval.
pub const STEP_MS: i64 = 15_000;
/// Offset of every sample from the whole-second grid.
pub const OFFSET_MS: i64 = 7;
/// Samples per series (one hour and one sample).
pub const POINTS: i64 = 241;

/// A series under construction.
struct Builder {
    t0_ms: i64,
    out: Vec<TimeSeries>,
}

impl Builder {
    fn push(&mut self, name: &str, labels: &[(&str, &str)], points: &[(i64, f64)]) {
        let mut ls: Vec<Label> = labels
            .iter()
            .map(|(n, v)| Label {
                name: (*n).to_string(),
                value: (*v).to_string(),
            })
            .collect();
        ls.push(Label {
            name: "__name__".to_string(),
            value: name.to_string(),
        });
        ls.sort_by(|a, b| a.name.cmp(&b.name));
        let samples = points
            .iter()
            .map(|&(i, v)| Sample {
                value: v,
                timestamp: self.t0_ms + i * STEP_MS + OFFSET_MS,
            })
            .collect();
        self.out.push(TimeSeries {
            labels: ls,
            samples,
            exemplars: Vec::new(),
        });
    }

    /// Every step `0..POINTS` with `f(i)`.
    fn all(&mut self, name: &str, labels: &[(&str, &str)], f: impl Fn(i64) -> f64) {
        let pts: Vec<(i64, f64)> = (0..POINTS).map(|i| (i, f(i))).collect();
        self.push(name, labels, &pts);
    }
}

/// The data set, with samples from `t0_ms + 7 ms` to `t0_ms + 1 h + 7 ms`.
pub fn generate(t0_ms: i64) -> Vec<TimeSeries> {
    let mut b = Builder {
        t0_ms,
        out: Vec::new(),
    };
    let stale = tsdb::storage::stale_nan();

    // Counters with several dimensions; one resets twice.
    let mut k = 0.0;
    for job in ["api", "web"] {
        for instance in ["a", "b"] {
            for code in ["200", "500"] {
                k += 1.0;
                let per_step = if code == "200" { 10.0 * k } else { k };
                let resets = job == "web" && instance == "b" && code == "500";
                b.all(
                    "http_requests_total",
                    &[("job", job), ("instance", instance), ("code", code)],
                    |i| {
                        // The reset series restarts from 5 at step 100 (and 200); all start
                        // high, as long-running counters do (see RATE_ZERO_CLAMP).
                        let base = if resets && i >= 100 {
                            5.0
                        } else {
                            10_000.0 * k
                        };
                        let seg = if resets { i % 100 } else { i };
                        base + seg as f64 * per_step + (seg % 3) as f64
                    },
                );
            }
        }
    }
    // A small counter that resets every 10 minutes.
    b.all("counter_resets", &[("instance", "x")], |i| {
        ((i % 40) * 2 + 1) as f64
    });
    // CPU counters: cpu × mode × instance.
    for instance in ["a", "b"] {
        for cpu in ["0", "1"] {
            for (m, mode) in ["idle", "user", "system"].iter().enumerate() {
                let w = [0.7, 0.2, 0.1][m] * if cpu == "0" { 1.0 } else { 0.8 };
                let w = if instance == "b" { w * 1.3 } else { w };
                b.all(
                    "node_cpu_seconds_total",
                    &[("instance", instance), ("cpu", cpu), ("mode", mode)],
                    |i| 50_000.0 + i as f64 * 15.0 * w,
                );
            }
        }
    }
    // Gauges.
    for (n, (room, floor)) in [
        ("kitchen", "1"),
        ("hall", "1"),
        ("hall", "2"),
        ("attic", "2"),
    ]
    .iter()
    .enumerate()
    {
        let base = if *room == "attic" { -3.0 } else { 20.0 };
        b.all("temperature", &[("room", room), ("floor", floor)], |i| {
            base + 5.0 * ((i as f64) / 10.0 + n as f64).sin()
        });
    }
    b.all("memory_bytes", &[("instance", "a")], |i| {
        1.0e9 + (i % 17) as f64 * 1.0e6
    });
    b.all("memory_bytes", &[("instance", "b")], |i| {
        2.5e9 - (i % 23) as f64 * 3.0e6
    });
    b.all("zeros", &[("instance", "z")], |_| 0.0);
    b.all("big_small", &[("kind", "big")], |i| 1.0e15 + i as f64);
    b.all("big_small", &[("kind", "small")], |i| {
        1.0e-10 * (i + 1) as f64
    });
    // Gaps: 10 minutes (longer than the lookback delta) and 2 minutes.
    let g1: Vec<(i64, f64)> = (0..POINTS)
        .filter(|i| !(60..100).contains(i) && !(160..200).contains(i))
        .map(|i| (i, i as f64 * 0.5))
        .collect();
    b.push("gappy_gauge", &[("instance", "g1")], &g1);
    let g2: Vec<(i64, f64)> = (0..POINTS)
        .filter(|i| i % 16 < 8)
        .map(|i| (i, 100.0 - i as f64))
        .collect();
    b.push("gappy_gauge", &[("instance", "g2")], &g2);
    // NaN and infinities.
    b.all("special_values", &[("kind", "nan")], |i| {
        if i % 5 == 0 { f64::NAN } else { i as f64 }
    });
    b.all("special_values", &[("kind", "inf")], |i| {
        if (50..60).contains(&i) || i % 37 == 0 {
            f64::INFINITY
        } else {
            // Off the values of kind="nan": no ties for topk/bottomk to break either way.
            i as f64 + 0.25
        }
    });
    b.all("special_values", &[("kind", "neginf")], |i| {
        if i % 7 == 0 {
            f64::NEG_INFINITY
        } else {
            -(i as f64)
        }
    });
    b.all("special_values", &[("kind", "all_nan")], |_| f64::NAN);
    b.all("special_values", &[("kind", "pos_inf")], |_| f64::INFINITY);
    // Staleness: s1 stops at step 120; s2 goes stale at 80 and comes back at 160.
    let mut s1: Vec<(i64, f64)> = (0..120).map(|i| (i, i as f64)).collect();
    s1.push((120, stale));
    b.push("stale_series", &[("instance", "s1")], &s1);
    let mut s2: Vec<(i64, f64)> = (0..80).map(|i| (i, 3.0 * i as f64)).collect();
    s2.push((80, stale));
    s2.extend((160..POINTS).map(|i| (i, 3.0 * i as f64)));
    b.push("stale_series", &[("instance", "s2")], &s2);
    // A series that starts late (counter) and one that stops early without a marker.
    let late: Vec<(i64, f64)> = (150..POINTS).map(|i| (i, (i - 150) as f64 * 4.0)).collect();
    b.push("late_counter_total", &[("instance", "l1")], &late);
    let early: Vec<(i64, f64)> = (0..90).map(|i| (i, 7.0 + i as f64)).collect();
    b.push("early_gauge", &[("instance", "e1")], &early);
    // Info-style series for group_left joins.
    b.all(
        "build_info",
        &[("instance", "a"), ("version", "1.0")],
        |_| 1.0,
    );
    b.all(
        "build_info",
        &[("instance", "b"), ("version", "2.0")],
        |_| 1.0,
    );
    b.all(
        "label_source",
        &[("src", "a-b-c"), ("dst", ""), ("path", "/api/v1/query")],
        |i| i as f64,
    );
    // Classic histograms.
    let les = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    for (job, fr) in [
        ("api", [0.1, 0.3, 0.6, 0.8, 0.9, 0.97, 1.0]),
        ("web", [0.0, 0.05, 0.2, 0.5, 0.75, 0.95, 1.0]),
    ] {
        let per = |i: i64| 10 + (i % 5);
        // Running for a while before the data starts: a high first value.
        let cum = |i: i64, f: f64| -> f64 {
            (5000.0 * f).floor() + (0..=i).map(|j| (per(j) as f64 * f).floor()).sum::<f64>()
        };
        for (le, f) in les.iter().zip(fr) {
            b.all(
                "request_duration_seconds_bucket",
                &[("job", job), ("le", le)],
                |i| cum(i, f),
            );
        }
        b.all("request_duration_seconds_count", &[("job", job)], |i| {
            cum(i, 1.0)
        });
        b.all("request_duration_seconds_sum", &[("job", job)], |i| {
            cum(i, 1.0) * 0.31
        });
    }
    // A histogram without a +Inf bucket and one with non-monotonic buckets.
    for (le, f) in [("0.1", 1.0), ("1", 3.0)] {
        b.all("no_inf_bucket", &[("le", le)], |i| f * i as f64);
    }
    for (le, f) in [("0.1", 5.0), ("0.5", 3.0), ("1", 6.0), ("+Inf", 8.0)] {
        b.all("non_monotonic_bucket", &[("le", le)], |i| {
            f * (i + 1) as f64
        });
    }
    b.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_off_the_whole_second_grid_and_in_order() {
        let series = generate(1_700_000_000_000);
        assert!(series.len() > 40);
        for s in &series {
            assert!(
                s.samples
                    .windows(2)
                    .all(|w| w[0].timestamp < w[1].timestamp)
            );
            assert!(s.samples.iter().all(|x| x.timestamp % 1000 == OFFSET_MS));
        }
    }
}

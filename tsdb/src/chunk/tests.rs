use super::*;
use proptest::prelude::*;

fn round_trip(samples: &[Sample]) {
    let mut c = Chunk::default();
    for s in samples {
        c.append(s.t, s.v);
    }
    let check = |got: Vec<Sample>| {
        assert_eq!(got.len(), samples.len());
        for (g, w) in got.iter().zip(samples) {
            assert_eq!(g.t, w.t);
            assert_eq!(g.v.to_bits(), w.v.to_bits(), "value at {}", w.t);
        }
    };
    check(c.iter().collect());
    let mut all = Vec::new();
    c.iter().decode_into(i64::MIN, i64::MAX, &mut all);
    check(all);
    let bytes = c.to_bytes();
    check(ChunkRef::new(&bytes).unwrap().iter().collect());
    let back = Chunk::from_bytes(&bytes).unwrap();
    check(back.iter().collect());
    assert_eq!(back.to_bytes(), bytes);
    // Sealed: from the appendable chunk and from the samples, the same bytes, read back the
    // same way; made appendable again, it takes more samples.
    let sealed = c.sealed();
    assert_eq!(seal(samples), sealed);
    assert!(
        sealed.len() <= bytes.len(),
        "{} vs {}",
        sealed.len(),
        bytes.len()
    );
    let view = ChunkRef::new(&sealed).unwrap();
    assert_eq!(view.len(), samples.len());
    check(view.iter().collect());
    let mut all = Vec::new();
    view.iter().decode_into(i64::MIN, i64::MAX, &mut all);
    check(all);
    if let Some(mid) = samples.get(samples.len() / 2) {
        let mut it = view.iter();
        assert_eq!(it.seek(mid.t).map(|s| s.t), Some(mid.t));
        let mut part = Vec::new();
        view.iter().decode_into(mid.t, mid.t, &mut part);
        assert!(part.iter().all(|s| s.t == mid.t) && !part.is_empty());
    }
    let mut reopened = Chunk::from_bytes(&sealed).unwrap();
    check(reopened.iter().collect());
    assert_eq!(reopened.to_bytes(), bytes);
    if let Some(last) = samples.last()
        && last.t < i64::MAX
    {
        reopened.append(last.t + 1, 7.0);
        assert_eq!(reopened.len(), samples.len() + 1);
    }
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64 / 100.0),
        Just(f64::from_bits(crate::storage::STALE_NAN_BITS)),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
    ]
}

proptest! {
    #[test]
    fn any_samples_round_trip(
        start in any::<i64>(),
        steps in proptest::collection::vec(0i64..1_000_000_000, 0..130),
        values in proptest::collection::vec(value(), 130),
    ) {
        let mut t = start;
        let samples: Vec<Sample> = steps.iter().zip(&values).map(|(d, v)| {
            t = t.wrapping_add(*d);
            Sample { t, v: *v }
        }).collect();
        round_trip(&samples);
    }

    #[test]
    fn integral_values_round_trip(
        steps in proptest::collection::vec(14_990i64..15_010, 1..120),
        incs in proptest::collection::vec(0i64..5_000_000, 120),
    ) {
        let mut t = 1_700_000_000_000i64;
        let mut v = 0i64;
        let samples: Vec<Sample> = steps.iter().zip(&incs).map(|(d, i)| {
            t += d;
            v += i;
            Sample { t, v: v as f64 }
        }).collect();
        round_trip(&samples);
    }

    /// Integers and short decimals mixed with non-integral floats, NaN, staleness markers and
    /// ±Inf, with timestamps anywhere in i64 (extremes included) and irregular steps.
    #[test]
    fn mixed_values_and_extreme_times_round_trip(
        start in prop_oneof![Just(i64::MIN), Just(i64::MAX - 130 * 1_000_000_000), any::<i64>()],
        steps in proptest::collection::vec(prop_oneof![Just(15_000i64), 0i64..1_000_000_000, Just(i64::MAX / 200)], 0..130),
        ints in proptest::collection::vec(prop_oneof![
            (-9_000_000_000_000_000i64..9_000_000_000_000_000).prop_map(|i| i as f64),
            (-1_000i64..1_000).prop_map(|i| i as f64 * 4096.0),
            (-1_000_000i64..1_000_000).prop_map(|i| i as f64 / 1000.0),
        ], 130),
        odd in proptest::collection::vec((0usize..130, value()), 0..3),
    ) {
        let mut values = ints;
        for (i, v) in odd {
            values[i] = v;
        }
        let mut t = start;
        let samples: Vec<Sample> = steps.iter().zip(&values).map(|(d, v)| {
            t = t.saturating_add(*d);
            Sample { t, v: *v }
        }).collect::<Vec<_>>();
        let mut dedup = samples.clone();
        dedup.dedup_by_key(|s| s.t);
        round_trip(&dedup);
    }
}

#[test]
fn sealed_chunks_pack_constant_steps_and_common_factors() {
    // 15 s steps and page-sized gauges: no bits for the timestamps, 12 fewer per value.
    let samples: Vec<Sample> = (0..120)
        .map(|i| Sample {
            t: 1_700_000_000_000 + i * 15_000,
            v: ((i * 7919) % 1000) as f64 * 4096.0,
        })
        .collect();
    let sealed = seal(&samples);
    // The header and first sample, then 10 bits per further sample.
    assert!(
        sealed.len() <= 4 + 20 + 119 * 10 / 8 + 1,
        "{}",
        sealed.len()
    );
    assert!(sealed.len() * 2 < Chunk::from_samples(&samples).size());
    let got: Vec<Sample> = ChunkRef::new(&sealed).unwrap().iter().collect();
    assert_eq!(got, samples);
}

#[test]
fn special_values_round_trip() {
    let vs = [
        1.0,
        -0.0,
        0.0,
        f64::NAN,
        f64::from_bits(crate::storage::STALE_NAN_BITS),
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        f64::MAX,
        0.1,
        1e300,
    ];
    let samples: Vec<Sample> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| Sample {
            t: i as i64 * 1000,
            v: *v,
        })
        .collect();
    round_trip(&samples);
}

#[test]
fn coding_is_chosen_per_chunk() {
    let mut c = Chunk::default();
    c.append(0, 1.0);
    c.append(1, 2.0);
    assert_eq!(c.encoding(), ValueEncoding::Int { exp: 0 });
    c.append(2, 2.5);
    assert_eq!(c.encoding(), ValueEncoding::Int { exp: 1 });
    c.append(3, 2.25);
    assert_eq!(c.encoding(), ValueEncoding::Int { exp: 2 });
    c.append(4, std::f64::consts::PI);
    assert_eq!(c.encoding(), ValueEncoding::Xor);
    let vs: Vec<f64> = c.iter().map(|s| s.v).collect();
    assert_eq!(vs, [1.0, 2.0, 2.5, 2.25, std::f64::consts::PI]);
}

#[test]
fn seek_skips_to_the_first_sample_at_or_after() {
    let samples: Vec<Sample> = (0..100)
        .map(|i| Sample {
            t: i * 10,
            v: i as f64,
        })
        .collect();
    let c = Chunk::from_samples(&samples);
    let mut it = c.iter();
    assert_eq!(it.seek(55), Some(Sample { t: 60, v: 6.0 }));
    assert_eq!(it.next(), Some(Sample { t: 70, v: 7.0 }));
    assert_eq!(it.seek(10_000), None);
}

#[test]
fn decode_into_keeps_the_closed_range() {
    let samples: Vec<Sample> = (0..100)
        .map(|i| Sample {
            t: i * 10,
            v: i as f64 * 1.5,
        })
        .collect();
    let c = Chunk::from_samples(&samples);
    for (mint, maxt) in [
        (0, 990),
        (55, 300),
        (60, 60),
        (61, 69),
        (-5, 5),
        (990, 2000),
        (500, 100),
    ] {
        let mut out = vec![Sample { t: -1, v: 0.0 }];
        c.iter().decode_into(mint, maxt, &mut out);
        let want: Vec<Sample> = std::iter::once(Sample { t: -1, v: 0.0 })
            .chain(
                samples
                    .iter()
                    .copied()
                    .filter(|s| s.t >= mint && s.t <= maxt),
            )
            .collect();
        assert_eq!(out, want, "[{mint}, {maxt}]");
    }
}

#[test]
fn corrupt_bytes_do_not_panic() {
    let samples: Vec<Sample> = (0..50)
        .map(|i| Sample {
            t: i * 15_000,
            v: (i * i) as f64 * 0.37,
        })
        .collect();
    let ints: Vec<Sample> = samples
        .iter()
        .map(|s| Sample {
            t: s.t,
            v: (s.t / 1000) as f64,
        })
        .collect();
    for bytes in [Chunk::from_samples(&samples).to_bytes(), seal(&ints)] {
        for cut in 0..bytes.len() {
            if let Ok(c) = ChunkRef::new(&bytes[..cut]) {
                assert!(c.iter().count() <= 50);
            }
        }
    }
    assert!(ChunkRef::new(&[9, 0, 0, 0]).is_err());
}

/// Bytes per sample on cgroup-like data (15 s interval with jitter): counters (CPU nanoseconds,
/// bytes) and gauges (memory bytes, a fractional ratio). Prints the figures
/// (`cargo test -p tsdb --release bytes_per_sample -- --nocapture`) and bounds them.
#[test]
fn bytes_per_sample() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let n = 120 * 50;
    let mut report = Vec::new();
    let mut totals = (0.0, 0.0);
    for kind in [
        "cpu_counter",
        "net_bytes_counter",
        "memory_gauge",
        "ratio_gauge",
        "constant_gauge",
        "idle_counter",
    ] {
        let mut t = 1_700_000_000_000i64;
        let mut v = 1_000_000.0f64;
        let mut bytes = 0;
        let mut c = Chunk::default();
        // The same samples in Gorilla XOR only, for comparison.
        let mut xor_bytes = 0;
        let mut x = Chunk::new(ValueEncoding::Xor);
        for _ in 0..n {
            t += 15_000 + (next() % 7) as i64 - 3;
            v = match kind {
                "cpu_counter" => v + (300_000_000 + next() % 100_000_000) as f64,
                "net_bytes_counter" => v + (next() % 20_000) as f64,
                "memory_gauge" => (v + (next() % 1_000_000) as f64 - 500_000.0).max(0.0),
                "constant_gauge" => 536_870_912.0,
                "idle_counter" => v + (next() % 8 / 7) as f64,
                _ => ((next() % 10_000) as f64) / 10_000.0,
            };
            if c.is_full() {
                bytes += c.sealed().len();
                c = Chunk::default();
                xor_bytes += x.size();
                x = Chunk::new(ValueEncoding::Xor);
            }
            c.append(t, v);
            x.append(t, v);
        }
        bytes += c.sealed().len();
        xor_bytes += x.size();
        let bps = bytes as f64 / n as f64;
        let xor = xor_bytes as f64 / n as f64;
        report.push(format!(
            "{kind}: {bps:.2} bytes/sample (Gorilla XOR: {xor:.2})"
        ));
        // Sparse increments (an idle counter) are the one case where XOR's one-bit "unchanged"
        // beats delta-of-delta, by about a tenth of a byte.
        assert!(bps <= xor * 1.15, "{kind}: {bps} vs {xor}");
        totals.0 += bps;
        totals.1 += xor;
    }
    println!("{}", report.join("\n"));
    assert!(totals.0 < totals.1 * 0.8, "{totals:?}");
}

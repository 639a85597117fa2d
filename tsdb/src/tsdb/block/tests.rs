use super::*;
use crate::storage::MatchOp;
use proptest::prelude::*;

fn series_strategy() -> impl Strategy<Value = Vec<(Labels, Vec<Sample>)>> {
    let one = (
        0u8..4,
        0u8..5,
        proptest::collection::btree_map(-5_000i64..5_000, any::<f64>(), 1..400),
    );
    proptest::collection::vec(one, 0..12).prop_map(|v| {
        let mut m: std::collections::BTreeMap<Labels, Vec<Sample>> = Default::default();
        for (name, job, samples) in v {
            let labels =
                Labels::from_pairs([("__name__", format!("m{name}")), ("job", format!("j{job}"))]);
            m.insert(
                labels,
                samples.into_iter().map(|(t, v)| Sample { t, v }).collect(),
            );
        }
        m.into_iter().collect()
    })
}

fn write_block(dir: &Path, series: &[(Labels, Vec<Sample>)]) -> Block {
    let mut w = BlockWriter::new(dir).unwrap();
    for (l, s) in series {
        w.add(l.clone(), s).unwrap();
    }
    w.finish(-5_000, 5_000, Compaction::default(), 0).unwrap()
}

fn bits(s: &[Sample]) -> Vec<(i64, u64)> {
    s.iter().map(|p| (p.t, p.v.to_bits())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random series and samples (every f64 bit pattern) read back bit for bit, through the
    /// index, the postings and partial ranges.
    #[test]
    fn blocks_round_trip(series in series_strategy(), lo in -6_000i64..6_000, w in 0i64..4_000) {
        let tmp = tempfile::tempdir().unwrap();
        let written = write_block(tmp.path(), &series);
        let b = Block::open(written.dir()).unwrap();
        prop_assert_eq!(b.meta(), written.meta());
        prop_assert_eq!(b.meta().stats.num_series, series.len() as u64);
        prop_assert_eq!(
            b.meta().stats.num_samples,
            series.iter().map(|s| s.1.len() as u64).sum::<u64>()
        );
        prop_assert_eq!(&b.meta().compaction.sources, &vec![b.id().to_owned()]);
        let all = Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap();
        let got = b.select(std::slice::from_ref(&all), i64::MIN, i64::MAX).unwrap();
        prop_assert_eq!(got.len(), series.len());
        for ((gl, gs), (wl, ws)) in got.iter().zip(&series) {
            prop_assert_eq!(gl, wl);
            prop_assert_eq!(bits(gs), bits(ws));
        }
        // Postings: a matcher on one label, a range.
        let m = Matcher::new(MatchOp::Equal, "job", "j1").unwrap();
        let (hi, got) = (lo + w, b.select(std::slice::from_ref(&m), lo, lo + w).unwrap());
        let want: Vec<(Labels, Vec<(i64, u64)>)> = series
            .iter()
            .filter(|(l, _)| l.get("job") == Some("j1"))
            .map(|(l, s)| {
                let s: Vec<Sample> = s.iter().copied().filter(|p| p.t >= lo && p.t <= hi).collect();
                (l.clone(), bits(&s))
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        let got: Vec<(Labels, Vec<(i64, u64)>)> = got.into_iter().map(|(l, s)| (l, bits(&s))).collect();
        prop_assert_eq!(&got, &want);
        let names: Vec<Labels> = want.iter().map(|w| w.0.clone()).collect();
        prop_assert_eq!(b.series_in(&[m], lo, hi).unwrap(), names);
    }
}

#[test]
fn tombstones_hide_samples_and_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Labels::from_pairs([("__name__", "a")]);
    let b_ = Labels::from_pairs([("__name__", "b")]);
    let samples: Vec<Sample> = (0..300).map(|t| Sample { t, v: t as f64 }).collect();
    let b = write_block(tmp.path(), &[(a.clone(), samples.clone()), (b_, samples)]);
    let m = Matcher::new(MatchOp::Equal, "__name__", "a").unwrap();
    assert_eq!(b.delete(std::slice::from_ref(&m), 100, 199).unwrap(), 1);
    // Already covered: nothing new is written.
    assert_eq!(b.delete(std::slice::from_ref(&m), 120, 130).unwrap(), 0);
    let b = Block::open(b.dir()).unwrap();
    let got = b
        .select(std::slice::from_ref(&m), i64::MIN, i64::MAX)
        .unwrap();
    assert_eq!(got[0].1.len(), 200);
    assert!(got[0].1.iter().all(|s| s.t < 100 || s.t > 199));
    assert!(
        b.series_in(std::slice::from_ref(&m), 100, 199)
            .unwrap()
            .is_empty()
    );
    assert!(!b.fully_deleted());
    let all = Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap();
    b.delete(&[all], i64::MIN, i64::MAX).unwrap();
    assert!(b.fully_deleted());
}

#[test]
fn corruption_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Labels::from_pairs([("__name__", "a")]);
    let samples: Vec<Sample> = (0..300).map(|t| Sample { t, v: t as f64 }).collect();
    let b = write_block(tmp.path(), &[(a, samples)]);
    let dir = b.dir().to_path_buf();
    drop(b);
    // A flipped bit in a chunk fails that read, not the open.
    let p = dir.join(CHUNKS_FILE);
    let mut data = fs::read(&p).unwrap();
    data[12] ^= 1;
    fs::write(&p, &data).unwrap();
    let b = Block::open(&dir).unwrap();
    assert!(b.samples(0, i64::MIN, i64::MAX).is_err());
    // A flipped bit in the index fails the open.
    let p = dir.join(INDEX_FILE);
    let mut data = fs::read(&p).unwrap();
    data[10] ^= 1;
    fs::write(&p, &data).unwrap();
    assert!(matches!(
        Block::open(&dir),
        Err(TsdbError::CorruptBlock { .. })
    ));
}

use super::*;
use crate::storage::{MatchOp, MemStorage, Sample};
use proptest::prelude::*;

fn labels(series: u8) -> Labels {
    let name = if series.is_multiple_of(2) { "a" } else { "b" };
    let job = ["x", "y", "z"][usize::from(series / 2) % 3];
    Labels::from_pairs([("__name__", name), ("job", job)])
}

/// The value written for a series at a time: re-writes are idempotent re-deliveries.
fn value(series: u8, t: i64) -> f64 {
    match t % 13 {
        0 => crate::storage::stale_nan(),
        1 => f64::from(series) + t as f64 / 7.0,
        _ => (t * i64::from(series + 1)) as f64,
    }
}

fn matchers(kind: u8) -> Vec<Matcher> {
    let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
    match kind % 5 {
        0 => vec![m(MatchOp::Equal, "__name__", "a")],
        1 => vec![m(MatchOp::Regex, "job", "x|y")],
        2 => vec![
            m(MatchOp::NotEqual, "job", "z"),
            m(MatchOp::Equal, "__name__", "b"),
        ],
        3 => vec![m(MatchOp::NotRegex, "job", "y")],
        _ => vec![m(MatchOp::Regex, "__name__", ".+")],
    }
}

/// Selects compared bit for bit (NaN markers included).
fn same(got: &[SeriesSamples], want: &[SeriesSamples]) -> Result<(), String> {
    let key = |s: &[SeriesSamples]| -> Vec<(String, Vec<(i64, u64)>)> {
        s.iter()
            .map(|s| {
                (
                    s.labels.to_string(),
                    s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect(),
                )
            })
            .collect()
    };
    if key(got) == key(want) {
        Ok(())
    } else {
        Err(format!("got {:?}\nwant {:?}", key(got), key(want)))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<(u8, i64)>),
    Delete(u8, i64, i64),
    Checkpoint,
    /// Drop without a checkpoint (everything acknowledged is in the WAL) and reopen.
    Crash,
    /// Close (checkpoint) and reopen.
    Restart,
    /// Cut the head into blocks (when it spans enough).
    Cut,
    /// Compact blocks.
    Compact,
    /// Write the head's oldest range into a block and crash before the head is truncated.
    CutCrash,
    /// Size retention's step: drop blocks and head chunks that end before a time.
    DropBefore(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0u8..6, 0i64..2000), 1..20).prop_map(Op::Append),
        1 => (0u8..5, 0i64..2000, 0i64..600).prop_map(|(k, a, w)| Op::Delete(k, a, a + w)),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
        2 => Just(Op::Cut),
        1 => Just(Op::Compact),
        1 => Just(Op::CutCrash),
        1 => (0i64..2000).prop_map(Op::DropBefore),
    ]
}

/// Size retention drops whole blocks and chunks, so which samples before `cutoff` go depends
/// on the layout: checks that per series the store kept a subset of the model's samples that
/// includes every sample from `cutoff` on, then makes the model drop the same samples.
fn drop_in_model(db: &Tsdb, model: &MemStorage, cutoff: i64) -> Result<(), TestCaseError> {
    let want = model.select(&matchers(4), i64::MIN, i64::MAX).unwrap();
    let got = db.select(&matchers(4), i64::MIN, i64::MAX).unwrap();
    for w in want {
        let kept = got
            .iter()
            .find(|g| g.labels == w.labels)
            .map(|g| g.samples.clone())
            .unwrap_or_default();
        let exact: Vec<Matcher> = w
            .labels
            .iter()
            .map(|l| Matcher::new(MatchOp::Equal, &*l.name, &*l.value).unwrap())
            .collect();
        for s in &w.samples {
            match kept.iter().find(|k| k.t == s.t) {
                Some(k) => prop_assert_eq!(k.v.to_bits(), s.v.to_bits()),
                None => {
                    prop_assert!(s.t < cutoff, "{} at {} dropped", w.labels, s.t);
                    model.delete(&exact, s.t, s.t).unwrap();
                }
            }
        }
        prop_assert!(kept.iter().all(|k| w.samples.iter().any(|s| s.t == k.t)));
    }
    Ok(())
}

/// Blocks of 100 ms, compacted to 300 ms and 900 ms: the test's 0..2000 ms make many.
fn block_cfg() -> TsdbConfig {
    TsdbConfig {
        blocks: crate::config::BlocksConfig {
            range: std::time::Duration::from_millis(100),
            max_range: std::time::Duration::from_millis(900),
            downsampling: Vec::new(),
        },
        ..TsdbConfig::default()
    }
}

fn check(db: &Tsdb, model: &MemStorage, ranges: &[(i64, i64)]) -> Result<(), TestCaseError> {
    for kind in 0..5 {
        let ms = matchers(kind);
        for &(lo, hi) in ranges {
            let got = db.select(&ms, lo, hi).unwrap();
            let want = model.select(&ms, lo, hi).unwrap();
            same(&got, &want).map_err(TestCaseError::fail)?;
            let want_series: Vec<Labels> = want.iter().map(|s| s.labels.clone()).collect();
            prop_assert_eq!(db.series(&ms, lo, hi).unwrap(), want_series);
            prop_assert_eq!(
                db.label_values("job", &ms, lo, hi).unwrap(),
                model.label_values("job", &ms, lo, hi).unwrap()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random writes, deletes, checkpoints, crashes, restarts, block cuts and compactions give
    /// the same reads as the in-memory model. Samples older than the head (in blocks) are
    /// refused as too old; the model gets only what was accepted.
    #[test]
    fn matches_the_model(ops in proptest::collection::vec(op(), 1..40), lo in 0i64..2000) {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = block_cfg();
        let mut db = Tsdb::open(tmp.path(), &cfg).unwrap();
        let model = MemStorage::new();
        for op in ops {
            match op {
                Op::Append(points) => {
                    let batch: Vec<SeriesSamples> = points
                        .iter()
                        .map(|&(s, t)| SeriesSamples {
                            labels: labels(s),
                            samples: vec![Sample { t, v: value(s, t) }],
                        })
                        .collect();
                    let floor = db.min_valid_time();
                    let r = db.append(&batch).unwrap();
                    let ok: Vec<SeriesSamples> =
                        batch.into_iter().filter(|s| s.samples[0].t >= floor).collect();
                    prop_assert_eq!(r.accepted, ok.len(), "{:?}", r);
                    prop_assert_eq!(r.rejected_total(), points.len() - ok.len());
                    model.append(&ok).unwrap();
                }
                Op::Delete(k, mint, maxt) => {
                    db.delete(&matchers(k), mint, maxt).unwrap();
                    model.delete(&matchers(k), mint, maxt).unwrap();
                }
                Op::Checkpoint => db.checkpoint().unwrap(),
                Op::Crash => {
                    drop(db);
                    db = Tsdb::open(tmp.path(), &cfg).unwrap();
                }
                Op::Restart => {
                    db.close().unwrap();
                    drop(db);
                    db = Tsdb::open(tmp.path(), &cfg).unwrap();
                }
                Op::Cut => {
                    db.cut().unwrap();
                }
                Op::Compact => {
                    db.compact().unwrap();
                }
                Op::CutCrash => {
                    let min = db.read().usage().0;
                    if let Some(min) = min {
                        let mint = min.div_euclid(100) * 100;
                        db.write_head_block(mint, mint + 100).unwrap();
                    }
                    drop(db);
                    db = Tsdb::open(tmp.path(), &cfg).unwrap();
                }
                Op::DropBefore(cutoff) => {
                    db.drop_before(cutoff).unwrap();
                    drop_in_model(&db, &model, cutoff)?;
                }
            }
        }
        db.cut().unwrap();
        check(&db, &model, &[(i64::MIN, i64::MAX), (lo, lo + 300)])?;
        db.compact().unwrap();
        check(&db, &model, &[(i64::MIN, i64::MAX), (lo, lo + 300)])?;
        drop(db);
        let db = Tsdb::open(tmp.path(), &cfg).unwrap();
        check(&db, &model, &[(i64::MIN, i64::MAX), (lo, lo + 300)])?;
    }
}

fn all(db: &Tsdb) -> Vec<SeriesSamples> {
    db.select(&matchers(4), i64::MIN, i64::MAX).unwrap()
}

#[test]
fn reopen_keeps_everything_with_and_without_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TsdbConfig::default();
    let batch: Vec<SeriesSamples> = (0..6u8)
        .map(|s| SeriesSamples {
            labels: labels(s),
            samples: (0..500)
                .map(|i| Sample {
                    t: i * 15_000,
                    v: value(s, i),
                })
                .collect(),
        })
        .collect();
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    db.append(&batch).unwrap();
    let want = all(&db);
    assert_eq!(want.len(), 6);
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    same(&all(&db), &want).unwrap();
    db.close().unwrap();
    drop(db);
    // The checkpoint replaced the replayed segments.
    assert_eq!(checkpoint::list(tmp.path()).unwrap().len(), 1);
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    same(&all(&db), &want).unwrap();
    assert_eq!(db.stats(10).unwrap().num_series, 6);
    // New series after a checkpoint get fresh ids and survive another reopen.
    let more = vec![SeriesSamples {
        labels: Labels::from_pairs([("__name__", "c")]),
        samples: vec![Sample { t: 1, v: 1.0 }],
    }];
    db.append(&more).unwrap();
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    assert_eq!(all(&db).len(), 7);
    same(&all(&db)[..6], &want).unwrap();
}

#[test]
fn recovery_cuts_a_torn_wal_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TsdbConfig::default();
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    for t in 0..20 {
        let b = vec![SeriesSamples {
            labels: labels(0),
            samples: vec![Sample { t, v: value(0, t) }],
        }];
        db.append(&b).unwrap();
    }
    drop(db);
    // The last append was torn by a crash: only part of its frame reached the disk.
    let wal_dir = tmp.path().join("wal");
    let last = *wal::segments(&wal_dir).unwrap().last().unwrap();
    let seg = wal_dir.join(format!("{last:08}"));
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    let got = all(&db);
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
    assert_eq!(ts, (0..19).collect::<Vec<i64>>());
    // The store keeps working after the cut, and the sample lost with the tail can be re-sent.
    db.append(&[SeriesSamples {
        labels: labels(0),
        samples: vec![Sample {
            t: 19,
            v: value(0, 19),
        }],
    }])
    .unwrap();
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    assert_eq!(all(&db)[0].samples.len(), 20);
}

#[test]
fn a_corrupt_checkpoint_is_refused_not_misread() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TsdbConfig::default();
    let db = Tsdb::open(tmp.path(), &cfg).unwrap();
    db.append(&[SeriesSamples {
        labels: labels(1),
        samples: vec![Sample { t: 5, v: 5.0 }],
    }])
    .unwrap();
    db.close().unwrap();
    drop(db);
    let seg = checkpoint::list(tmp.path()).unwrap()[0];
    let p = checkpoint::path(tmp.path(), seg);
    let mut data = std::fs::read(&p).unwrap();
    data[10] ^= 1;
    std::fs::write(&p, &data).unwrap();
    assert!(matches!(
        Tsdb::open(tmp.path(), &cfg),
        Err(TsdbError::Corrupt(_))
    ));
    let mut head = Head::new(&cfg, Default::default());
    assert!(matches!(
        checkpoint::load(&p, &mut head),
        Err(TsdbError::Corrupt(_))
    ));
}

const CRASH_DIR: &str = "SEXTANT_TSDB_CRASH_DIR";
const CRASH_CYCLE: &str = "SEXTANT_TSDB_CRASH_CYCLE";

/// The child of [`acknowledged_samples_survive_kill_9`]: appends from 4 threads forever,
/// printing `ack <series> <t>` after each acknowledged append, checkpointing now and then.
#[test]
#[ignore]
fn crash_child() {
    let (Ok(dir), Ok(cycle)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_CYCLE)) else {
        return;
    };
    let cycle: i64 = cycle.parse().unwrap();
    let db = Arc::new(Tsdb::open(Path::new(&dir), &TsdbConfig::default()).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|th| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0i64.. {
                    // Cycles ~28 h apart: well inside the default 15 d retention, which would
                    // otherwise drop the first cycle's chunks at a checkpoint.
                    let t = cycle * 100_000_000 + i * 1000;
                    let batch = [SeriesSamples {
                        labels: labels(th),
                        samples: vec![Sample { t, v: value(th, t) }],
                    }];
                    db.append(&batch).unwrap();
                    println!("ack {th} {t}");
                    if th == 0 && i % 97 == 0 {
                        db.checkpoint().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Crash test: a child process appends under group commit and is killed with SIGKILL at an
/// arbitrary point, three times; every acknowledged sample is there after each restart.
#[test]
fn acknowledged_samples_survive_kill_9() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(u8, i64)> = Vec::new();
    for cycle in 0..3 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "tsdb::tests::crash_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CRASH_DIR, tmp.path())
            .env(CRASH_CYCLE, cycle.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let mut n = 0;
        while n < 400 + cycle * 150 {
            let line = lines.next().unwrap().unwrap();
            if let Some(rest) = line.strip_prefix("ack ") {
                let (s, t) = rest.split_once(' ').unwrap();
                acked.push((s.parse().unwrap(), t.parse().unwrap()));
                n += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let db = Tsdb::open(tmp.path(), &TsdbConfig::default()).unwrap();
        for th in 0..4u8 {
            let m = Matcher::new(MatchOp::Equal, "job", labels(th).get("job").unwrap()).unwrap();
            let n = Matcher::new(
                MatchOp::Equal,
                "__name__",
                labels(th).metric_name().unwrap(),
            )
            .unwrap();
            let got: std::collections::HashSet<i64> = db
                .select(&[m, n], i64::MIN, i64::MAX)
                .unwrap()
                .into_iter()
                .flat_map(|s| s.samples.into_iter().map(|p| p.t))
                .collect();
            for (s, t) in acked.iter().filter(|(s, _)| *s == th) {
                assert!(got.contains(t), "cycle {cycle}: acknowledged {s}@{t} lost");
            }
        }
    }
}

/// Appenders, readers, deletes and checkpoints at once: no deadlock, and the final state holds
/// every acknowledged sample that was not deleted.
#[test]
fn concurrent_appends_reads_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open(tmp.path(), &TsdbConfig::default()).unwrap());
    let writers: Vec<_> = (0..4u8)
        .map(|th| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..300i64 {
                    let t = i * 1000;
                    let batch = [SeriesSamples {
                        labels: labels(th),
                        samples: vec![Sample { t, v: value(th, t) }],
                    }];
                    assert_eq!(db.append(&batch).unwrap().accepted, 1);
                }
            })
        })
        .collect();
    let reader = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                let got = db.select(&matchers(4), i64::MIN, i64::MAX).unwrap();
                assert!(got.len() <= 4);
                if i % 10 == 0 {
                    db.checkpoint().unwrap();
                }
                db.delete(&matchers(0), 150_000, 150_000).unwrap();
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    // The concurrent deletes may have run before the sample was written.
    db.delete(&matchers(0), 150_000, 150_000).unwrap();
    let got = all(&db);
    assert_eq!(got.len(), 4);
    for s in &got {
        let deleted = usize::from(s.labels.metric_name() == Some("a"));
        assert_eq!(s.samples.len(), 300 - deleted, "{}", s.labels);
    }
}

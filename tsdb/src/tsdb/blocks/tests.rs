use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{BlocksConfig, RetentionRule, TsdbConfig};
use crate::storage::{Appendable, MatchOp, Matcher, Queryable, RejectReason, SeriesSamples, Store};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn cfg() -> TsdbConfig {
    TsdbConfig {
        blocks: BlocksConfig {
            range: Duration::from_secs(2 * 3600),
            max_range: Duration::ZERO,
            downsampling: Vec::new(),
        },
        ..TsdbConfig::default()
    }
}

fn series(name: &str, i: usize) -> Labels {
    Labels::from_pairs([("__name__", name.to_owned()), ("i", i.to_string())])
}

/// `n` series of `name` with a sample every 15 s in `from..to`.
fn write(db: &Tsdb, name: &str, n: usize, from: i64, to: i64) {
    let batch: Vec<SeriesSamples> = (0..n)
        .map(|i| SeriesSamples {
            labels: series(name, i),
            samples: (from / 15_000..to / 15_000)
                .map(|k| Sample {
                    t: k * 15_000,
                    v: (k * (i as i64 + 1)) as f64,
                })
                .collect(),
        })
        .collect();
    let r = db.append(&batch).unwrap();
    assert_eq!(r.rejected_total(), 0, "{r:?}");
}

fn all(db: &Tsdb, name: &str) -> Vec<SeriesSamples> {
    let m = Matcher::new(MatchOp::Equal, "__name__", name).unwrap();
    db.select(&[m], i64::MIN, i64::MAX).unwrap()
}

fn times(s: &[SeriesSamples]) -> Vec<Vec<i64>> {
    s.iter()
        .map(|s| s.samples.iter().map(|p| p.t).collect())
        .collect()
}

#[test]
fn a_cut_moves_the_oldest_range_into_a_block_and_restarts_keep_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    write(&db, "m", 5, 0, 7 * HOUR);
    let want = all(&db, "m");
    assert_eq!(want[0].samples.len(), 7 * 240);
    // 7 h of head: cut while it spans more than 3 h: 0-2 h and 2-4 h.
    assert_eq!(db.cut().unwrap(), 2);
    let blocks = db.blocks();
    assert_eq!(
        blocks
            .iter()
            .map(|b| (b.min_t(), b.max_t()))
            .collect::<Vec<_>>(),
        [(0, 2 * HOUR), (2 * HOUR, 4 * HOUR)]
    );
    assert_eq!(blocks[0].meta().stats.num_samples, 5 * 480);
    assert_eq!(db.min_valid_time(), 4 * HOUR);
    assert_eq!(db.read().usage().0, Some(4 * HOUR));
    // The head's chunk files were compacted: no dead space of the cut range is left.
    let files: u64 = std::fs::read_dir(tmp.path().join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(files > 0);
    assert!(files <= db.read().usage().1, "{files}");
    assert_eq!(all(&db, "m"), want);
    // A sample older than the head is refused as too old, and counted as such.
    let r = db
        .append(&[SeriesSamples {
            labels: series("m", 0),
            samples: vec![Sample { t: HOUR, v: 1.0 }],
        }])
        .unwrap();
    assert_eq!(r.rejected.get(&RejectReason::TooOld), Some(&1));
    // Restart without a clean close: WAL after the cut's checkpoint + blocks.
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    assert_eq!(all(&db, "m"), want);
    assert_eq!(db.min_valid_time(), 4 * HOUR);
    // A crash between writing a block and truncating the head: the samples are in both on
    // disk; after the restart they are there once, in the block.
    write(&db, "m", 5, 7 * HOUR, 8 * HOUR);
    let want = all(&db, "m");
    db.write_head_block(4 * HOUR, 6 * HOUR).unwrap();
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    assert_eq!(db.blocks().len(), 3);
    assert_eq!(db.read().usage().0, Some(6 * HOUR));
    assert_eq!(all(&db, "m"), want);
    assert_eq!(times(&all(&db, "m"))[0].len(), 8 * 240);
    // A half-written block (a crash while writing it) is removed at open.
    let half = db.blocks_dir().join(format!("x{TMP_SUFFIX}"));
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("chunks"), b"partial").unwrap();
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    assert!(!half.exists());
    assert_eq!(all(&db, "m"), want);
}

#[test]
fn compaction_merges_levels_and_materialises_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    write(&db, "m", 3, 0, 21 * HOUR);
    db.cut().unwrap();
    // 0..18 h in nine 2 h blocks; the head keeps 18..21 h.
    assert_eq!(db.blocks().len(), 9);
    let m = Matcher::new(MatchOp::Equal, "i", "1").unwrap();
    db.delete(&[m], HOUR, 3 * HOUR).unwrap();
    let want = all(&db, "m");
    assert_eq!(want[1].samples.len(), 21 * 240 - (2 * 240 + 1));
    let before: u64 = db.blocks().iter().map(|b| b.size()).sum();
    let n = db.compact().unwrap();
    assert!(n >= 3, "{n}");
    let blocks = db.blocks();
    let ranges: Vec<(i64, i64)> = blocks.iter().map(|b| (b.min_t(), b.max_t())).collect();
    // 2 h blocks into 6 h ones, those into one of the 18 h window; the newest block waits
    // (Prometheus's planner leaves it for a later round).
    assert_eq!(ranges, [(0, 16 * HOUR), (16 * HOUR, 18 * HOUR)]);
    assert_eq!(blocks[0].meta().compaction.level, 3);
    assert_eq!(blocks[0].meta().compaction.sources.len(), 8);
    assert!(!blocks[0].has_tombstones(), "deletes are materialised");
    assert_eq!(all(&db, "m"), want);
    let after: u64 = blocks.iter().map(|b| b.size()).sum();
    assert!(after < before, "{after} >= {before}");
    // Only the compacted block is on disk.
    let dirs = std::fs::read_dir(db.blocks_dir()).unwrap().count();
    assert_eq!(dirs, 2);
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    assert_eq!(all(&db, "m"), want);
    // Once a newer block exists, the 18 h window is completed.
    write(&db, "m", 3, 21 * HOUR, 23 * HOUR);
    db.cut().unwrap();
    db.compact().unwrap();
    let ranges: Vec<(i64, i64)> = db.blocks().iter().map(|b| (b.min_t(), b.max_t())).collect();
    assert_eq!(ranges, [(0, 18 * HOUR), (18 * HOUR, 20 * HOUR)]);
}

#[test]
fn parents_left_by_a_crash_during_compaction_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    write(&db, "m", 2, 0, 9 * HOUR);
    db.cut().unwrap();
    let want = all(&db, "m");
    let blocks = db.blocks();
    assert_eq!(blocks.len(), 3);
    // Keep copies of the parents, compact, then put the copies back as a crash would have
    // left them (the child written, the parents not yet removed).
    let saved = tempfile::tempdir().unwrap();
    for b in &blocks {
        copy_dir(b.dir(), &saved.path().join(b.id()));
    }
    db.compact_group(&blocks).unwrap();
    drop(db);
    for b in &blocks {
        copy_dir(&saved.path().join(b.id()), b.dir());
    }
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    assert_eq!(db.blocks().len(), 1);
    assert_eq!(all(&db, "m"), want);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn overlapping_blocks_are_merged_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    write(&db, "m", 2, 0, 7 * HOUR);
    // The same range written twice (as a crash between cut and checkpoint could do in an
    // older layout): reads de-duplicate, compaction merges.
    db.write_head_block(0, 2 * HOUR).unwrap();
    db.write_head_block(0, 2 * HOUR).unwrap();
    db.write_head_block(0, 3 * HOUR).unwrap();
    let want = all(&db, "m");
    assert_eq!(want[0].samples.len(), 7 * 240);
    db.compact().unwrap();
    let blocks = db.blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].min_t(), blocks[0].max_t()), (0, 3 * HOUR));
    assert_eq!(blocks[0].meta().stats.num_samples, 2 * 3 * 240);
    assert_eq!(all(&db, "m"), want);
}

#[test]
fn retention_removes_expired_blocks_and_applies_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.retention.time = Duration::from_secs(24 * 3600);
    c.retention.rules = vec![RetentionRule {
        selector: "short".into(),
        time: Duration::from_secs(6 * 3600),
    }];
    let db = Tsdb::open(tmp.path(), &c).unwrap();
    // Two days of data, newest at 48 h, written as it comes.
    for h in 0..48 {
        write(&db, "m", 2, h * HOUR, (h + 1) * HOUR);
        write(&db, "short", 2, h * HOUR, (h + 1) * HOUR);
        db.cut().unwrap();
    }
    write(&db, "m", 1, 48 * HOUR, 48 * HOUR + 15_000);
    db.apply_block_retention().unwrap();
    let blocks = db.blocks();
    // Blocks ending at or before 48 h − 24 h are gone.
    assert!(blocks.iter().all(|b| b.max_t() > 24 * HOUR));
    assert_eq!(blocks.first().map(|b| b.min_t()), Some(24 * HOUR));
    let m = all(&db, "m");
    assert_eq!(m[0].samples[0].t, 24 * HOUR);
    // `short` keeps 6 h: its series are gone from blocks whose samples are all older.
    let s = all(&db, "short");
    assert!(
        s[0].samples[0].t >= 42 * HOUR - 2 * HOUR,
        "{}",
        s[0].samples[0].t
    );
    // Compaction materialises the rule's tombstones; reads stay the same.
    db.compact().unwrap();
    assert!(db.blocks().iter().all(|b| !b.has_tombstones()));
    assert_eq!(all(&db, "short"), s);
    assert_eq!(all(&db, "m"), m);
    // Size retention drops whole blocks, oldest first.
    let oldest = db.blocks()[0].clone();
    let (min, _) = db.usage().unwrap();
    assert_eq!(min, Some(oldest.min_t()));
    db.drop_before(db.first_chunk_end().unwrap() + 1).unwrap();
    assert!(db.blocks().iter().all(|b| b.id() != oldest.id()));
    assert!(!oldest.dir().exists());
    assert_eq!(all(&db, "m")[0].samples[0].t, oldest.max_t());
}

#[test]
fn label_reads_merge_head_and_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    write(&db, "old", 2, 0, HOUR);
    write(&db, "new", 1, 6 * HOUR, 7 * HOUR);
    db.cut().unwrap();
    assert_eq!(db.blocks().len(), 1);
    let any = Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap();
    assert_eq!(
        db.label_values("__name__", &[], i64::MIN, i64::MAX)
            .unwrap(),
        ["new", "old"]
    );
    assert_eq!(
        db.label_values("__name__", std::slice::from_ref(&any), 0, HOUR)
            .unwrap(),
        ["old"]
    );
    assert_eq!(
        db.label_names(&[], i64::MIN, i64::MAX).unwrap(),
        ["__name__", "i"]
    );
    assert_eq!(db.series(&[any], i64::MIN, i64::MAX).unwrap().len(), 3);
    let s = db.stats(10).unwrap();
    assert_eq!(s.min_time, Some(0));
    assert!(s.chunk_count > 0);
}

/// Appends, reads, cuts and compactions at once: no deadlock, nothing refused (the writer
/// stays in time order), and every sample is there exactly once at the end, also after a
/// restart.
#[test]
fn cuts_and_compactions_run_beside_appends_and_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open(tmp.path(), &cfg()).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steps = 24 * 60i64;
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for k in 0..steps {
                let batch: Vec<SeriesSamples> = (0..4)
                    .map(|i| SeriesSamples {
                        labels: series("m", i),
                        samples: vec![Sample {
                            t: k * MIN,
                            v: k as f64,
                        }],
                    })
                    .collect();
                let r = db.append(&batch).unwrap();
                assert_eq!(r.accepted, 4, "{r:?}");
            }
        })
    };
    let maintainer = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                db.maintain().unwrap();
            }
        })
    };
    let reader = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for s in all(&db, "m") {
                    // Whatever moves between head and blocks is seen once, in order.
                    assert!(s.samples.windows(2).all(|w| w[0].t < w[1].t));
                    let n = s.samples.len() as i64;
                    assert_eq!(s.samples.last().map(|p| p.t / MIN), Some(n - 1));
                }
            }
        })
    };
    writer.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    maintainer.join().unwrap();
    reader.join().unwrap();
    db.maintain().unwrap();
    assert!(db.blocks().len() >= 2);
    let check = |db: &Tsdb| {
        let got = all(db, "m");
        assert_eq!(got.len(), 4);
        for s in got {
            let ts: Vec<i64> = s.samples.iter().map(|p| p.t).collect();
            assert_eq!(ts, (0..steps).map(|k| k * MIN).collect::<Vec<_>>());
        }
    };
    check(&db);
    drop(db);
    let db = Tsdb::open(tmp.path(), &cfg()).unwrap();
    check(&db);
}

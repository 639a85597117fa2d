use super::*;
use crate::labels::Labels;
use crate::storage::Sample;
use std::sync::Arc;

fn samples(id: u32, t: i64) -> Record {
    Record::Samples(vec![(id, Sample { t, v: t as f64 })])
}

fn replay(dir: &Path, first: u64) -> (Wal, Vec<Record>) {
    let mut got = Vec::new();
    let wal = Wal::open(dir, 1 << 20, first, |r| got.push(r)).unwrap();
    (wal, got)
}

fn append(wal: &Wal, rec: &Record) {
    let mut b = Vec::new();
    frame(rec, &mut b);
    let seq = wal.enqueue(&b);
    wal.wait_durable(seq).unwrap();
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (wal, got) = replay(dir, 0);
        assert!(got.is_empty());
        append(
            &wal,
            &Record::Series(vec![(0, Labels::from_pairs([("__name__", "a")]))]),
        );
        for t in 0..10 {
            append(&wal, &samples(0, t));
        }
    }
    // A crash in the middle of the last write: half of its frame reached the disk.
    let seg = segment_path(dir, segments(dir).unwrap()[0]);
    let len = fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    {
        let (wal, got) = replay(dir, 0);
        assert_eq!(got.len(), 10, "series + 9 whole sample records");
        assert_eq!(got[9], samples(0, 8));
        append(&wal, &samples(0, 100));
    }
    // Garbage after valid records (a torn sector) is cut as well.
    let last = *segments(dir).unwrap().last().unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(segment_path(dir, last))
        .unwrap();
    f.write_all(&[0xff; 20]).unwrap();
    drop(f);
    let (_wal, got) = replay(dir, 0);
    assert_eq!(got.len(), 11);
    assert_eq!(got[10], samples(0, 100));
}

#[test]
fn corruption_in_an_older_segment_drops_what_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let (wal, _) = replay(dir, 0);
        append(&wal, &samples(0, 1));
        append(&wal, &samples(0, 2));
        wal.cut().unwrap();
        append(&wal, &samples(0, 3));
    }
    let first = segment_path(dir, segments(dir).unwrap()[0]);
    let mut data = fs::read(&first).unwrap();
    let n = data.len();
    data[n - 1] ^= 0x55; // flips a bit of the second record's value
    fs::write(&first, &data).unwrap();
    let (_wal, got) = replay(dir, 0);
    assert_eq!(got, vec![samples(0, 1)]);
}

#[test]
fn segments_rotate_and_old_ones_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = Wal::open(dir, 100, 0, |_| {}).unwrap();
    for t in 0..30 {
        append(&wal, &samples(0, t));
    }
    let segs = segments(dir).unwrap();
    assert!(segs.len() > 3, "{segs:?}");
    let from = wal.cut().unwrap();
    append(&wal, &samples(0, 99));
    wal.remove_before(from).unwrap();
    drop(wal);
    let (_wal, got) = replay(dir, from);
    assert_eq!(got, vec![samples(0, 99)]);
}

#[test]
fn concurrent_appends_are_all_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let wal = Arc::new(Wal::open(&dir, 1 << 20, 0, |_| {}).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|th| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for t in 0..50 {
                    append(&wal, &samples(th, t));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(wal);
    let (_wal, got) = replay(&dir, 0);
    assert_eq!(got.len(), 200);
    for th in 0..4u32 {
        let ts: Vec<i64> = got
            .iter()
            .filter_map(|r| match r {
                Record::Samples(s) if s[0].0 == th => Some(s[0].1.t),
                _ => None,
            })
            .collect();
        assert_eq!(ts, (0..50).collect::<Vec<i64>>(), "thread {th} in order");
    }
}

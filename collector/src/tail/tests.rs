//! The tailer against real files in a temporary directory.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::testutil::append;

fn opts(dir: &Path, pattern: &str) -> TailOptions {
    TailOptions {
        include: vec![dir.join(pattern).to_string_lossy().into_owned()],
        exclude: vec![dir.join("*.gz").to_string_lossy().into_owned()],
        read_from: ReadFrom::Beginning,
        rotate_wait: Duration::from_secs(5),
        max_line_bytes: 64 * 1024,
        max_read_bytes: 1 << 20,
    }
}

/// Polls once at `now_ms`, acknowledges everything and returns the lines' texts.
fn poll(t: &mut Tailer, now_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    t.poll(now_ms, &mut out);
    for l in &out {
        t.ack(l.file, l.generation, l.end);
    }
    out.into_iter().map(|l| l.text).collect()
}

#[test]
fn appends_and_partial_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "a\nb\nhalf");
    let mut t = Tailer::new(opts(dir.path(), "*.log"), Vec::new());
    assert_eq!(poll(&mut t, 0), ["a", "b"]);
    assert!(poll(&mut t, 1).is_empty());
    append(&log, "-done\nc\n");
    assert_eq!(poll(&mut t, 2), ["half-done", "c"]);
}

#[test]
fn rename_rotation_twice_reads_old_inodes_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut t = Tailer::new(opts(dir.path(), "access.log"), Vec::new());
    append(&log, "1\n");
    assert_eq!(poll(&mut t, 0), ["1"]);

    // The writer keeps its descriptor: lines land in the renamed file until it reopens.
    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    writer.write_all(b"2\n").unwrap();
    assert_eq!(poll(&mut t, 100), ["2"]);
    writer.write_all(b"3\n").unwrap();
    append(&log, "4\n");
    assert_eq!(poll(&mut t, 200), ["3", "4"]);
    assert_eq!(t.open_files(), 2);

    // Second rotation before the first rotated file was closed.
    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(
        dir.path().join("access.log.1"),
        dir.path().join("access.log.2"),
    )
    .unwrap();
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    writer.write_all(b"5\n").unwrap();
    append(&log, "6\n");
    assert_eq!(poll(&mut t, 300), ["5", "6"]);
    assert_eq!(t.open_files(), 3);

    // After rotate_wait without growth the old inodes are closed; the stream path stays.
    let mut out = Vec::new();
    let stats = t.poll(10_000, &mut out);
    assert!(out.is_empty());
    assert_eq!(stats.closed, 2);
    assert_eq!(t.open_files(), 1);
    let pos = t.positions();
    assert_eq!(pos.len(), 1);
    assert_eq!(pos[0].path, log);
    assert_eq!(pos[0].offset, 2);
}

#[test]
fn copytruncate_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "one\ntwo\n");
    let mut t = Tailer::new(opts(dir.path(), "access.log"), Vec::new());
    assert_eq!(poll(&mut t, 0), ["one", "two"]);
    std::fs::copy(&log, dir.path().join("access.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "3\n");
    let mut out = Vec::new();
    let stats = t.poll(1, &mut out);
    assert_eq!(stats.truncations, 1);
    assert_eq!(
        out.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["3"]
    );

    // Truncated and rewritten past the old position before the next poll: the guard sees it.
    for l in &out {
        t.ack(l.file, l.generation, l.end);
    }
    std::fs::write(&log, "a much longer first line\n").unwrap();
    assert_eq!(poll(&mut t, 2), ["a much longer first line"]);
}

#[test]
fn new_files_matching_the_glob_are_picked_up_and_excludes_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tailer::new(opts(dir.path(), "*"), Vec::new());
    assert!(poll(&mut t, 0).is_empty());
    append(&dir.path().join("a.log"), "a\n");
    append(&dir.path().join("old.gz"), "binary\n");
    assert_eq!(poll(&mut t, 1), ["a"]);
    append(&dir.path().join("b.log"), "b\n");
    append(&dir.path().join("a.log"), "a2\n");
    let mut got = poll(&mut t, 2);
    got.sort();
    assert_eq!(got, ["a2", "b"]);
}

#[test]
fn read_from_end_skips_what_existed_at_start_only() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), "old\n");
    let mut o = opts(dir.path(), "*.log");
    o.read_from = ReadFrom::End;
    let mut t = Tailer::new(o, Vec::new());
    assert!(poll(&mut t, 0).is_empty());
    append(&dir.path().join("a.log"), "new\n");
    append(&dir.path().join("b.log"), "b\n");
    let mut got = poll(&mut t, 1);
    got.sort();
    assert_eq!(got, ["b", "new"]);
}

/// Delivers lines in polls of the given sizes, acknowledging only what the "sink" took, then
/// restarts from the checkpoint: every line arrives exactly once.
#[test]
fn restart_from_checkpoint_delivers_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let o = opts(dir.path(), "access.log");
    let mut delivered = Vec::new();
    let mut next = 0;
    let mut write_lines = |n: usize| {
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(&format!("line {next}\n"));
            next += 1;
        }
        append(&log, &s);
    };

    write_lines(10);
    let mut t = Tailer::new(o.clone(), Vec::new());
    let mut out = Vec::new();
    t.poll(0, &mut out);
    // Only the first 6 were shipped when the process stopped.
    for l in &out[..6] {
        t.ack(l.file, l.generation, l.end);
        delivered.push(l.text.clone());
    }
    let cp = t.positions();
    drop(t);

    // Rotated while down, with lines appended before and after.
    write_lines(2);
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    write_lines(3);

    let mut t = Tailer::new(o.clone(), cp);
    delivered.extend(poll(&mut t, 0));
    write_lines(1);
    delivered.extend(poll(&mut t, 1));
    let cp = t.positions();
    drop(t);

    write_lines(2);
    let mut t = Tailer::new(o, cp);
    delivered.extend(poll(&mut t, 0));
    let want: Vec<String> = (0..18).map(|i| format!("line {i}")).collect();
    assert_eq!(delivered, want);
}

#[test]
fn a_checkpoint_of_a_replaced_file_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "aaaa\nbbbb\n");
    let o = opts(dir.path(), "access.log");
    let mut t = Tailer::new(o.clone(), Vec::new());
    assert_eq!(poll(&mut t, 0).len(), 2);
    let cp = t.positions();
    drop(t);
    // Same inode, other content of the same length.
    std::fs::write(&log, "cccc\ndddd\neeee\n").unwrap();
    let mut t = Tailer::new(o, cp);
    assert_eq!(poll(&mut t, 0), ["cccc", "dddd", "eeee"]);
}

#[test]
fn reads_are_bounded_per_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &"0123456789\n".repeat(10));
    let mut o = opts(dir.path(), "access.log");
    o.max_read_bytes = 25;
    let mut t = Tailer::new(o, Vec::new());
    let mut all = Vec::new();
    for i in 0..10 {
        let mut out = Vec::new();
        let stats = t.poll(i, &mut out);
        all.extend(out.into_iter().map(|l| l.text));
        if !stats.more {
            break;
        }
    }
    assert_eq!(all.len(), 10);
}

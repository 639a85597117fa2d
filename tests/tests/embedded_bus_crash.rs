//! The embedded bus across `kill -9` and SIGTERM of the process using it (`bus-probe`).
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bus::embedded::{EmbeddedBus, EmbeddedConfig};
use bus::{Bus, Topic};
use tests::{signal, wait_timeout};

fn probe(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bus-probe"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Sequence numbers in `acked FIRST LAST` lines.
fn acked(lines: &[String]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("acked ") {
            let (a, b) = rest.split_once(' ').unwrap();
            out.extend(a.parse::<u64>().unwrap()..=b.parse().unwrap());
        }
    }
    out
}

fn wait_for_lines(rx: &mpsc::Receiver<String>, min: usize) -> Vec<String> {
    let mut lines = Vec::new();
    while lines.len() < min {
        lines.push(rx.recv_timeout(Duration::from_secs(20)).unwrap());
    }
    lines
}

fn seq(payload: &[u8]) -> u64 {
    std::str::from_utf8(&payload[..12])
        .unwrap()
        .parse()
        .unwrap()
}

/// Everything in the log, read in-process by a fresh group.
fn read_all(dir: &Path) -> Vec<(i64, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = EmbeddedBus::open(dir, EmbeddedConfig::default()).unwrap();
        let group = format!("check-{}", std::process::id());
        let mut c = bus.consumer(&group, &[Topic::Logs]).await.unwrap();
        let mut out = Vec::new();
        loop {
            let got = c.poll(10_000, Duration::from_millis(100)).await.unwrap();
            if got.is_empty() {
                break;
            }
            out.extend(got.iter().map(|d| (d.offset, seq(&d.payload))));
        }
        bus.close().await.unwrap();
        out
    })
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_acked = BTreeSet::new();
    let mut start = 0u64;
    for cycle in 0..6u64 {
        let (mut child, rx) = probe(dir.path(), &["produce", "--start", &start.to_string()]);
        // Let it run for a while (different lengths per cycle), then kill it mid-write.
        let mut lines = wait_for_lines(&rx, 20 + 30 * cycle as usize);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        lines.extend(rx.try_iter());
        let acked = acked(&lines);
        assert!(!acked.is_empty());
        start = acked.last().unwrap() + 10_000; // past anything in flight
        all_acked.extend(acked);
    }
    let log = read_all(dir.path());
    let present: BTreeSet<u64> = log.iter().map(|(_, s)| *s).collect();
    let lost: Vec<_> = all_acked.difference(&present).take(10).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}…");
    // Every sequence number was sent once, so none may appear twice; offsets are contiguous.
    assert_eq!(present.len(), log.len(), "duplicated records");
    assert!(log.windows(2).all(|w| w[1].0 == w[0].0 + 1), "offset gap");
    // Segments rolled during the test, so recovery crossed segment boundaries.
    assert!(std::fs::read_dir(dir.path().join("logs")).unwrap().count() > 2);
}

#[test]
fn committed_records_are_not_delivered_again_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let total = 6000u64;
    // One sending task: log order is sequence order, so "delivered again" is a comparison.
    let (mut child, rx) = probe(
        dir.path(),
        &["produce", "--tasks", "1", "--count", &total.to_string()],
    );
    assert!(
        wait_timeout(&mut child, Duration::from_secs(60))
            .unwrap()
            .unwrap()
            .success()
    );
    assert_eq!(
        acked(&rx.try_iter().collect::<Vec<_>>()).len() as u64,
        total
    );

    let mut delivered = Vec::new();
    let mut last_committed: Option<u64> = None;
    for cycle in 0..4 {
        let (mut child, rx) = probe(dir.path(), &["consume", "--group", "store", "--max", "97"]);
        let lines = wait_for_lines(&rx, 300 + cycle * 100);
        child.kill().unwrap();
        child.wait().unwrap();
        let lines: Vec<String> = lines.into_iter().chain(rx.try_iter()).collect();
        for l in &lines {
            if let Some(s) = l.strip_prefix("got ") {
                let s: u64 = s.parse().unwrap();
                if let Some(c) = last_committed {
                    assert!(
                        s > c,
                        "cycle {cycle}: {s} delivered again after commit of {c}"
                    );
                }
                delivered.push(s);
            }
        }
        if let Some(c) = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("committed "))
        {
            last_committed = Some(c.parse().unwrap());
        }
    }
    // A last run reads the rest and exits when idle.
    let (mut child, rx) = probe(
        dir.path(),
        &["consume", "--group", "store", "--exit-when-idle"],
    );
    assert!(
        wait_timeout(&mut child, Duration::from_secs(60))
            .unwrap()
            .unwrap()
            .success()
    );
    for l in rx.try_iter() {
        if let Some(s) = l.strip_prefix("got ") {
            let s: u64 = s.parse().unwrap();
            assert!(s > last_committed.unwrap(), "{s} delivered again");
            delivered.push(s);
        }
    }
    let unique: BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(
        unique,
        (0..total).collect::<BTreeSet<_>>(),
        "every record delivered"
    );
}

#[test]
fn sigterm_flushes_sends_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = probe(dir.path(), &["produce", "--tasks", "16", "--batch", "20"]);
    let mut lines = wait_for_lines(&rx, 50);
    signal(&child, libc::SIGTERM).unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20))
        .unwrap()
        .expect("probe did not exit after SIGTERM");
    assert!(status.success());
    lines.extend(rx.try_iter());
    assert_eq!(lines.last().map(String::as_str), Some("closed"));
    let acked = acked(&lines);
    let present: BTreeSet<u64> = read_all(dir.path()).iter().map(|(_, s)| *s).collect();
    // After a clean stop the log holds exactly what was acknowledged: sends in flight at the
    // signal were either flushed and acknowledged, or refused.
    assert_eq!(present, acked);
}

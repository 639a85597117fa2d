//! `sextant run` tails a directory laid out like the kubelet's `/var/log/pods` (a CRI file) and
//! Docker's `/var/lib/docker/containers` (a json-file) while they are written: partial lines
//! (also split across polls, across a restart of Sextant and across a kubelet-style rotation),
//! Docker's split entries, a malformed line. The logs topic of the embedded bus then holds each
//! logical line exactly once, with its labels and its own timestamp.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::Sextant;

const UID: &str = "5d8a6f2e-1b7c-4c5e-9f3a-2b1c0d9e8f7a";
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// 2026-01-01T00:00:00Z in nanoseconds.
const BASE_NS: i64 = 1_767_225_600_000_000_000;

/// A line the test expects on the logs topic.
#[derive(Clone, Debug, PartialEq)]
struct Want {
    ts_ns: i64,
    /// `None`: a malformed line, shipped without `stream`.
    stream: Option<&'static str>,
    docker: bool,
}

struct Writer {
    cri: PathBuf,
    docker: PathBuf,
    /// Milliseconds after BASE of the next line.
    next_ms: i64,
    want: HashMap<String, Want>,
}

fn rfc3339(ns: i64) -> String {
    let s = ns.div_euclid(1_000_000_000) - BASE_NS / 1_000_000_000;
    let frac = ns.rem_euclid(1_000_000_000);
    format!(
        "2026-01-01T{:02}:{:02}:{:02}.{frac:09}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn append(path: &Path, text: &str) {
    tests::append(path, text).unwrap();
}

impl Writer {
    fn tick(&mut self) -> i64 {
        self.next_ms += 1;
        BASE_NS + self.next_ms * 1_000_000 + 123
    }

    /// Writes CRI pieces of one line (all but the last tagged `P`), waiting `pause` between
    /// them, and expects the joined line with the first piece's time.
    fn cri_line(&mut self, stream: &'static str, pieces: &[&str], pause: Duration) {
        let mut first = None;
        for (i, p) in pieces.iter().enumerate() {
            let ts = self.tick();
            first.get_or_insert(ts);
            let tag = if i + 1 == pieces.len() { "F" } else { "P" };
            append(&self.cri, &format!("{} {stream} {tag} {p}\n", rfc3339(ts)));
            if i + 1 < pieces.len() {
                std::thread::sleep(pause);
            }
        }
        self.expect(pieces.concat(), first.unwrap(), Some(stream), false);
    }

    fn docker_line(&mut self, stream: &'static str, pieces: &[&str]) {
        let mut first = None;
        let mut text = String::new();
        for (i, p) in pieces.iter().enumerate() {
            let ts = self.tick();
            first.get_or_insert(ts);
            let log = if i + 1 == pieces.len() {
                format!("{p}\n")
            } else {
                (*p).to_owned()
            };
            text +=
                &serde_json::json!({"log": log, "stream": stream, "time": rfc3339(ts)}).to_string();
            text.push('\n');
        }
        append(&self.docker, &text);
        self.expect(pieces.concat(), first.unwrap(), Some(stream), true);
    }

    fn expect(&mut self, line: String, ts_ns: i64, stream: Option<&'static str>, docker: bool) {
        let w = Want {
            ts_ns,
            stream,
            docker,
        };
        assert!(self.want.insert(line, w).is_none());
    }
}

/// The container-log checkpoint of `data`: (inode → offset), pending partial lines.
fn checkpoint(data: &Path) -> (HashMap<u64, u64>, usize) {
    let path = data.join("collector/container_logs.checkpoint.json");
    let Ok(bytes) = std::fs::read(path) else {
        return (HashMap::new(), 0);
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let files = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["ino"].as_u64().unwrap(), f["offset"].as_u64().unwrap()))
        .collect();
    (files, v["pending"].as_array().unwrap().len())
}

/// Waits until the checkpoint says every byte of `live` files (and of `rotated` ones, unless
/// they are closed) was shipped and `pending` partial lines wait.
fn wait_shipped(s: &Sextant, data: &Path, live: &[&Path], rotated: &[&Path], pending: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (files, p) = checkpoint(data);
        let done = |path: &Path, must: bool| {
            let m = std::fs::metadata(path).unwrap();
            match files.get(&m.ino()) {
                Some(off) => *off == m.len(),
                None => !must,
            }
        };
        if p == pending
            && live.iter().all(|f| done(f, true))
            && rotated.iter().all(|f| done(f, false))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not shipped: checkpoint {files:?}, {p} pending; sextant log:\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn container_lines_arrive_once_with_labels_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let pod_dir = dir.path().join(format!("logs/pods/shop_web-0_{UID}/nginx"));
    let docker_dir = dir.path().join(format!("logs/docker/{ID}"));
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::create_dir_all(&docker_dir).unwrap();
    let mut w = Writer {
        cri: pod_dir.join("0.log"),
        docker: docker_dir.join(format!("{ID}-json.log")),
        next_ms: 0,
        want: HashMap::new(),
    };
    let config = dir.path().join("sextant.yaml");
    let logs = dir.path().join("logs");
    std::fs::write(
        &config,
        format!(
            "collector:\n  container_logs:\n    paths: [\"{0}/pods/*/*/*.log\", \"{0}/docker/*/*-json.log\"]\n    rotate_wait: 1s\n    partial_timeout: 5m\n",
            logs.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let s = Sextant::start(&data, &args).unwrap();

    let none = Duration::ZERO;
    for i in 0..40 {
        w.cri_line("stdout", &[&format!("cri-{i}")], none);
        w.docker_line("stdout", &[&format!("docker-{i}")]);
    }
    // A partial sequence whose pieces are read by different polls, with a stderr line between.
    let ts = w.tick();
    append(&w.cri, &format!("{} stdout P polls-a-\n", rfc3339(ts)));
    std::thread::sleep(Duration::from_millis(1500));
    w.cri_line("stderr", &["an error"], none);
    let ts2 = w.tick();
    append(&w.cri, &format!("{} stdout F polls-b\n", rfc3339(ts2)));
    w.expect("polls-a-polls-b".into(), ts, Some("stdout"), false);
    w.docker_line(
        "stderr",
        &["docker-split-1 ", "docker-split-2 ", "docker-split-3"],
    );
    append(&w.cri, "not a cri line\n");
    w.expect("not a cri line".into(), ts2, None, false);
    // The start of a line, then Sextant stops before its end is written.
    let ts = w.tick();
    append(&w.cri, &format!("{} stdout P restart-a-\n", rfc3339(ts)));
    wait_shipped(&s, &data, &[&w.cri, &w.docker], &[], 1);
    s.stop().unwrap();

    let s = Sextant::start(&data, &args).unwrap();
    let ts2 = w.tick();
    append(&w.cri, &format!("{} stdout F restart-b\n", rfc3339(ts2)));
    w.expect("restart-a-restart-b".into(), ts, Some("stdout"), false);
    for i in 40..80 {
        w.cri_line("stdout", &[&format!("cri-{i}")], none);
        w.docker_line("stdout", &[&format!("docker-{i}")]);
    }
    // kubelet's rotation: 0.log renamed to 0.log.<time>, a new 0.log; a line starts in the old
    // file and ends in the new one.
    let ts = w.tick();
    append(&w.cri, &format!("{} stdout P rotated-a-\n", rfc3339(ts)));
    let rotated = pod_dir.join("0.log.20260101-000100");
    std::fs::rename(&w.cri, &rotated).unwrap();
    let ts2 = w.tick();
    append(&w.cri, &format!("{} stdout F rotated-b\n", rfc3339(ts2)));
    w.expect("rotated-a-rotated-b".into(), ts, Some("stdout"), false);
    for i in 80..120 {
        w.cri_line("stdout", &[&format!("cri-{i}")], none);
    }
    wait_shipped(&s, &data, &[&w.cri, &w.docker], &[&rotated], 0);
    s.stop().unwrap();

    let mut seen: Vec<(String, i64, HashMap<String, String>)> = Vec::new();
    for batch in tests::read_logs_topic(&data, "container-logs-test").unwrap() {
        for stream in batch.streams {
            let labels: HashMap<String, String> = stream
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            for e in stream.entries {
                seen.push((e.line, e.timestamp_ns, labels.clone()));
            }
        }
    }

    let mut count: HashMap<&str, usize> = HashMap::new();
    for (line, ts, labels) in &seen {
        *count.entry(line).or_default() += 1;
        let want = w
            .want
            .get(line)
            .unwrap_or_else(|| panic!("unexpected line {line:?} {labels:?}"));
        assert_eq!(*ts, want.ts_ns, "timestamp of {line:?}");
        assert_eq!(
            labels.get("stream").map(String::as_str),
            want.stream,
            "{line:?}"
        );
        assert_eq!(labels["job"], "container-logs");
        if want.docker {
            assert_eq!(labels["container_id"], ID, "{line:?}");
            assert_eq!(labels["filename"], w.docker.display().to_string());
            assert!(!labels.contains_key("pod"));
        } else {
            assert_eq!(labels["namespace"], "shop", "{line:?}");
            assert_eq!(labels["pod"], "web-0");
            assert_eq!(labels["pod_uid"], UID);
            assert_eq!(labels["container"], "nginx");
            // The rotated file keeps the path it was tailed as.
            assert_eq!(labels["filename"], w.cri.display().to_string());
        }
    }
    for line in w.want.keys() {
        assert_eq!(count.get(line.as_str()), Some(&1), "{line:?}");
    }
    assert_eq!(seen.len(), w.want.len());
}

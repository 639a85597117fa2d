//! Container-log throughput: lines per CPU-second through the whole pipeline (tail, split, parse,
//! join, log entries), for a CRI file and a Docker json-file.
//!
//! Run with `cargo test -p collector --release --test containerlog_bench -- --ignored
//! --nocapture`. CPU time is this thread's, from `/proc/thread-self/schedstat`, so other load on
//! the machine does not count.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use collector::containerlog::{ContainerLog, ContainerLogConfig};

const UID: &str = "5d8a6f2e-1b7c-4c5e-9f3a-2b1c0d9e8f7a";
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// A ~120-byte application line.
fn content(i: usize) -> String {
    format!(
        "level=info ts=2026-01-01T00:00:00Z caller=server.go:{} msg=\"request served\" path=/api/v1/items/{} status=200",
        i % 500,
        i % 1000
    )
}

/// Writes `n` logical lines to `path`, every tenth split in three pieces; returns the physical
/// lines written.
fn write(path: &Path, n: usize, docker: bool) -> usize {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut physical = 0;
    for i in 0..n {
        let ts = format!(
            "2026-01-01T00:{:02}:{:02}.{:09}Z",
            i / 60_000 % 60,
            i / 1000 % 60,
            i
        );
        let c = content(i);
        let pieces: Vec<&str> = if i % 10 == 0 {
            vec![&c[..40], &c[40..80], &c[80..]]
        } else {
            vec![&c]
        };
        for (k, p) in pieces.iter().enumerate() {
            let last = k + 1 == pieces.len();
            if docker {
                let log = if last {
                    format!("{p}\n")
                } else {
                    (*p).to_owned()
                };
                let j = serde_json::json!({"log": log, "stream": "stdout", "time": ts});
                writeln!(f, "{j}").unwrap();
            } else {
                writeln!(f, "{ts} stdout {} {p}", if last { "F" } else { "P" }).unwrap();
            }
            physical += 1;
        }
    }
    physical
}

fn run(dir: &Path, glob: &str, n: usize) -> u64 {
    let cfg = ContainerLogConfig {
        paths: vec![dir.join(glob).to_string_lossy().into_owned()],
        ..Default::default()
    };
    let mut c = ContainerLog::open(&cfg, None, &dir.join("data")).unwrap();
    let now = SystemTime::now();
    let cpu = thread_cpu_ns();
    let mut total = 0;
    for i in 0..10_000 {
        let b = c.poll(i, now + Duration::from_millis(i));
        let got = b.lines.cri + b.lines.docker;
        assert_eq!(b.lines.raw, 0);
        total += got;
        if !b.more && got == 0 {
            break;
        }
    }
    let ns = thread_cpu_ns() - cpu;
    assert_eq!(total, n as u64);
    ns
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn container_lines_per_cpu_second() {
    let n = 500_000;
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join(format!("pods/shop_web-0_{UID}/app"));
    std::fs::create_dir_all(&pod).unwrap();
    let docker = dir.path().join(format!("docker/{ID}"));
    std::fs::create_dir_all(&docker).unwrap();
    for (name, path, glob, is_docker) in [
        ("cri", pod.join("0.log"), "pods/*/*/*.log", false),
        (
            "docker",
            docker.join(format!("{ID}-json.log")),
            "docker/*/*-json.log",
            true,
        ),
    ] {
        let physical = write(&path, n, is_docker);
        let bytes = std::fs::metadata(&path).unwrap().len();
        let ns = run(dir.path(), glob, n);
        println!(
            "{name}: {:.0} lines/CPU-s ({:.0} ns/line, {:.0} MiB/CPU-s), {n} lines from {physical} physical lines of ~{} bytes, every tenth joined from 3 pieces",
            n as f64 / (ns as f64 / 1e9),
            ns as f64 / n as f64,
            bytes as f64 / (1 << 20) as f64 / (ns as f64 / 1e9),
            bytes / physical as u64,
        );
        std::fs::remove_file(&path).unwrap();
    }
}

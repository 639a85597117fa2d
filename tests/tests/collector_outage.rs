//! `sextant collector --kafka` against a real tansu broker that is killed for 30 s under load and
//! restarted: the collector tails an access log the test appends to at 200 lines/s and collects a
//! real cgroup every second; a `sextant run` on the same broker stores the metrics. Afterwards
//! every line written is on the logs topic, `sum(sextant_http_requests_total)` equals the lines
//! written (nothing lost, nothing counted twice), and the cgroup's samples have no gap: those
//! taken during the outage were spooled and arrived after it. The cgroup part needs root and a
//! writable cgroupfs (as `scripts/test` runs in CI); without them it is skipped with a message.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::kafka::{KafkaBus, KafkaConfig};
use bus::proto::LogsBatch;
use bus::{Bus, Topic};
use prost::Message;
use serde_json::Value;
use tests::{Sextant, Tansu};

const FORMAT: &str = r#"$remote_addr - [$time_local] $host "$request" $status $body_bytes_sent $request_time "$upstream_addr" $request_id "$http_traceparent""#;
/// Lines appended per second.
const RATE: u64 = 200;
const BEFORE: Duration = Duration::from_secs(8);
const OUTAGE: Duration = Duration::from_secs(30);
const AFTER: Duration = Duration::from_secs(8);

fn line(i: u64) -> String {
    format!(
        "10.1.2.3 - [30/Nov/2026:06:00:00 +0000] shop.example \"GET /item/{i} HTTP/1.1\" 200 512 0.004 \"10.0.0.7:8080\" {i:032x} \"-\"\n"
    )
}

/// The line number a log line carries (its `/item/N`).
fn line_number(text: &str) -> u64 {
    let rest = &text[text.find("/item/").unwrap() + 6..];
    rest[..rest.find(' ').unwrap()].parse().unwrap()
}

/// A `/docker/<id>` cgroup in every hierarchy (so the collector sees a Docker container), with a
/// sleeping process in it; removed on drop. None when cgroups cannot be created here.
struct Container {
    rel: String,
    dirs: Vec<PathBuf>,
    child: Option<Child>,
}

impl Container {
    fn create() -> Option<Container> {
        let id = format!("{:016x}{:048x}", std::process::id(), now_ms());
        let rel = format!("docker/{id}");
        let mut c = Container {
            rel: format!("/{rel}"),
            dirs: Vec::new(),
            child: None,
        };
        // cgroup v2 alone, or the v1 controllers a process joins without further set-up (a new
        // cpuset has no CPUs until given some).
        let base = PathBuf::from("/sys/fs/cgroup");
        let roots: Vec<PathBuf> = if base.join("cgroup.procs").exists() {
            vec![base]
        } else {
            ["memory", "cpu,cpuacct", "cpu", "cpuacct", "pids", "blkio"]
                .iter()
                .map(|c| base.join(c))
                .filter(|p| p.join("cgroup.procs").exists() && !p.is_symlink())
                .collect()
        };
        for root in roots {
            let d = root.join(&rel);
            if let Err(e) = std::fs::create_dir_all(&d) {
                eprintln!("SKIP cgroup part: cannot create {}: {e}", d.display());
                return None;
            }
            c.dirs.push(d);
        }
        if c.dirs.is_empty() {
            eprintln!("SKIP cgroup part: no cgroup hierarchy under /sys/fs/cgroup");
            return None;
        }
        let join: String = c
            .dirs
            .iter()
            .map(|d| format!("echo $$ > '{}/cgroup.procs' || exit 97; ", d.display()))
            .collect();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{join}exec sleep 600"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.child = Some(child);
        Some(c)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Also `docker/` when this test made it and nothing else is in it.
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn kafka_yaml(brokers: &str) -> String {
    format!(
        "bus:\n  kafka:\n    brokers: \"{brokers}\"\n    partitions: 3\n    message_timeout: 5m\n"
    )
}

fn query(s: &Sextant, q: &str) -> Value {
    let body: Value = reqwest::blocking::Client::new()
        .post(s.url("/api/v1/query"))
        .form(&[("query", q)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["status"], "success", "{q}: {body}");
    body["data"]["result"].clone()
}

fn scalar(result: &Value) -> Option<u64> {
    result[0]["value"][1]
        .as_str()
        .map(|v| v.parse::<f64>().unwrap() as u64)
}

/// The value of an unlabelled-enough metric line on `/metrics` (summed over its series).
fn own_metric(s: &Sextant, name: &str, label: &str) -> f64 {
    let text = reqwest::blocking::get(s.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Appends [`RATE`] lines a second to `path` until `stop`, counting them in `written`.
fn append_lines(path: PathBuf, written: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let start = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let due = start.elapsed().as_millis() as u64 * RATE / 1000;
        let mut chunk = String::new();
        while i < due {
            chunk.push_str(&line(i));
            i += 1;
        }
        f.write_all(chunk.as_bytes()).unwrap();
        written.store(i, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("gave up waiting for {what}");
    false
}

#[test]
fn broker_outage_under_load_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("tansu");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let mut broker = Tansu::start(&broker_dir).unwrap();
    let brokers = broker.brokers();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The topics, created up front (the collector and the store would create them too).
    let kafka = rt
        .block_on(KafkaBus::connect(KafkaConfig {
            brokers: brokers.clone(),
            partitions: 3,
            ..KafkaConfig::default()
        }))
        .unwrap();

    let store_config = dir.path().join("store.yaml");
    std::fs::write(
        &store_config,
        format!("{}collector:\n  enabled: false\n", kafka_yaml(&brokers)),
    )
    .unwrap();
    let store = Sextant::start(
        &dir.path().join("store"),
        &["--config", store_config.to_str().unwrap()],
    )
    .unwrap();

    let container = Container::create();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let collector_config = dir.path().join("collector.yaml");
    std::fs::write(
        &collector_config,
        format!(
            "collector:\n  interval: 1s\n  access_log:\n    sources:\n      - name: shop\n        include: [\"{}\"]\n        labels: {{job: router}}\n        parsers:\n          - nginx: '{FORMAT}'\n",
            log.display()
        ),
    )
    .unwrap();
    let collector = Sextant::start_collector(
        &dir.path().join("collector"),
        &[
            "--kafka",
            &brokers,
            "--config",
            collector_config.to_str().unwrap(),
        ],
    )
    .unwrap();

    // Load, then the outage, then more load.
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (log, written, stop) = (log.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || append_lines(log, written, stop))
    };
    std::thread::sleep(BEFORE);
    broker.kill();
    let killed_ms = now_ms();
    std::thread::sleep(OUTAGE - Duration::from_secs(5));
    // The collector kept accepting: its spool holds what it could not ship.
    let spooled = own_metric(&collector, "sextant_bus_spool_records", "topic=\"logs\"");
    assert!(
        spooled > 0.0,
        "nothing spooled during the outage; collector log:\n{}",
        collector.stderr()
    );
    assert!(own_metric(&collector, "sextant_bus_spool_bytes", "") > 0.0);
    // The shipping lag shows while the outage lasts (the oldest unsent line is ~25 s old).
    let lag = own_metric(
        &collector,
        "sextant_bus_spool_oldest_age_seconds",
        "topic=\"logs\"",
    );
    assert!(lag > 1.0, "spool lag {lag} s during the outage");
    std::thread::sleep(Duration::from_secs(5));
    broker.restart().unwrap();
    let restarted_ms = now_ms();
    std::thread::sleep(AFTER);
    stop.store(true, Ordering::SeqCst);
    appender.join().unwrap();
    let n = written.load(Ordering::SeqCst);
    assert!(n >= RATE * 40, "only {n} lines written");

    // Every request counted exactly once in the store.
    let mut counted = None;
    let all_counted = wait_until("the request count", Duration::from_secs(60), || {
        counted = scalar(&query(
            &store,
            "sum(sextant_http_requests_total{job=\"router\"})",
        ));
        counted == Some(n)
    });
    assert!(
        all_counted,
        "sum(sextant_http_requests_total) = {counted:?}, {n} lines written\ncollector log:\n{}\nstore log:\n{}\ntansu log:\n{}",
        collector.stderr(),
        store.stderr(),
        std::fs::read_to_string(broker_dir.join("tansu.log")).unwrap_or_default()
    );
    assert!(
        own_metric(
            &collector,
            "sextant_bus_spool_drained_records_total",
            "topic=\"logs\""
        ) > 0.0
    );

    // Every line is on the logs topic (at least once: a batch resent after a broken connection
    // may be there twice).
    let lines = lines_on_topic(&rt, &kafka, "outage-test", n);
    let missing: Vec<u64> = (0..n).filter(|i| !lines.contains(i)).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {n} lines on the logs topic; first missing: {missing:?}",
        lines.len()
    );

    // The cgroup's samples: one a second throughout, the outage included, each once.
    if let Some(container) = &container {
        let window_s = (now_ms() - killed_ms) / 1000 + 15;
        let result = query(
            &store,
            &format!(
                "container_memory_usage_bytes{{id=\"{}\"}}[{window_s}s]",
                container.rel
            ),
        );
        let values = result[0]["values"].as_array().cloned().unwrap_or_default();
        let ts: Vec<f64> = values.iter().map(|v| v[0].as_f64().unwrap()).collect();
        assert!(
            ts.len() > 30,
            "{} samples of the container; result {result}",
            ts.len()
        );
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "duplicate samples");
        let (first, last) = (ts[0] * 1000.0, ts[ts.len() - 1] * 1000.0);
        assert!(first < killed_ms as f64 && last > restarted_ms as f64);
        let gap = ts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        assert!(gap <= 3.0, "a gap of {gap} s in the container's samples");
    }

    // The collector stops cleanly, its spool drained.
    let mut collector = collector;
    tests::signal(&collector.child, libc::SIGTERM).unwrap();
    let status = tests::wait_timeout(&mut collector.child, Duration::from_secs(30)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        collector.stderr()
    );
    drop(store);
    rt.block_on(kafka.close()).unwrap();
}

#[test]
fn the_collector_refuses_the_embedded_bus() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(tests::workspace_bin("sextant").unwrap())
        .args(["collector", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("SEXTANT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--kafka BROKERS"), "{stderr}");
    // Nothing was started: no spool, no checkpoint.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The lines on the logs topic, read by a fresh group until `n` distinct ones or a minute passed.
fn lines_on_topic(
    rt: &tokio::runtime::Runtime,
    kafka: &KafkaBus,
    group: &str,
    n: u64,
) -> HashSet<u64> {
    rt.block_on(async {
        let mut c = kafka.consumer(group, &[Topic::Logs]).await.unwrap();
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (seen.len() as u64) < n && Instant::now() < deadline {
            for d in c.poll(1000, Duration::from_millis(500)).await.unwrap() {
                for stream in LogsBatch::decode(&d.payload[..]).unwrap().streams {
                    seen.extend(stream.entries.iter().map(|e| line_number(&e.line)));
                }
            }
        }
        seen
    })
}

/// Stopped while the broker is down, the collector exits promptly; started again once the broker
/// is back, it sends what its spool kept.
#[test]
fn a_collector_stopped_during_an_outage_sends_its_spool_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("tansu");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let mut broker = Tansu::start(&broker_dir).unwrap();
    let brokers = broker.brokers();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kafka = rt
        .block_on(KafkaBus::connect(KafkaConfig {
            brokers: brokers.clone(),
            partitions: 3,
            ..KafkaConfig::default()
        }))
        .unwrap();
    let log = dir.path().join("access.log");
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "collector:\n  interval: 1s\n  access_log:\n    sources:\n      - name: shop\n        include: [\"{}\"]\n        labels: {{job: router}}\n        parsers:\n          - nginx: '{FORMAT}'\n",
            log.display()
        ),
    )
    .unwrap();
    let append = |range: std::ops::Range<u64>| {
        let text: String = range.map(line).collect();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    let data = dir.path().join("collector");
    let args = ["--kafka", &brokers, "--config", config.to_str().unwrap()];
    let mut collector = Sextant::start_collector(&data, &args).unwrap();
    append(0..500);
    let shipped = wait_until("the first lines shipped", Duration::from_secs(30), || {
        own_metric(
            &collector,
            "sextant_bus_spool_drained_records_total",
            "topic=\"logs\"",
        ) > 0.0
            && own_metric(&collector, "sextant_bus_spool_records", "topic=\"logs\"") == 0.0
    });
    assert!(shipped, "{}", collector.stderr());

    broker.kill();
    append(500..1000);
    let spooled = wait_until("the lines spooled", Duration::from_secs(30), || {
        own_metric(&collector, "sextant_bus_spool_records", "topic=\"logs\"") > 0.0
    });
    assert!(spooled, "{}", collector.stderr());
    tests::signal(&collector.child, libc::SIGTERM).unwrap();
    let status = tests::wait_timeout(&mut collector.child, Duration::from_secs(30)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit while the broker is down: {status:?}\n{}",
        collector.stderr()
    );
    drop(collector);

    broker.restart().unwrap();
    let collector = Sextant::start_collector(&data, &args).unwrap();
    let seen = lines_on_topic(&rt, &kafka, "restart-test", 1000);
    let missing: Vec<u64> = (0..1000).filter(|i| !seen.contains(i)).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of 1000 lines on the logs topic; first missing: {missing:?}\n{}",
        seen.len(),
        collector.stderr()
    );
    assert!(
        collector
            .stderr()
            .contains("spool holds records of an earlier run")
    );
    drop(collector);
    rt.block_on(kafka.close()).unwrap();
}

//! Real nginx (Debian's package: `apt-get install -y nginx`) with a custom `log_format` on a free
//! loopback port, driven by a bounded client while its access log is rotated twice
//! (`mv` + `nginx -s reopen`): the pipeline ships each line exactly once, and the RED counter sum
//! equals nginx's own request count (`stub_status`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use collector::MemorySink;
use collector::accesslog::{
    AccessLog, AccessLogConfig, AccessLogSource, MemoryLogsSink, ParserConfig,
};
use tests::nginx::Nginx;

const FORMAT: &str = r#"$remote_addr - [$time_local] $host "$request" $status $body_bytes_sent $request_time "$upstream_addr" $request_id "$http_traceparent""#;

fn trace_id(i: usize) -> String {
    format!(
        "{:032x}",
        0x5e47_0000_0000_0000_0000_0000_0000_0000_u128 + i as u128
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lines_once_and_red_count_exact_across_two_rotations() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&dir.path().join("nginx"), FORMAT).unwrap();
    let logs_dir = dir.path().join("nginx/logs");
    let log = logs_dir.join("access.log");

    let cfg = AccessLogConfig {
        sources: vec![AccessLogSource {
            name: "nginx".into(),
            // The live file and its renamed generations: a generation renamed away before a poll
            // saw it at `access.log` (two rotations within a second here) is still found, and
            // inode tracking reads every file once whatever its name.
            include: vec![format!("{}*", log.display())],
            parsers: vec![ParserConfig::Nginx(FORMAT.into())],
            ..Default::default()
        }],
        rotate_wait: Duration::from_secs(1),
        ..Default::default()
    };
    let al = AccessLog::open(&cfg, dir.path(), SystemTime::now()).unwrap();
    let logs = Arc::new(MemoryLogsSink::new());
    let samples = Arc::new(MemorySink::new());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pipeline = tokio::spawn(al.run(logs.clone(), samples.clone(), async {
        let _ = stop_rx.await;
    }));

    // The client: N sequential keep-alive requests; the log is renamed and reopened at N/3 and
    // 2N/3 while requests keep coming.
    let port = nginx.port;
    let nginx = Arc::new(nginx);
    let client = {
        let nginx = nginx.clone();
        tokio::task::spawn_blocking(move || {
            let http = reqwest::blocking::Client::new();
            for i in 0..N {
                if i == N / 3 || i == 2 * N / 3 {
                    nginx.rotate().unwrap();
                }
                let r = http
                    .get(format!("http://127.0.0.1:{port}/item/{i}"))
                    .header(
                        "traceparent",
                        format!("00-{}-00f067aa0ba902b7-01", trace_id(i)),
                    )
                    .send()
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
            nginx.requests_handled().unwrap()
        })
    };
    let nginx_count = client.await.unwrap();
    assert_eq!(nginx_count, N as u64);

    // Bounded wait for every line and a RED flush that counts them all.
    let mut streams = Vec::new();
    let mut red_total = 0.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        streams.extend(logs.take());
        let mut latest: HashMap<String, (i64, f64)> = HashMap::new();
        for g in samples.take() {
            for s in g.series {
                if s.labels[0].value != "sextant_http_requests_total" {
                    continue;
                }
                let key = format!("{:?}", s.labels);
                let smp = &s.samples[0];
                let e = latest.entry(key).or_insert((smp.timestamp, smp.value));
                if smp.timestamp >= e.0 {
                    *e = (smp.timestamp, smp.value);
                }
            }
        }
        if !latest.is_empty() {
            red_total = latest.values().map(|(_, v)| v).sum();
        }
        let lines: usize = streams.iter().map(|s| s.entries.len()).sum();
        if lines >= N && red_total as u64 >= nginx_count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    pipeline.await.unwrap();

    assert_eq!(red_total as u64, nginx_count, "RED requests_total vs nginx");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for s in &streams {
        assert!(
            s.labels
                .iter()
                .any(|l| l.name == "filename" && Path::new(&l.value).starts_with(&logs_dir))
        );
        for e in &s.entries {
            let tid = e
                .fields
                .iter()
                .find(|l| l.name == "trace_id")
                .unwrap_or_else(|| panic!("no trace id in {:?}", e.line));
            *seen.entry(tid.value.clone()).or_default() += 1;
        }
    }
    let total: usize = seen.values().sum();
    assert_eq!(total, N, "lines shipped");
    for i in 0..N {
        assert_eq!(seen.get(&trace_id(i)), Some(&1), "request {i}");
    }
    // What the files hold is what was shipped.
    let on_disk: usize = ["access.log.2", "access.log.1", "access.log"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(logs_dir.join(f))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(on_disk, N);
    drop(nginx);
}

//! Real nginx (Debian's package: `apt-get install -y nginx`) with a custom `log_format` on a free
//! loopback port, driven by a bounded client while its access log is rotated twice
//! (`mv` + `nginx -s reopen`): the pipeline ships each line exactly once, and the RED counter sum
//! equals nginx's own request count (`stub_status`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use collector::MemorySink;
use collector::accesslog::{
    AccessLog, AccessLogConfig, AccessLogSource, MemoryLogsSink, ParserConfig,
};

const FORMAT: &str = r#"$remote_addr - [$time_local] $host "$request" $status $body_bytes_sent $request_time "$upstream_addr" $request_id "$http_traceparent""#;

fn nginx_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NGINX") {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/sbin/nginx"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .expect("nginx is not installed: `apt-get install -y nginx` (scripts/test does it)")
}

struct Nginx {
    child: Child,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(prefix: &Path) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for d in ["conf", "logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(d)).unwrap();
        }
        let p = prefix.display();
        let conf = format!(
            r#"worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    log_format sextant '{FORMAT}';
    access_log {p}/logs/access.log sextant;
    server {{
        listen 127.0.0.1:{port};
        server_name shop.test;
        location = /status {{ stub_status; access_log off; }}
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
        );
        std::fs::write(prefix.join("conf/nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(prefix)
            .args(["-c", "conf/nginx.conf", "-g", "daemon off;"])
            .spawn()
            .expect("starting nginx");
        let n = Nginx {
            child,
            prefix: prefix.to_owned(),
            port,
        };
        // Bounded wait until it answers.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not start: {}", n.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(nginx_bin())
            .arg("-p")
            .arg(&self.prefix)
            .args(["-c", "conf/nginx.conf", "-s", "stop"])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let nginx = Nginx::start(&dir.path().join("nginx"));
    let logs_dir = dir.path().join("nginx/logs");
    let log = logs_dir.join("access.log");

    let cfg = AccessLogConfig {
        sources: vec![AccessLogSource {
            name: "nginx".into(),
            include: vec![log.to_string_lossy().into_owned()],
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
    let prefix = nginx.prefix.clone();
    let logs_dir2 = logs_dir.clone();
    let client = tokio::task::spawn_blocking(move || {
        let http = reqwest::blocking::Client::new();
        for i in 0..N {
            if i == N / 3 || i == 2 * N / 3 {
                let n = if i == N / 3 { 1 } else { 2 };
                if n == 2 {
                    std::fs::rename(
                        logs_dir2.join("access.log.1"),
                        logs_dir2.join("access.log.2"),
                    )
                    .unwrap();
                }
                std::fs::rename(logs_dir2.join("access.log"), logs_dir2.join("access.log.1"))
                    .unwrap();
                let status = Command::new(nginx_bin())
                    .arg("-p")
                    .arg(&prefix)
                    .args(["-c", "conf/nginx.conf", "-s", "reopen"])
                    .status()
                    .unwrap();
                assert!(status.success());
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
        let status = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        // "Active connections: 1 \nserver accepts handled requests\n 5 5 3001 \n…": the status
        // request itself is counted and not logged.
        let counts = status.lines().nth(2).unwrap().to_owned();
        let requests: u64 = counts.split_whitespace().nth(2).unwrap().parse().unwrap();
        requests - 1
    });
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
                .any(|l| l.name == "filename" && Path::new(&l.value) == log)
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

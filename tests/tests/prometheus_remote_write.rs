//! A real Prometheus 2.42 scrapes itself and remote-writes into Sextant; then `promtool query
//! instant|range` against Sextant returns what it returns against Prometheus itself.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::Sextant;
use tests::peers::{Peer, peer_bin};

/// `promtool query …` with JSON output.
fn promtool(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(peer_bin("promtool").unwrap())
        .args(["query"])
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "promtool printed non-JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Results in a canonical order, values parsed, so two servers' answers compare with a
/// tolerance on floats.
fn canonical(v: &Value) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = v
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let labels = s["metric"].to_string();
            let points: Vec<&Value> = match (s.get("value"), s.get("values")) {
                (Some(p), _) => vec![p],
                (_, Some(Value::Array(ps))) => ps.iter().collect(),
                _ => vec![],
            };
            let points = points
                .iter()
                .map(|p| {
                    let t = p[0].as_f64().unwrap();
                    let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                    (t, v)
                })
                .collect();
            (labels, points)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn same(a: &[(String, Vec<(f64, f64)>)], b: &[(String, Vec<(f64, f64)>)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.0 == y.0
                && x.1.len() == y.1.len()
                && x.1.iter().zip(&y.1).all(|(p, q)| {
                    p.0 == q.0
                        && (p.1 == q.1
                            || (p.1.is_nan() && q.1.is_nan())
                            || ((p.1 - q.1).abs() <= 1e-9 * p.1.abs().max(q.1.abs())))
                })
        })
}

const QUERIES: &[&str] = &[
    "up",
    "prometheus_http_requests_total",
    // Handlers first requested during the test (the API calls) start counters inside windows.
    "rate(prometheus_http_requests_total{handler=~\"/metrics|/-/ready\"}[10s])",
    "sum by (job) (rate(prometheus_tsdb_head_samples_appended_total[10s]))",
    "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[15s])))",
    "count by (job) ({__name__=~\"prometheus_tsdb_.*\"})",
    "topk(2, go_goroutines or process_open_fds or go_memstats_alloc_bytes)",
    "max_over_time(scrape_duration_seconds[20s]) * 1000",
    "absent(no_such_metric)",
];

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The time of Prometheus's first scrape of itself (waiting for it).
fn first_scrape(query_url: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = reqwest::blocking::Client::new()
            .post(query_url)
            .form(&[("query", "up[5m]")])
            .send()
            .unwrap()
            .json()
            .unwrap();
        if let Some(t) = body["data"]["result"][0]["values"][0][0].as_f64() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn promtool_answers_the_same_from_sextant_and_from_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let sextant = Sextant::start(&dir.path().join("sextant"), &[]).unwrap();
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ["127.0.0.1:PORT"]
remote_write:
  - url: {}
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
"#,
        sextant.url("/api/v1/write")
    );
    // Prometheus scrapes itself: its port is known only once it has one, so it is reserved first.
    let port = tests::free_port().unwrap();
    let config = config.replace("PORT", &port.to_string());
    let prom = Peer::prometheus_on(&prom_dir, &config, port).unwrap();

    // Compare from 15 s after Prometheus's first scrape to 5 s before now (remote write is at most
    // ~1 s behind). No rate window then reaches the first scrape: near a counter's first sample
    // Prometheus 2.42 clamps the extrapolation to the counter's zero point before the 1.1×
    // threshold test, 3.x after it, and Sextant follows 3.x (see the PromQL engine).
    // Evaluation times fall half-way between scrapes: a sample exactly on a window's left edge
    // is inside it for 2.42 and outside for 3.x (left-open windows).
    let first = first_scrape(&prom.url("/api/v1/query"));
    let (start, end) = (first + 15.5, first + 30.5);
    let now = unix_now();
    if now < end + 5.0 {
        std::thread::sleep(Duration::from_secs_f64(end + 5.0 - now));
    }
    let t = format!("{end:.3}");
    let start = format!("{start:.3}");
    let (pu, su) = (prom.url(""), sextant.url(""));

    // Wait until Sextant has what Prometheus has at `t` (remote write may still be sending).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = canonical(&promtool(&["instant", "--time", &t, &pu, "up"]).unwrap());
        let b = promtool(&["instant", "--time", &t, &su, "up"]).map(|v| canonical(&v));
        if b.as_deref().map(|b| same(&a, b)).unwrap_or(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Sextant never caught up: {a:?} vs {b:?}; sextant log:\n{}",
            sextant.stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let mut differences = Vec::new();
    for q in QUERIES {
        let instant = ["instant", "--time", &t];
        let range = ["range", "--start", &start, "--end", &t, "--step", "1s"];
        for args in [&instant[..], &range[..]] {
            let with = |server: &str| {
                let mut a: Vec<&str> = args.to_vec();
                a.push(server);
                a.push(q);
                promtool(&a)
            };
            let expected = canonical(&with(&pu).unwrap());
            match with(&su) {
                Ok(got) if same(&expected, &canonical(&got)) => {}
                Ok(got) => differences.push(format!(
                    "{} {q}:\n  prometheus {expected:?}\n  sextant    {:?}",
                    args[0],
                    canonical(&got)
                )),
                Err(e) => differences.push(format!("{} {q}: sextant failed: {e}", args[0])),
            }
            if q.starts_with("up") {
                assert!(!expected.is_empty(), "Prometheus has no `up` at {t}");
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} queries differ:\n{}",
        differences.len(),
        QUERIES.len() * 2,
        differences.join("\n")
    );
}

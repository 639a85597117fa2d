//! Real nginx with a custom `log_format`, driven by a bounded client while its log is rotated
//! twice, tailed by `sextant run`: `sum(sextant_http_requests_total)` from Sextant's query API
//! equals nginx's own request count exactly, and the logs topic holds each line exactly once.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::Sextant;
use tests::nginx::Nginx;

const FORMAT: &str = r#"$remote_addr - [$time_local] $host "$request" $status $body_bytes_sent $request_time "$upstream_addr" $request_id "$http_traceparent""#;
const N: usize = 1500;

fn trace_id(i: usize) -> String {
    format!("{:032x}", (0x00ac_ce55_u128 << 64) | i as u128)
}

fn sum_requests(s: &Sextant) -> Option<u64> {
    let body: Value = reqwest::blocking::Client::new()
        .post(s.url("/api/v1/query"))
        .form(&[("query", "sum(sextant_http_requests_total{job=\"router\"})")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["status"], "success", "{body}");
    body["data"]["result"][0]["value"][1]
        .as_str()
        .map(|v| v.parse::<f64>().unwrap() as u64)
}

#[test]
fn nginx_requests_counted_exactly_and_lines_shipped_once() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&dir.path().join("nginx"), FORMAT).unwrap();
    let config = dir.path().join("sextant.yaml");
    std::fs::write(
        &config,
        format!(
            "collector:\n  access_log:\n    rotate_wait: 1s\n    sources:\n      - name: nginx\n        include: [\"{}*\"]\n        labels: {{job: router}}\n        parsers:\n          - nginx: '{FORMAT}'\n",
            nginx.access_log().display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = Sextant::start(&data, &["--config", config.to_str().unwrap()]).unwrap();

    let http = reqwest::blocking::Client::new();
    for i in 0..N {
        if i == N / 3 || i == 2 * N / 3 {
            nginx.rotate().unwrap();
        }
        let r = http
            .get(format!("http://127.0.0.1:{}/item/{i}", nginx.port))
            .header(
                "traceparent",
                format!("00-{}-00f067aa0ba902b7-01", trace_id(i)),
            )
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let handled = nginx.requests_handled().unwrap();
    assert_eq!(handled, N as u64);

    // Bounded wait: RED counters are flushed every second, then cross the bus into the tsdb.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut counted = None;
    while Instant::now() < deadline {
        counted = sum_requests(&s);
        if counted == Some(handled) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(counted, Some(handled), "sextant log:\n{}", s.stderr());

    // Stop Sextant, then read its logs topic as a consumer would.
    s.stop().unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for batch in tests::read_logs_topic(&data, "access-log-test").unwrap() {
        for stream in batch.streams {
            for e in stream.entries {
                let tid = e.fields.iter().find(|f| f.name == "trace_id").unwrap();
                *seen.entry(tid.value.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(seen.values().sum::<usize>(), N, "lines on the logs topic");
    for i in 0..N {
        assert_eq!(seen.get(&trace_id(i)), Some(&1), "request {i}");
    }
}

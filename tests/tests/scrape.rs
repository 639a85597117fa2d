//! `sextant run` with a scrape job: a target served by the test is scraped into the store, and
//! `/api/v1/targets` reports it as Prometheus does.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::Sextant;

const PAGE: &str = "# HELP jobs_done_total Jobs done.\n# TYPE jobs_done_total counter\njobs_done_total{queue=\"a\"} 42\njobs_done_total{queue=\"b\"} 7\n";

/// Serves `PAGE` to every request on a free port, from a background thread.
fn serve_metrics() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    port
}

fn get(s: &Sextant, path: &str, query: &[(&str, &str)]) -> Value {
    let body: Value = reqwest::blocking::Client::new()
        .get(s.url(path))
        .query(query)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["status"], "success", "{path}: {body}");
    body["data"].clone()
}

#[test]
fn a_scrape_job_fills_the_store_and_lists_its_target() {
    let port = serve_metrics();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sextant.yaml");
    std::fs::write(
        &config,
        format!(
            "tsdb:\n  scrape:\n    global:\n      scrape_interval: 1s\n      scrape_timeout: 500ms\n    scrape_configs:\n      - job_name: app\n        static_configs:\n          - targets: [\"127.0.0.1:{port}\"]\n            labels: {{team: storage}}\n"
        ),
    )
    .unwrap();
    let s = Sextant::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        let r = get(&s, "/api/v1/query", &[("query", "jobs_done_total")]);
        if r["result"].as_array().unwrap().len() == 2 {
            break r["result"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "nothing scraped: {r}\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let instance = format!("127.0.0.1:{port}");
    let a = &result[0];
    assert_eq!(a["metric"]["queue"], "a", "{result}");
    assert_eq!(a["metric"]["job"], "app");
    assert_eq!(a["metric"]["instance"], instance);
    assert_eq!(a["metric"]["team"], "storage");
    assert_eq!(a["value"][1], "42");
    let up = get(&s, "/api/v1/query", &[("query", "up{job=\"app\"}")]);
    assert_eq!(up["result"][0]["value"][1], "1", "{up}");
    let scraped = get(
        &s,
        "/api/v1/query",
        &[("query", "scrape_samples_scraped{job=\"app\"}")],
    );
    assert_eq!(scraped["result"][0]["value"][1], "2", "{scraped}");

    let targets = get(&s, "/api/v1/targets", &[("state", "active")]);
    let t = &targets["activeTargets"][0];
    assert_eq!(t["scrapePool"], "app", "{targets}");
    assert_eq!(t["scrapeUrl"], format!("http://{instance}/metrics"));
    assert_eq!(t["health"], "up");
    assert_eq!(t["labels"]["team"], "storage");
    assert_eq!(targets["droppedTargets"], Value::Array(vec![]));
}

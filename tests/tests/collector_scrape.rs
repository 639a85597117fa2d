//! `sextant run` with `collector.scrape`: a target served by the test is scraped by the
//! collector, shipped through the embedded bus's metrics topic and stored by the tsdb's
//! ingest consumer. The target serves a counter it increments, in OpenMetrics and the text
//! format in turn; once it stops, `up` goes to 0 and the series goes stale. `/api/v1/targets`
//! lists the collector's target beside the server's (`tsdb.scrape`). Over Kafka (a tansu broker
//! started by the test), a broker outage loses no scrape.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::{Sextant, Tansu};

/// A `/metrics` target on a free port: `/metrics` serves `jobs_total`, one more per request,
/// in OpenMetrics on odd requests and the text format on even ones; `/static` a fixed page.
/// Setting `stop` closes the port.
struct Target {
    port: u16,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Target {
    fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (served, stop) = (served.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => respond(conn, &served),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => {}
                    }
                }
                // The listener is dropped here: the port refuses connections.
            }
        });
        Target {
            port,
            served,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

fn respond(mut conn: std::net::TcpStream, served: &AtomicU64) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap_or(0);
    let request = String::from_utf8_lossy(&buf[..n]);
    let (content_type, body) = if request.starts_with("GET /static") {
        (
            "text/plain; version=0.0.4".to_string(),
            "server_side_total 5\n".to_string(),
        )
    } else {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        if n % 2 == 1 {
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8".to_string(),
                format!(
                    "# HELP jobs Jobs done.\n# TYPE jobs counter\njobs_total{{queue=\"a\"}} {n} # {{trace_id=\"t{n}\"}} 0.5\n# EOF\n"
                ),
            )
        } else {
            (
                "text/plain; version=0.0.4; charset=utf-8".to_string(),
                format!(
                    "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{{queue=\"a\"}} {n}\n"
                ),
            )
        }
    };
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
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

/// The result of an instant query.
fn query(s: &Sextant, q: &str) -> Vec<Value> {
    get(s, "/api/v1/query", &[("query", q)])["result"]
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `cond` for at most 30 s.
fn wait_for(s: &Sextant, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every stored value of the counter, oldest first.
fn counter_values(s: &Sextant) -> Vec<u64> {
    let window = get(
        s,
        "/api/v1/query",
        &[("query", "jobs_total{job=\"node\"}[1h]")],
    );
    window["result"][0]["values"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| v[1].as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// `collector.scrape` with one 1-second job `node` at `port`.
fn collector_scrape(port: u16) -> String {
    format!(
        "collector:
  scrape:
    global: {{scrape_interval: 1s, scrape_timeout: 500ms}}
    scrape_configs:
      - job_name: node
        static_configs:
          - targets: [\"127.0.0.1:{port}\"]
            labels: {{team: infra}}
"
    )
}

#[test]
fn collector_scrape_targets_reach_the_store_through_the_bus() {
    let mut target = Target::start();
    let port = target.port;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sextant.yaml");
    std::fs::write(
        &config,
        format!(
            "tsdb:
  scrape:
    global: {{scrape_interval: 1s, scrape_timeout: 500ms}}
    scrape_configs:
      - job_name: server
        metrics_path: /static
        static_configs: [{{targets: [\"127.0.0.1:{port}\"]}}]
{}",
            collector_scrape(port)
        ),
    )
    .unwrap();
    let s = Sextant::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let instance = format!("127.0.0.1:{port}");

    // Both formats served, and the counter's later values stored.
    wait_for(&s, "three scrapes of the counter stored", || {
        query(&s, "jobs_total{job=\"node\"}")
            .first()
            .is_some_and(|r| r["value"][1].as_str().unwrap().parse::<u64>().unwrap() >= 3)
    });
    let series = query(&s, "jobs_total");
    assert_eq!(series.len(), 1, "{series:?}");
    let m = &series[0]["metric"];
    assert_eq!(m["job"], "node", "{m}");
    assert_eq!(m["instance"], instance);
    assert_eq!(m["team"], "infra");
    assert_eq!(m["queue"], "a");
    // Every value from the first on: nothing scraped was lost on the way (the counter moves
    // once per scrape; none of the scrapes up to the latest is missing).
    let values = counter_values(&s);
    assert!(
        values.iter().any(|v| v % 2 == 1) && values.iter().any(|v| v % 2 == 0),
        "an OpenMetrics page and a text page stored: {values:?}"
    );
    assert!(target.served.load(Ordering::SeqCst) >= values[values.len() - 1]);
    let first = values[0];
    assert_eq!(
        values,
        (first..first + values.len() as u64).collect::<Vec<_>>(),
        "OpenMetrics and text pages alike"
    );
    let up = query(&s, "up{job=\"node\"}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    // The OpenMetrics pages' exemplars came through the bus too.
    assert_exemplars_came_through(&s);
    assert_eq!(up[0]["metric"]["instance"], instance);
    let scraped = query(&s, "scrape_samples_scraped{job=\"node\"}");
    assert_eq!(scraped[0]["value"][1], "1", "{scraped:?}");

    // /api/v1/targets: the collector's pool beside the server's.
    let targets = get(&s, "/api/v1/targets", &[("state", "active")]);
    let pools: Vec<(&str, &str)> = targets["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["scrapePool"].as_str().unwrap(),
                t["health"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(pools, [("node", "up"), ("server", "up")], "{targets}");
    let node = get(&s, "/api/v1/targets", &[("scrapePool", "node")]);
    assert_eq!(
        node["activeTargets"][0]["scrapeUrl"],
        format!("http://{instance}/metrics")
    );

    // The collector's own scrape metrics, told apart from the server's by `sink`.
    let own = reqwest::blocking::get(s.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        own.lines()
            .any(|l| l.starts_with("sextant_tsdb_scrape_scrapes_total{job=\"node\",sink=\"bus\"}")),
        "{own}"
    );

    // The target goes away: up = 0, and the counter is stale (absent from instant queries).
    target.stop();
    wait_for(&s, "up = 0", || {
        query(&s, "up{job=\"node\"}")
            .first()
            .is_some_and(|r| r["value"][1] == "0")
    });
    wait_for(&s, "jobs_total stale", || {
        query(&s, "jobs_total{job=\"node\"}").is_empty()
    });
    let t = get(&s, "/api/v1/targets", &[("scrapePool", "node")]);
    assert_eq!(t["activeTargets"][0]["health"], "down", "{t}");
}

#[test]
fn collector_scrape_over_kafka_loses_no_scrape_to_a_broker_outage() {
    let mut target = Target::start();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start(dir.path()).unwrap();
    let config = dir.path().join("sextant.yaml");
    std::fs::write(
        &config,
        format!(
            "bus:\n  kafka:\n    brokers: {}\n    topic_prefix: cs.\n    partitions: 3\n{}",
            broker.brokers(),
            collector_scrape(target.port)
        ),
    )
    .unwrap();
    let s = Sextant::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    wait_for(&s, "two scrapes through Kafka", || {
        counter_values(&s).len() >= 2
    });
    let up = query(&s, "up{job=\"node\"}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    // The OpenMetrics pages' exemplars came through the bus too.
    assert_exemplars_came_through(&s);

    // While the broker is down the producer holds the scrape and the loop waits for it; once
    // the broker is back, scraping goes on: no value of the counter is missing.
    broker.kill();
    let served = target.served.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(4));
    broker.restart().unwrap();
    wait_for(&s, "scrapes after the outage", || {
        counter_values(&s).last().is_some_and(|&v| v >= served + 3)
    });
    target.stop();
    let values = counter_values(&s);
    let first = values[0];
    assert_eq!(
        values,
        (first..first + values.len() as u64).collect::<Vec<_>>(),
        "a scrape was lost across the outage"
    );
}

/// The scraped OpenMetrics pages' one exemplar series (`jobs_total` of job `node`, trace ids
/// starting with `t`, value 0.5) is queryable through `/api/v1/query_exemplars`.
fn assert_exemplars_came_through(s: &Sextant) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (start, end) = ((now - 3600).to_string(), (now + 60).to_string());
    let ex = get(
        s,
        "/api/v1/query_exemplars",
        &[("query", "jobs_total"), ("start", &start), ("end", &end)],
    );
    let ex = ex.as_array().unwrap();
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(ex[0]["seriesLabels"]["job"], "node", "{ex:?}");
    let traces: Vec<&str> = ex[0]["exemplars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["labels"]["trace_id"].as_str().unwrap())
        .collect();
    assert!(
        !traces.is_empty() && traces.iter().all(|t| t.starts_with('t')),
        "{ex:?}"
    );
    assert_eq!(ex[0]["exemplars"][0]["value"], "0.5");
}

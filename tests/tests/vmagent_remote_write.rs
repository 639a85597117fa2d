//! vmagent (Debian's VictoriaMetrics package) scrapes Sextant's own /metrics and remote-writes it
//! into Sextant for one tenant: the series arrive, with their values, in that tenant only.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::Sextant;
use tests::peers::peer_bin;

/// Kills the child when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(s: &Sextant, tenant: Option<&str>, q: &str) -> Value {
    let mut req = reqwest::blocking::Client::new()
        .post(s.url("/api/v1/query"))
        .form(&[("query", q)]);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let body: Value = req.send().unwrap().json().unwrap();
    assert_eq!(body["status"], "success", "{q}: {body}");
    body["data"]["result"].clone()
}

#[test]
fn vmagent_remote_writes_into_one_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sextant::start(&dir.path().join("data"), &[]).unwrap();
    let config = dir.path().join("scrape.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sextant\n    static_configs:\n      - targets: [\"{}\"]\n",
            s.addr
        ),
    )
    .unwrap();
    let port = tests::free_port().unwrap();
    let log = std::fs::File::create(dir.path().join("vmagent.log")).unwrap();
    let _vmagent = Killed(
        Command::new(peer_bin("vmagent").unwrap())
            .arg(format!("-promscrape.config={}", config.display()))
            .arg(format!("-remoteWrite.url={}", s.url("/api/v1/write")))
            .arg("-remoteWrite.headers=X-Scope-OrgID: team-a")
            .arg("-remoteWrite.flushInterval=200ms")
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("vmagent-data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // vmagent adds `up` and scrape_* series for each scrape; wait for a few scrapes to land.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = query(
            &s,
            Some("team-a"),
            "count_over_time(up{job=\"sextant\"}[1m])",
        );
        if n[0]["value"][1]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().unwrap() >= 3.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vmagent's samples never arrived: {n}; vmagent log:\n{}",
            std::fs::read_to_string(dir.path().join("vmagent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let up = query(&s, Some("team-a"), "up{job=\"sextant\"}");
    assert_eq!(up[0]["value"][1], "1", "{up}");
    assert_eq!(up[0]["metric"]["instance"], s.addr.to_string(), "{up}");
    // Sextant's own metrics came through with their labels.
    let ready = query(
        &s,
        Some("team-a"),
        "sextant_api_requests_total{handler=\"/metrics\", code=\"200\"}",
    );
    assert!(
        ready[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 1.0,
        "{ready}"
    );
    // Another tenant and the default tenant see none of it.
    assert_eq!(query(&s, Some("team-b"), "up"), Value::Array(vec![]));
    assert_eq!(query(&s, None, "up{job=\"sextant\"}"), Value::Array(vec![]));
}

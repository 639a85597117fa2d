//! kill -9 during sustained remote_write, ten times: every sample acknowledged to a sender is
//! queryable after each restart, with its value.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus::proto::{Label, Sample, TimeSeries};
use tests::{Sextant, remote_write};

const WRITERS: usize = 3;
const SERIES_PER_REQUEST: usize = 20;
const CYCLES: usize = 10;

fn series(writer: usize, k: usize, t: i64, v: f64) -> TimeSeries {
    let l = |n: &str, v: String| Label {
        name: n.into(),
        value: v,
    };
    TimeSeries {
        labels: vec![
            l("__name__", "crash_probe".into()),
            l("series", k.to_string()),
            l("writer", writer.to_string()),
        ],
        samples: vec![Sample {
            value: v,
            timestamp: t,
        }],
        exemplars: Vec::new(),
    }
}

/// Sends requests of `writer` with step numbers from `next` on until `stop`; returns the steps
/// that were acknowledged (2xx).
fn write_until(url: &str, writer: usize, base: i64, mut next: u64, stop: &AtomicBool) -> Vec<u64> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = base + next as i64 * 10;
        let body = remote_write::encode(
            (0..SERIES_PER_REQUEST)
                .map(|k| series(writer, k, t, next as f64))
                .collect(),
        )
        .unwrap();
        match remote_write::post(&client, url, body) {
            Ok(()) => acked.push(next),
            // The process is gone: nothing more will be acknowledged.
            Err(_) => break,
        }
        next += 1;
    }
    acked
}

/// Every sample of `crash_probe` at or before `t_ms`, by (writer, series).
fn stored(s: &Sextant, t_ms: i64) -> BTreeMap<(String, String), BTreeMap<i64, f64>> {
    let resp: serde_json::Value = reqwest::blocking::Client::new()
        .post(s.url("/api/v1/query"))
        .form(&[
            ("query", "crash_probe[1d]".to_string()),
            ("time", format!("{:.3}", t_ms as f64 / 1000.0)),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["status"], "success", "{resp}");
    let mut out = BTreeMap::new();
    for r in resp["data"]["result"].as_array().unwrap() {
        let key = (
            r["metric"]["writer"].as_str().unwrap().to_string(),
            r["metric"]["series"].as_str().unwrap().to_string(),
        );
        let points: &mut BTreeMap<i64, f64> = out.entry(key).or_default();
        for p in r["values"].as_array().unwrap() {
            let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
            points.insert(t, p[1].as_str().unwrap().parse().unwrap());
        }
    }
    out
}

#[test]
fn every_acknowledged_sample_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Steps are 10 ms apart from an hour ago: far from any retention or out-of-order edge.
    let base = now - 3_600_000;
    let mut acked: Vec<Vec<u64>> = vec![Vec::new(); WRITERS];
    let mut next = [0u64; WRITERS];
    for cycle in 0..CYCLES {
        let mut s = Sextant::start(&data, &[]).unwrap();
        let url = s.url("/api/v1/write");
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (url, stop, from) = (url.clone(), stop.clone(), next[w]);
                std::thread::spawn(move || write_until(&url, w, base, from, &stop))
            })
            .collect();
        // Kill at a different moment of each cycle.
        std::thread::sleep(Duration::from_millis(300 + 170 * cycle as u64));
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for (w, h) in handles.into_iter().enumerate() {
            let got = h.join().unwrap();
            assert!(
                cycle > 0 || !got.is_empty(),
                "writer {w} got no acknowledgement"
            );
            if let Some(&last) = got.last() {
                next[w] = last + 2; // skip the step that may have been half-sent
            }
            acked[w].extend(got);
        }

        let s = Sextant::start(&data, &[]).unwrap();
        let last_step = *next.iter().max().unwrap();
        let have = stored(&s, base + last_step as i64 * 10);
        for (w, steps) in acked.iter().enumerate() {
            for k in 0..SERIES_PER_REQUEST {
                let points = have
                    .get(&(w.to_string(), k.to_string()))
                    .unwrap_or_else(|| panic!("cycle {cycle}: series writer={w} series={k} lost"));
                for &step in steps {
                    let t = base + step as i64 * 10;
                    assert_eq!(
                        points.get(&t),
                        Some(&(step as f64)),
                        "cycle {cycle}: acknowledged sample writer={w} series={k} step={step} lost or wrong"
                    );
                }
            }
        }
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(
        total > 100,
        "only {total} acknowledged requests over {CYCLES} cycles"
    );
}

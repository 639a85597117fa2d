//! Throughput figures of the ingest decoding paths (no storage). Ignored by default; run with
//! `cargo test -p tsdb --release throughput -- --ignored --nocapture`. They print, never assert
//! timings.

/// CPU time of this thread in seconds (`/proc/thread-self/schedstat`), so that other load on
/// the machine does not skew the figures.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

use super::*;
use crate::exposition::{self, Format};

fn workload(series_n: usize) -> Vec<TimeSeries> {
    (0..series_n)
        .map(|i| {
            let pod = format!("pod-{:05}", i / 20);
            let metric = format!("container_metric_{}_total", i % 20);
            series(
                &[
                    ("__name__", metric.as_str()),
                    ("cluster", "prod-eu-1"),
                    ("container", "app"),
                    ("image", "registry.local/team/app:1.42.0"),
                    ("instance", "10.0.3.17:9100"),
                    ("job", "cadvisor"),
                    ("namespace", "payments"),
                    ("node", "node-017"),
                    ("pod", pod.as_str()),
                ],
                &[(1_700_000_000_000 + i as i64, (i * 1000) as f64)],
            )
        })
        .collect()
}

#[test]
#[ignore]
fn throughput_of_remote_write_decoding_and_text_parsing() {
    let state = state_with(ApiConfig::default());
    let body = WriteRequest {
        timeseries: workload(2_000),
        metadata: vec![],
    }
    .encode_to_vec();
    let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    let rounds = 200;
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let started = cpu_secs();
    for _ in 0..rounds {
        let r = WriteRequest::decode(&raw[..]).unwrap();
        assert_eq!(r.timeseries.len(), 2000);
    }
    println!(
        "prost WriteRequest decode alone: {:.0} series per CPU-second",
        2000.0 * rounds as f64 / (cpu_secs() - started)
    );
    let started = cpu_secs();
    for _ in 0..rounds {
        let r = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert!(!r.is_empty());
    }
    println!(
        "snappy only: {:.0} requests per CPU-second ({} B raw)",
        rounds as f64 / (cpu_secs() - started),
        raw.len()
    );
    let started = cpu_secs();
    let mut n = 0;
    for _ in 0..rounds {
        let batch = crate::api::write::decode(&state, &body, false)
            .unwrap()
            .batch;
        n += batch.len();
    }
    let secs = cpu_secs() - started;
    println!(
        "remote_write decode: {:.0} samples per CPU-second ({} B/request of 2000 samples)",
        n as f64 / secs,
        body.len()
    );

    let mut text = String::new();
    for ts in workload(2_000) {
        let labels: Vec<String> = ts.labels[1..]
            .iter()
            .map(|l| {
                format!(
                    "{}=\"{}\"",
                    std::str::from_utf8(&l.name).unwrap(),
                    std::str::from_utf8(&l.value).unwrap()
                )
            })
            .collect();
        text.push_str(&format!(
            "{}{{{}}} {}\n",
            std::str::from_utf8(&ts.labels[0].value).unwrap(),
            labels.join(","),
            ts.samples[0].value
        ));
    }
    let started = cpu_secs();
    let mut n = 0;
    for _ in 0..rounds {
        n += exposition::parse(&text, Format::Prometheus)
            .unwrap()
            .samples
            .len();
    }
    let secs = cpu_secs() - started;
    println!(
        "text parse: {:.0} samples per CPU-second, {:.0} MB per CPU-second",
        n as f64 / secs,
        (text.len() * rounds) as f64 / secs / 1e6
    );
}

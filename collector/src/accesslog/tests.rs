//! The pipeline over real files: lines to streams, RED counts, checkpoint and restart.

use std::io::Write;
use std::time::Duration;

use super::*;

const FORMAT: &str = r#"$remote_addr - [$time_local] $host "$request" $status $body_bytes_sent $request_time "$upstream_addr" $request_id "$http_traceparent""#;

fn config(dir: &Path) -> AccessLogConfig {
    AccessLogConfig {
        sources: vec![AccessLogSource {
            name: "edge".into(),
            include: vec![dir.join("logs/*.log").to_string_lossy().into_owned()],
            parsers: vec![
                ParserConfig::Nginx(FORMAT.into()),
                ParserConfig::Json,
                ParserConfig::Nginx("combined".into()),
            ],
            labels: [("node".to_owned(), "n1".to_owned())].into(),
            ..Default::default()
        }],
        checkpoint_file: "cp/access.json".into(),
        ..Default::default()
    }
}

fn line(i: usize, host: &str, status: u16, t: f64) -> String {
    format!(
        r#"10.0.0.1 - [10/Oct/2026:13:55:36 +0000] {host} "GET /item/{i} HTTP/1.1" {status} {i} {t:.3} "10.1.0.1:80" rid{i} "00-4bf92f3577b34da6a3ce929d0e0e{i:04x}-00f067aa0ba902b7-01""#
    )
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn lines_of(batch: &Batch) -> Vec<String> {
    let mut all: Vec<(i64, String)> = batch
        .streams
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| (e.timestamp_ns, e.line.clone())))
        .collect();
    all.sort();
    all.into_iter().map(|(_, l)| l).collect()
}

fn sample(batch: &Batch, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    batch.metrics.iter().flat_map(|g| &g.series).find_map(|s| {
        let has = |n: &str, v: &str| s.labels.iter().any(|l| l.name == n && l.value == v);
        (has("__name__", name) && want.iter().all(|(n, v)| has(n, v))).then(|| s.samples[0].value)
    })
}

#[test]
fn lines_become_streams_with_fields_and_red_counts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/access.log");
    let mut lines: Vec<String> = (0..20).map(|i| line(i, "a.example", 200, 0.004)).collect();
    lines.extend((20..23).map(|i| line(i, "a.example", 502, 0.7)));
    lines.push(line(23, "b.example", 404, 0.02));
    lines.push("garbage that no parser matches".into());
    lines.push(
        r#"{"host":"c.example","request":"POST /j HTTP/1.1","status":201,"request_time":"0.1"}"#
            .into(),
    );
    lines.push(
        r#"10.0.0.2 - - [10/Oct/2026:13:55:36 +0000] "HEAD / HTTP/1.0" 200 0 "-" "probe""#.into(),
    );
    append(&log, &lines);

    let mut al = AccessLog::open(&config(dir.path()), dir.path(), at(0)).unwrap();
    let b = al.poll(0, at(0));
    // Nothing flushed in the second the pipeline started in.
    assert!(b.metrics.is_empty());
    assert_eq!(b.lines, 27);
    assert_eq!(b.malformed, 1);
    assert_eq!(lines_of(&b), lines);

    let a = b
        .streams
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "host" && l.value == "a.example")
        })
        .unwrap();
    let names: Vec<&str> = a.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["filename", "host", "job", "node"]);
    assert_eq!(a.labels[0].value, log.to_string_lossy());
    assert_eq!(a.labels[2].value, "access-log");
    let e = &a.entries[3];
    let field = |n: &str| {
        e.fields
            .iter()
            .find(|l| l.name == n)
            .map(|l| l.value.as_str())
    };
    assert_eq!(field("trace_id"), Some("4bf92f3577b34da6a3ce929d0e0e0003"));
    assert_eq!(field("request_id"), Some("rid3"));
    assert_eq!(field("uri"), Some("/item/3"));
    assert_eq!(field("status"), Some("200"));
    assert_eq!(field("upstream"), Some("10.1.0.1:80"));
    assert_eq!(field("request_time"), Some("0.004"));
    // Timestamps in a stream strictly increase.
    assert!(
        a.entries
            .windows(2)
            .all(|w| w[0].timestamp_ns < w[1].timestamp_ns)
    );
    // The malformed line is shipped without fields in the file's stream.
    let bad = b
        .streams
        .iter()
        .find(|s| !s.labels.iter().any(|l| l.name == "host"))
        .unwrap();
    assert_eq!(bad.entries[0].line, "garbage that no parser matches");
    assert!(bad.entries[0].fields.is_empty());
    al.commit(&b).unwrap();

    let b = al.poll(1000, at(1));
    assert_eq!(b.lines, 0);
    let ok = [
        ("host", "a.example"),
        ("status_class", "2xx"),
        ("method", "GET"),
    ];
    assert_eq!(sample(&b, red::REQUESTS, &ok), Some(20.0));
    assert_eq!(
        sample(&b, red::BYTES, &ok),
        Some((0..20).sum::<usize>() as f64)
    );
    let err = [("host", "a.example"), ("status_class", "5xx")];
    assert_eq!(sample(&b, red::REQUESTS, &err), Some(3.0));
    let bucket = "sextant_http_request_duration_seconds_bucket";
    assert_eq!(
        sample(&b, bucket, &[err[0], err[1], ("le", "0.5")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&b, bucket, &[err[0], err[1], ("le", "1.0")]),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &b,
            red::REQUESTS,
            &[("host", "b.example"), ("status_class", "4xx")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &b,
            red::REQUESTS,
            &[("host", "c.example"), ("method", "POST")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&b, red::REQUESTS, &[("host", ""), ("method", "HEAD")]),
        Some(1.0)
    );
    let total: f64 = b
        .metrics
        .iter()
        .flat_map(|g| &g.series)
        .filter(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == red::REQUESTS)
        })
        .map(|s| s.samples[0].value)
        .sum();
    assert_eq!(total, 26.0);
    for s in b.metrics.iter().flat_map(|g| &g.series) {
        assert_eq!(s.samples[0].timestamp, (1_800_000_001) * 1000);
        assert!(s.labels.iter().any(|l| l.name == "node" && l.value == "n1"));
    }
    // One flush per second.
    assert!(al.poll(1500, at(1)).metrics.is_empty());
}

/// Ships in steps, "crashes" without committing one batch, restarts from the checkpoint twice:
/// every line arrives, the committed ones once, and the counters equal the number of lines.
#[test]
fn restart_resumes_exactly_and_counters_continue() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/access.log");
    let cfg = config(dir.path());
    let mut shipped: Vec<String> = Vec::new();
    let all: Vec<String> = (0..40).map(|i| line(i, "a.example", 200, 0.001)).collect();

    append(&log, &all[..10]);
    let mut al = AccessLog::open(&cfg, dir.path(), at(0)).unwrap();
    let b = al.poll(0, at(0));
    shipped.extend(lines_of(&b));
    al.commit(&b).unwrap();

    // Read but never acknowledged: lost by the crash, read again after it.
    append(&log, &all[10..15]);
    let b = al.poll(1000, at(1));
    assert_eq!(b.lines, 5);
    drop(al);

    append(&log, &all[15..20]);
    std::fs::rename(&log, dir.path().join("logs/access.log.1")).unwrap();
    append(&log, &all[20..30]);
    let mut al = AccessLog::open(&cfg, dir.path(), at(2)).unwrap();
    let b = al.poll(2000, at(2));
    shipped.extend(lines_of(&b));
    al.commit(&b).unwrap();
    let b = al.poll(3000, at(3));
    assert_eq!(
        sample(&b, red::REQUESTS, &[("host", "a.example")]),
        Some(30.0)
    );
    al.commit(&b).unwrap();
    drop(al);

    append(&log, &all[30..]);
    let mut al = AccessLog::open(&cfg, dir.path(), at(4)).unwrap();
    let b = al.poll(0, at(5));
    shipped.extend(lines_of(&b));
    assert_eq!(
        sample(&b, red::REQUESTS, &[("host", "a.example")]),
        Some(40.0)
    );
    al.commit(&b).unwrap();
    assert_eq!(shipped, all);
}

#[test]
fn a_corrupt_checkpoint_is_an_error_not_a_silent_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cp")).unwrap();
    std::fs::write(dir.path().join("cp/access.json"), b"{not json").unwrap();
    let e = AccessLog::open(&config(dir.path()), dir.path(), at(0)).unwrap_err();
    assert!(e.to_string().contains("access.json"), "{e}");
}

#[tokio::test]
async fn run_ships_and_checkpoints_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/access.log");
    let all: Vec<String> = (0..5).map(|i| line(i, "a.example", 200, 0.001)).collect();
    append(&log, &all);
    let al = AccessLog::open(&config(dir.path()), dir.path(), SystemTime::now()).unwrap();
    let logs = Arc::new(MemoryLogsSink::new());
    let samples = Arc::new(crate::MemorySink::new());
    logs.fail_next(1);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(al.run(logs.clone(), samples.clone(), async {
        let _ = rx.await;
    }));
    // Wait (bounded) for the lines and a RED flush to arrive.
    let mut got = Vec::new();
    for _ in 0..100 {
        got.extend(logs.take());
        let n: usize = got.iter().map(|s| s.entries.len()).sum();
        if n == 5 && !samples.take().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tx.send(());
    task.await.unwrap();
    assert_eq!(got.iter().map(|s| s.entries.len()).sum::<usize>(), 5);
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cp/access.json")).unwrap()).unwrap();
    let offset = cp["sources"]["edge"]["files"][0]["offset"]
        .as_u64()
        .unwrap();
    assert_eq!(offset, std::fs::metadata(&log).unwrap().len());
}

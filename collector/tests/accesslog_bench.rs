//! Access-log throughput: lines parsed per CPU-second for nginx's `combined` format.
//!
//! Run with `cargo test -p collector --release --test accesslog_bench -- --ignored --nocapture`.
//! Two figures: the parser alone (format match, request fields, RED counting), and the whole
//! pipeline from a file (tail, split, parse, RED, log entries with their fields). CPU time is
//! this thread's, from `/proc/thread-self/schedstat`, so other load on the machine does not count.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, SystemTime};

use collector::accesslog::format::LogFormat;
use collector::accesslog::parse::{Access, Parser};
use collector::accesslog::red::{DEFAULT_BUCKETS, Red};
use collector::accesslog::{AccessLog, AccessLogConfig, AccessLogSource, ParserConfig};

fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

fn lines(n: usize) -> Vec<String> {
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "curl/8.5.0",
        "kube-probe/1.30",
    ];
    let methods = ["GET", "GET", "GET", "POST", "PUT"];
    let statuses = [200, 200, 200, 201, 304, 404, 500];
    (0..n)
        .map(|i| {
            format!(
                r#"10.{}.{}.{} - - [10/Oct/2026:13:{:02}:{:02} +0000] "{} /api/v1/items/{}?page={} HTTP/1.1" {} {} "https://shop.example.com/cart" "{}""#,
                i % 7,
                i % 251,
                i % 13,
                i / 60 % 60,
                i % 60,
                methods[i % methods.len()],
                i % 1000,
                i % 9,
                statuses[i % statuses.len()],
                100 + i % 5000,
                agents[i % agents.len()],
            )
        })
        .collect()
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn combined_lines_per_cpu_second() {
    let n = 500_000;
    let input = lines(n);
    let parser = Parser::Nginx(LogFormat::compile("combined").unwrap());
    let mut red = Red::new(DEFAULT_BUCKETS.to_vec(), true, 10_000);

    let cpu = thread_cpu_ns();
    let mut parsed = 0;
    for l in &input {
        let mut f = Vec::new();
        if parser.parse(l, &mut f) {
            let a = Access::from_fields(&f, "service");
            red.observe(&a);
            parsed += 1;
        }
    }
    let parse_ns = thread_cpu_ns() - cpu;
    assert_eq!(parsed, n);

    // The whole pipeline from a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for l in &input {
        writeln!(f, "{l}").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let cfg = AccessLogConfig {
        sources: vec![AccessLogSource {
            include: vec![path.to_string_lossy().into_owned()],
            parsers: vec![ParserConfig::Nginx("combined".into())],
            ..Default::default()
        }],
        ..Default::default()
    };
    let now = SystemTime::now();
    let mut al = AccessLog::open(&cfg, dir.path(), now).unwrap();
    let cpu = thread_cpu_ns();
    let mut total = 0;
    for i in 0..1000 {
        let b = al.poll(i, now + Duration::from_secs(i));
        total += b.lines;
        assert_eq!(b.malformed, 0);
        if !b.more && b.lines == 0 {
            break;
        }
    }
    let pipeline_ns = thread_cpu_ns() - cpu;
    assert_eq!(total, n as u64);

    let per_s = |ns: u64| n as f64 / (ns as f64 / 1e9);
    println!(
        "combined format: parse+fields+RED {:.0} lines/CPU-s ({:.0} ns/line); tail+parse+RED+log entries {:.0} lines/CPU-s ({:.0} ns/line), {} lines of ~{} bytes",
        per_s(parse_ns),
        parse_ns as f64 / n as f64,
        per_s(pipeline_ns),
        pipeline_ns as f64 / n as f64,
        n,
        input.iter().map(String::len).sum::<usize>() / n,
    );
}

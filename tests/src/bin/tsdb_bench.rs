//! The tsdb benchmark: the same remote-write stream sent to Sextant, Prometheus 2.42 and
//! VictoriaMetrics 1.79, one at a time in one run, then the same range queries against each.
//! Prints, per peer, ingest throughput per CPU-second, memory, disk per sample and query latency,
//! with ratios against Sextant.
//!
//! `cargo build --release --bin sextant && cargo run --release -p tests --bin tsdb-bench`
//! (Prometheus and VictoriaMetrics from Debian: `apt-get install prometheus victoria-metrics`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tests::peers::{Peer, PeerKind};
use tests::procstat::{cpu_seconds, dir_size, status_bytes};
use tests::workload::{Workload, WorkloadConfig};
use tests::{Sextant, remote_write};

#[derive(Parser, Debug)]
#[command(
    about = "Ingest, memory, disk and query figures of Sextant beside Prometheus and VictoriaMetrics"
)]
struct Args {
    /// Container slots (12 cAdvisor series each; one service of 68 RED series per 10).
    #[arg(long, default_value_t = 500)]
    containers: usize,
    /// Hours of data (Prometheus cuts its first 2 h block once the head spans 3 h).
    #[arg(long, default_value_t = 4.0)]
    hours: f64,
    /// Sample interval in seconds.
    #[arg(long, default_value_t = 15)]
    interval: i64,
    /// Fraction of containers replaced per hour.
    #[arg(long, default_value_t = 0.1)]
    churn: f64,
    /// Concurrent remote-write senders.
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// Samples per remote-write request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Runs of each query.
    #[arg(long, default_value_t = 20)]
    query_runs: usize,
    /// Peers to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sextant,prometheus,victoriametrics"
    )]
    peers: Vec<String>,
    /// Where peers keep their data (a fresh temporary directory by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Only run the queries, against the data an earlier run left in `--work-dir` (each peer
    /// restarts on its kept data directory; no workload is generated or sent).
    #[arg(long, requires = "work_dir")]
    queries_only: bool,
}

/// The file under the work directory that keeps the workload's end for `--queries-only`.
const END_FILE: &str = "workload-end-ms";

/// The range queries of a dashboard over the last hour.
const QUERIES: &[&str] = &[
    "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
    "rate(sextant_http_requests_total[1m])",
    "histogram_quantile(0.99, sum by (le, service) (rate(sextant_http_request_duration_seconds_bucket[5m])))",
    "sum by (pod) (container_memory_working_set_bytes{namespace=\"ns-1\"})",
    "topk(10, sum by (pod) (rate(container_network_receive_bytes_total[5m])))",
    "sum(rate(sextant_http_requests_total{status=~\"5..\"}[5m])) / sum(rate(sextant_http_requests_total[5m]))",
];

/// What one peer measured.
#[derive(Debug)]
struct Figures {
    name: &'static str,
    ingest_wall: Duration,
    ingest_cpu: f64,
    peak_rss: u64,
    rss_after: u64,
    disk_bytes: u64,
    queries: Vec<QueryFigures>,
}

/// One query's figures over its runs.
#[derive(Debug)]
struct QueryFigures {
    p50: Duration,
    p99: Duration,
    /// The server's CPU time (user + system) per run.
    cpu: Duration,
    /// Result series.
    series: usize,
}

/// A system under test.
enum Target {
    Sextant(Sextant, PathBuf),
    Peer(Peer),
}

impl Target {
    fn start(name: &str, dir: &Path) -> Result<Target> {
        std::fs::create_dir_all(dir)?;
        Ok(match name {
            "sextant" => {
                let data = dir.join("data");
                Target::Sextant(Sextant::start(&data, &[])?, data)
            }
            "prometheus" => {
                Target::Peer(Peer::prometheus(dir, "global:\n  scrape_interval: 15s\n")?)
            }
            "victoriametrics" => Target::Peer(Peer::victoria_metrics(dir)?),
            other => bail!("unknown peer {other:?} (sextant, prometheus, victoriametrics)"),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Sextant(..) => "Sextant",
            Target::Peer(p) => p.kind.name(),
        }
    }

    fn url(&self, path: &str) -> String {
        match self {
            Target::Sextant(s, _) => s.url(path),
            Target::Peer(p) => p.url(path),
        }
    }

    fn pid(&self) -> Result<u32> {
        match self {
            Target::Sextant(s, _) => Ok(s.child.id()),
            Target::Peer(p) => p.pid().context("peer not running"),
        }
    }

    fn data_dir(&self) -> PathBuf {
        match self {
            Target::Sextant(_, d) => d.clone(),
            Target::Peer(p) => p.data_dir.clone(),
        }
    }

    /// Makes what was sent searchable (VictoriaMetrics buffers recent rows in memory).
    fn flush(&self) -> Result<()> {
        if let Target::Peer(p) = self
            && p.kind == PeerKind::VictoriaMetrics
        {
            reqwest::blocking::get(self.url("/internal/force_flush"))?.error_for_status()?;
        }
        Ok(())
    }

    /// Lets the peer persist and compact what it was sent, as it would on its own.
    fn settle(&self) -> Result<()> {
        match self {
            Target::Peer(p) if p.kind == PeerKind::VictoriaMetrics => {
                reqwest::blocking::get(self.url("/internal/force_merge"))?.error_for_status()?;
                // The merge runs in the background: wait until the data stops changing.
                let mut last = 0;
                for _ in 0..120 {
                    std::thread::sleep(Duration::from_secs(1));
                    let now = dir_size(&p.data_dir)?;
                    if now == last {
                        break;
                    }
                    last = now;
                }
            }
            Target::Peer(p) => {
                // Prometheus compacts its head into a 2 h block once it spans 3 h; its compactor
                // checks every minute.
                for _ in 0..150 {
                    if has_block(&p.data_dir)? {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Target::Sextant(_, dir) => {
                // Sextant cuts its head into a 2 h block once it spans 3 h; its maintenance
                // thread checks every minute, as Prometheus's compactor.
                let blocks = dir.join("tsdb/default/blocks");
                for _ in 0..150 {
                    if has_block(&blocks)? {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        Ok(())
    }

    /// Stops with SIGTERM so that the peer writes what it keeps on a clean shutdown.
    fn stop(self) -> Result<()> {
        match self {
            Target::Sextant(mut s, _) => {
                tests::signal(&s.child, libc::SIGTERM)?;
                tests::wait_timeout(&mut s.child, Duration::from_secs(120))?;
            }
            Target::Peer(mut p) => p.stop(Duration::from_secs(120))?,
        }
        Ok(())
    }
}

fn has_block(dir: &Path) -> Result<bool> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(false);
    };
    for e in entries {
        if e?.path().join("meta.json").exists() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn send_all(target: &Target, workload: &Workload) -> Result<Duration> {
    let url = target.url("/api/v1/write");
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = workload
            .shards
            .iter()
            .map(|shard| {
                let url = url.clone();
                scope.spawn(move || -> Result<()> {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(120))
                        .build()?;
                    for body in shard {
                        remote_write::post(&client, &url, body.clone())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        }
        Ok(())
    })?;
    Ok(started.elapsed())
}

fn run_queries(target: &Target, end_ms: i64, runs: usize) -> Result<Vec<QueryFigures>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let pid = target.pid()?;
    let end = end_ms as f64 / 1000.0;
    let start = end - 3600.0;
    let mut out = Vec::new();
    for q in QUERIES {
        let mut times = Vec::with_capacity(runs);
        let mut series = 0;
        let cpu0 = cpu_seconds(pid)?;
        for _ in 0..runs {
            let t = Instant::now();
            let resp = client
                .post(target.url("/api/v1/query_range"))
                .form(&[
                    ("query", q.to_string()),
                    ("start", format!("{start}")),
                    ("end", format!("{end}")),
                    ("step", "60".to_string()),
                ])
                .send()?;
            let status = resp.status();
            // The server's latency: until the whole answer is in, not the client's JSON parse.
            let bytes = resp.bytes()?;
            times.push(t.elapsed());
            let body: serde_json::Value = serde_json::from_slice(&bytes)?;
            if !status.is_success() {
                bail!("{} answered {status} to {q}: {body}", target.name());
            }
            series = body["data"]["result"].as_array().map_or(0, Vec::len);
        }
        let cpu = (cpu_seconds(pid)? - cpu0) / runs.max(1) as f64;
        times.sort();
        let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        out.push(QueryFigures {
            p50: p(0.5),
            p99: p(0.99),
            cpu: Duration::from_secs_f64(cpu.max(0.0)),
            series,
        });
    }
    Ok(out)
}

fn bench(name: &str, dir: &Path, w: &Workload, args: &Args) -> Result<Figures> {
    let target = Target::start(name, dir)?;
    let pid = target.pid()?;
    let cpu0 = cpu_seconds(pid)?;
    let ingest_wall =
        send_all(&target, w).with_context(|| format!("remote-writing to {}", target.name()))?;
    let ingest_cpu = cpu_seconds(pid)? - cpu0;
    let rss_after = status_bytes(pid, "VmRSS")?;
    target.flush()?;
    let queries = run_queries(&target, w.end_ms, args.query_runs)?;
    target.settle()?;
    let peak_rss = status_bytes(pid, "VmHWM")?;
    let name = target.name();
    let data = target.data_dir();
    target.stop()?;
    Ok(Figures {
        name,
        ingest_wall,
        ingest_cpu,
        peak_rss,
        rss_after,
        disk_bytes: dir_size(&data)?,
        queries,
    })
}

/// `--queries-only`: each peer restarted on the data an earlier run kept, then the queries.
fn queries_only(root: &Path, args: &Args) -> Result<()> {
    let end_file = root.join(END_FILE);
    let end_ms: i64 = std::fs::read_to_string(&end_file)
        .with_context(|| {
            format!(
                "reading {} (run once without --queries-only)",
                end_file.display()
            )
        })?
        .trim()
        .parse()?;
    let mut first: Option<Figures> = None;
    for name in &args.peers {
        let dir = root.join(name);
        if !dir.exists() {
            bail!("{} holds no data of {name}", root.display());
        }
        let target = Target::start(name, &dir)?;
        let queries = run_queries(&target, end_ms, args.query_runs)?;
        let f = Figures {
            name: target.name(),
            ingest_wall: Duration::ZERO,
            ingest_cpu: 0.0,
            peak_rss: 0,
            rss_after: 0,
            disk_bytes: 0,
            queries,
        };
        target.stop()?;
        println!("{}:", f.name);
        print_queries(&f, first.as_ref());
        if first.is_none() {
            first = Some(f);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.queries_only {
        let root = args
            .work_dir
            .clone()
            .context("--queries-only needs --work-dir")?;
        return queries_only(&root, &args);
    }
    if args.peers.iter().any(|p| p == "sextant") {
        // Fail before the minutes of generation when the binary is missing.
        tests::workspace_bin("sextant")?;
    }
    let end_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // Whole intervals, a minute back, so that every peer sees the same finished hour.
    let end_ms = (end_ms - 60_000) / (args.interval * 1000) * (args.interval * 1000);
    let cfg = WorkloadConfig {
        containers: args.containers,
        hours: args.hours,
        interval_ms: args.interval * 1000,
        churn_per_hour: args.churn,
        end_ms,
        shards: args.shards,
        batch: args.batch,
        seed: 42,
    };
    let t = Instant::now();
    let w = Workload::generate(&cfg)?;
    println!(
        "workload: {} samples, {} series ({} active), {:.1} h at {} s, {} requests of ≤{} samples ({:.1} MB snappy), generated in {:.1?}",
        w.samples,
        w.series_total,
        w.series_active,
        args.hours,
        args.interval,
        w.shards.iter().map(Vec::len).sum::<usize>(),
        args.batch,
        w.encoded_bytes as f64 / 1e6,
        t.elapsed()
    );
    let tmp;
    let root = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join(END_FILE), w.end_ms.to_string())?;
    let mut figures: Vec<Figures> = Vec::new();
    for name in &args.peers {
        let f = bench(name, &root.join(name), &w, &args)?;
        print_figures(&f, &w, figures.first());
        figures.push(f);
    }
    print_table(&figures, &w);
    Ok(())
}

fn print_figures(f: &Figures, w: &Workload, first: Option<&Figures>) {
    println!(
        "{}: ingest {:.0} samples/s wall, {:.0} samples per CPU-second ({:.1} CPU-s), peak RSS {:.1} MB, {:.0} B RSS per active series, disk {:.2} B/sample",
        f.name,
        w.samples as f64 / f.ingest_wall.as_secs_f64(),
        w.samples as f64 / f.ingest_cpu,
        f.ingest_cpu,
        f.peak_rss as f64 / 1e6,
        f.rss_after as f64 / w.series_active as f64,
        f.disk_bytes as f64 / w.samples as f64,
    );
    print_queries(f, first);
}

/// One line per query; a warning where the first peer's answer had another number of series.
fn print_queries(f: &Figures, first: Option<&Figures>) {
    for (i, (q, r)) in QUERIES.iter().zip(&f.queries).enumerate() {
        println!(
            "  {:>8.2} ms p50 {:>8.2} ms p99 {:>8.2} ms CPU {:>5} series  {q}",
            ms(r.p50),
            ms(r.p99),
            ms(r.cpu),
            r.series
        );
        if let Some(a) = first.and_then(|first| first.queries.get(i).map(|a| (first.name, a)))
            && a.1.series != r.series
        {
            println!(
                "  warning: {} returned {} series, {} {}: {q}",
                f.name, r.series, a.0, a.1.series
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How a table row reads its figure.
type Figure<'a> = Box<dyn Fn(&Figures) -> f64 + 'a>;

/// The markdown table for docs/benchmarks.md: one column per peer, ratios Sextant / peer.
fn print_table(figures: &[Figures], w: &Workload) {
    let Some(sx) = figures.iter().find(|f| f.name == "Sextant") else {
        return;
    };
    let rows: Vec<(&str, Figure)> = vec![
        (
            "samples per CPU-second",
            Box::new(|f: &Figures| w.samples as f64 / f.ingest_cpu),
        ),
        (
            "peak RSS (MB)",
            Box::new(|f: &Figures| f.peak_rss as f64 / 1e6),
        ),
        (
            "RSS per active series (B)",
            Box::new(|f: &Figures| f.rss_after as f64 / w.series_active as f64),
        ),
        (
            "disk per sample (B)",
            Box::new(|f: &Figures| f.disk_bytes as f64 / w.samples as f64),
        ),
    ];
    print!("\n| figure |");
    for f in figures {
        print!(" {} |", f.name);
    }
    for f in figures.iter().filter(|f| f.name != "Sextant") {
        print!(" Sextant / {} |", f.name);
    }
    println!();
    println!("|{}", "---|".repeat(1 + 2 * figures.len() - 1));
    let row = |label: &str, val: &dyn Fn(&Figures) -> f64| {
        print!("| {label} |");
        for f in figures {
            print!(" {:.2} |", val(f));
        }
        for f in figures.iter().filter(|f| f.name != "Sextant") {
            print!(" {:.2}× |", val(sx) / val(f));
        }
        println!();
    };
    for (label, val) in &rows {
        row(label, val.as_ref());
    }
    for (i, q) in QUERIES.iter().enumerate() {
        row(
            &format!("p50 ms `{q}`"),
            &|f: &Figures| ms(f.queries[i].p50),
        );
        row(
            &format!("p99 ms `{q}`"),
            &|f: &Figures| ms(f.queries[i].p99),
        );
        row(&format!("CPU ms per run `{q}`"), &|f: &Figures| {
            ms(f.queries[i].cpu)
        });
    }
}

//! The differential PromQL checker: one generated data set remote-written (the same requests)
//! to Sextant and to Prometheus 2.42 from Debian, then a corpus of queries run against both as
//! instant queries at several times and as a range query, answers compared.
//!
//! `cargo build --release --bin sextant && cargo run --release -p tests --bin promql-diff`
//! (`--filter SUBSTR`, `-v`). Prints each difference and, last,
//! `promql-diff: N matched, M differed, K known`. Exits 0 whatever the differences (it is a
//! report), non-zero on setup errors.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::Value;
use tests::peers::Peer;
use tests::promql_diff::compare::{self, Answer};
use tests::promql_diff::{Query, data, known_reason, parse_corpus, substitute};
use tests::{Sextant, remote_write};

#[derive(Parser, Debug)]
#[command(about = "Runs a PromQL corpus against Sextant and Prometheus 2.42, compares answers")]
struct Args {
    /// Only queries containing this text.
    #[arg(long)]
    filter: Option<String>,
    /// Print every query with its outcome.
    #[arg(short = 'v')]
    verbose: bool,
    /// The corpus (default: tests/promql_diff/queries.txt).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Queries of Prometheus 3.x only, run against Sextant alone (default:
    /// tests/promql_diff/queries_3x_only.txt).
    #[arg(long)]
    queries_3x: Option<PathBuf>,
    /// Characters of each answer printed with a difference.
    #[arg(long, default_value_t = 400)]
    trim: usize,
}

const CORPUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/promql_diff");

/// Instant-query times, seconds after the data's start: whole seconds off the 15 s grid and off
/// whole minutes (subquery steps), one after the data's end within the lookback delta, one
/// beyond it.
const INSTANT_OFFSETS: &[i64] = &[313, 1213, 2233, 3613, 3913];
/// The range queries: start, end (seconds after the data's start) and step. Every evaluation
/// time is 13 s past a multiple of 15 s, so never on a subquery step (15 s, 30 s, 1 m, 2 m…).
const RANGES: &[(i64, i64, i64)] = &[(613, 4213, 120), (13, 1813, 30)];

/// Where an evaluation ran.
#[derive(Clone, Copy, Debug)]
enum Eval {
    Instant(i64),
    Range((i64, i64, i64)),
}

impl std::fmt::Display for Eval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Eval::Instant(o) => write!(f, "instant at $T+{o}"),
            Eval::Range((start, end, step)) => {
                write!(f, "range $T+{start}..$T+{end} step {step}s")
            }
        }
    }
}

struct Target {
    name: &'static str,
    base: String,
}

fn ask(
    client: &reqwest::blocking::Client,
    t: &Target,
    q: &str,
    eval: Eval,
    t0: i64,
) -> Result<(Answer, Value)> {
    let (path, form) = match eval {
        Eval::Instant(o) => (
            "/api/v1/query",
            vec![("query", q.to_string()), ("time", (t0 + o).to_string())],
        ),
        Eval::Range((start, end, step)) => (
            "/api/v1/query_range",
            vec![
                ("query", q.to_string()),
                ("start", (t0 + start).to_string()),
                ("end", (t0 + end).to_string()),
                ("step", step.to_string()),
            ],
        ),
    };
    let resp = client
        .post(format!("{}{path}", t.base))
        .form(&form)
        .send()
        .with_context(|| format!("asking {} {q:?}", t.name))?;
    let status = resp.status();
    let text = resp.text()?;
    let body: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => {
            let a = Answer::Error {
                error_type: format!("http {status}"),
                error: text.clone(),
            };
            return Ok((a, Value::String(text)));
        }
    };
    let answer = compare::parse(&body).map_err(|e| {
        anyhow::anyhow!(
            "{} answered {q:?} with an unreadable body ({e}): {text}",
            t.name
        )
    })?;
    Ok((answer, body))
}

fn trimmed(v: &Value, n: usize) -> String {
    let s = v.to_string();
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn load(path: Option<&PathBuf>, default: &str, filter: Option<&str>) -> Result<Vec<Query>> {
    let path = path
        .cloned()
        .unwrap_or_else(|| PathBuf::from(CORPUS_DIR).join(default));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_corpus(&text)
        .into_iter()
        .filter(|q| filter.is_none_or(|f| q.text.contains(f)))
        .collect())
}

/// Waits until `target` holds all `series` sent (`/api/v1/series` over the data's hour).
fn wait_loaded(
    client: &reqwest::blocking::Client,
    t: &Target,
    t0: i64,
    series: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let body: Value = client
            .post(format!("{}/api/v1/series", t.base))
            .form(&[
                ("match[]", "{__name__=~\".+\"}".to_string()),
                ("start", (t0 - 60).to_string()),
                ("end", (t0 + 3700).to_string()),
            ])
            .send()
            .with_context(|| format!("asking {} for its series", t.name))?
            .json()?;
        if body["data"].as_array().is_some_and(|a| a.len() == series) {
            return Ok(());
        }
        last = body.to_string();
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{} does not hold the {series} series sent: {last}", t.name)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let corpus = load(args.queries.as_ref(), "queries.txt", args.filter.as_deref())?;
    let only_3x = load(
        args.queries_3x.as_ref(),
        "queries_3x_only.txt",
        args.filter.as_deref(),
    )?;
    tests::workspace_bin("sextant")?;

    // Whole minutes, far enough back that the last query times are in the past.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let t0 = (now - 2 * 3600) / 60 * 60;
    let series = data::generate(t0 * 1000);
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    let n_series = series.len();
    let body = remote_write::encode(series)?;

    let dir = tempfile::tempdir()?;
    let sx_dir = dir.path().join("sextant");
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir)?;
    // Experimental functions on, as Prometheus 3.x with `promql-experimental-functions`, for the
    // 3.x-only queries; they change nothing else.
    let sx_config = dir.path().join("sextant.yaml");
    std::fs::write(
        &sx_config,
        "tsdb:\n  api:\n    experimental_functions: true\n",
    )?;
    let sx_config = sx_config.to_string_lossy().into_owned();
    let sextant = Sextant::start(&sx_dir, &["--config", &sx_config])?;
    let prom = Peer::prometheus(&prom_dir, "global:\n  scrape_interval: 15s\n")?;
    let prom_t = Target {
        name: "Prometheus",
        base: prom.url(""),
    };
    let sx_t = Target {
        name: "Sextant",
        base: sextant.url(""),
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    // One request, the same bytes to both: Prometheus's head accepts a fresh series' whole hour
    // in one append.
    for t in [&prom_t, &sx_t] {
        remote_write::post(&client, &format!("{}/api/v1/write", t.base), body.clone())
            .with_context(|| format!("remote-writing to {}", t.name))?;
    }
    for t in [&prom_t, &sx_t] {
        wait_loaded(&client, t, t0, n_series)?;
    }
    println!(
        "data: {n_series} series, {samples} samples from $T={t0} (+7 ms, every 15 s, 1 h); {} queries, {} 3.x-only",
        corpus.len(),
        only_3x.len()
    );

    let evals: Vec<Eval> = INSTANT_OFFSETS
        .iter()
        .map(|&o| Eval::Instant(o))
        .chain(RANGES.iter().map(|&r| Eval::Range(r)))
        .collect();
    let (mut matched, mut differed, mut known) = (0usize, 0usize, 0usize);
    let mut known_matched = Vec::new();
    for q in &corpus {
        let text = substitute(&q.text, t0);
        let ordered = compare::is_ordered(&text);
        let mut diffs = Vec::new();
        for &e in &evals {
            let (want, want_body) = ask(&client, &prom_t, &text, e, t0)?;
            let (got, got_body) = ask(&client, &sx_t, &text, e, t0)?;
            let ordered = ordered && matches!(e, Eval::Instant(_));
            if let Err(why) = compare::compare(&want, &got, ordered) {
                diffs.push((e, why, want_body, got_body));
            }
        }
        let reason = known_reason(&q.text);
        if diffs.is_empty() {
            matched += 1;
            if reason.is_some() {
                known_matched.push(q.text.clone());
            }
            if args.verbose {
                println!("ok    [{}] {}", q.topic, q.text);
            }
            continue;
        }
        if let Some(r) = reason {
            known += 1;
            if args.verbose {
                println!("known [{}] {} — {r}", q.topic, q.text);
            }
            continue;
        }
        differed += 1;
        println!("DIFF  [{}] line {}: {}", q.topic, q.line, q.text);
        for (e, why, want, got) in diffs.iter().take(if args.verbose { usize::MAX } else { 2 }) {
            println!("  {e}: {why}");
            println!("    prometheus: {}", trimmed(want, args.trim));
            println!("    sextant:    {}", trimmed(got, args.trim));
        }
        if !args.verbose && diffs.len() > 2 {
            println!("  … and {} more evaluations", diffs.len() - 2);
        }
    }
    for q in &known_matched {
        println!("note: KNOWN query matched after all: {q}");
    }

    // Prometheus 3.x only: Sextant alone must answer without an error.
    let (mut ok3, mut err3) = (0usize, 0usize);
    for q in &only_3x {
        let text = substitute(&q.text, t0);
        let mut failed = None;
        for &e in &evals {
            let (got, body) = ask(&client, &sx_t, &text, e, t0)?;
            if matches!(got, Answer::Error { .. }) {
                failed = Some((e, body));
                break;
            }
        }
        match failed {
            None => {
                ok3 += 1;
                if args.verbose {
                    println!("ok    [3.x-only] {}", q.text);
                }
            }
            Some((e, body)) => {
                err3 += 1;
                println!(
                    "FAIL  [3.x-only] {}: {e}: {}",
                    q.text,
                    trimmed(&body, args.trim)
                );
            }
        }
    }
    println!("3.x-only (Sextant alone): {ok3} answered, {err3} errored");
    drop(prom);
    drop(sextant);
    println!("promql-diff: {matched} matched, {differed} differed, {known} known");
    Ok(())
}

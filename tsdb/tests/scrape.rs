//! The scrape loop against a real HTTP server: a `/metrics` page served on 127.0.0.1, scraped
//! into a `MemTenants` store; checks target labels, `up`, staleness when a series disappears,
//! when the target fails and when it is removed. Waits by polling the store (bounded), never
//! by fixed sleeps.

// Helpers of tests may unwrap: a panic there is a failed assertion.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tsdb::scrape::{Health, ScrapeSection, Scraper};
use tsdb::storage::MemTenants;
use tsdb::storage::{MatchOp, Matcher, Sample, Tenants, is_stale_nan};

#[derive(Default)]
struct Page {
    body: String,
    status: u16,
    /// Headers of the last request.
    seen: Option<HeaderMap>,
}

async fn metrics(
    axum::extract::State(page): axum::extract::State<Arc<Mutex<Page>>>,
    headers: HeaderMap,
) -> Response {
    let (body, status) = {
        let mut p = page.lock().unwrap();
        p.seen = Some(headers.clone());
        (p.body.clone(), p.status)
    };
    if status != 200 {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .is_some_and(|v| v.to_str().unwrap().contains("gzip"));
    let ct = "text/plain; version=0.0.4; charset=utf-8";
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        (
            [
                (header::CONTENT_TYPE, ct),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            gz,
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, ct)], body).into_response()
    }
}

fn samples(tenants: &MemTenants, name: &str) -> Vec<(String, Sample)> {
    let store = tenants.tenant(tsdb::DEFAULT_TENANT).unwrap();
    let m = Matcher::new(MatchOp::Equal, "__name__", name).unwrap();
    store
        .select(&[m], 0, i64::MAX)
        .unwrap()
        .into_iter()
        .flat_map(|s| {
            let l = s.labels.to_string();
            s.samples.into_iter().map(move |p| (l.clone(), p))
        })
        .collect()
}

/// Polls `cond` until it holds, for at most 20 s.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn last(v: &[(String, Sample)], series: &str) -> Option<f64> {
    v.iter().rev().find(|(l, _)| l == series).map(|(_, s)| s.v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_a_page_with_staleness() {
    let page = Arc::new(Mutex::new(Page {
        body: "# TYPE a counter\na_total 1\nb{x=\"1\"} 2\n".to_string(),
        status: 200,
        seen: None,
    }));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(page.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 200ms, scrape_timeout: 150ms}}
scrape_configs:
- job_name: app
  static_configs: [{{targets: ['{addr}'], labels: {{env: test}}}}]
  metric_relabel_configs: [{{source_labels: [x], regex: '9', action: drop}}]"
    ))
    .unwrap();
    let tenants = Arc::new(MemTenants::new());
    let scraper = Scraper::new(tenants.clone()).unwrap();
    scraper.apply(&section, "tsdb").unwrap();

    let inst = format!("instance=\"{addr}\"");
    let up = format!("up{{env=\"test\", {inst}, job=\"app\"}}");
    let a = format!("a_total{{env=\"test\", {inst}, job=\"app\"}}");
    let b = format!("b{{env=\"test\", {inst}, job=\"app\", x=\"1\"}}");

    wait_for("up = 1", || {
        last(&samples(&tenants, "up"), &up) == Some(1.0)
    })
    .await;
    assert_eq!(last(&samples(&tenants, "a_total"), &a), Some(1.0));
    assert_eq!(last(&samples(&tenants, "b"), &b), Some(2.0));
    let dur = samples(&tenants, "scrape_duration_seconds");
    assert!(!dur.is_empty());

    // Prometheus's request headers
    {
        let p = page.lock().unwrap();
        let h = p.seen.as_ref().unwrap();
        assert!(
            h[header::ACCEPT]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text;version=1.0.0")
        );
        assert_eq!(h["x-prometheus-scrape-timeout-seconds"], "0.15");
        assert_eq!(h[header::ACCEPT_ENCODING], "gzip");
    }
    let targets = scraper.targets();
    assert_eq!(targets.active_targets.len(), 1);
    let t = &targets.active_targets[0];
    assert_eq!(t.scrape_url, format!("http://{addr}/metrics"));
    assert_eq!(t.health, Health::Up);
    assert_eq!(t.labels.get("env"), Some("test"));
    assert_eq!(t.scrape_interval, "200ms");

    // `b` disappears (x=9 is dropped by metric relabeling): it gets a staleness marker
    page.lock().unwrap().body = "a_total 2\nb{x=\"9\"} 3\n".to_string();
    wait_for("b stale", || {
        samples(&tenants, "b")
            .iter()
            .any(|(l, s)| l == &b && is_stale_nan(s.v))
    })
    .await;
    wait_for("a = 2", || {
        last(&samples(&tenants, "a_total"), &a) == Some(2.0)
    })
    .await;
    assert!(
        samples(&tenants, "b").iter().all(|(l, _)| l == &b),
        "x=9 was dropped"
    );

    // the target fails: up = 0 and `a` goes stale
    page.lock().unwrap().status = 500;
    wait_for("up = 0", || {
        last(&samples(&tenants, "up"), &up) == Some(0.0)
    })
    .await;
    wait_for("a stale", || {
        last(&samples(&tenants, "a_total"), &a).is_some_and(is_stale_nan)
    })
    .await;
    let t = scraper.targets().active_targets[0].clone();
    assert_eq!(t.health, Health::Down);
    assert_eq!(
        t.last_error,
        "server returned HTTP status 500 Internal Server Error"
    );

    // back up, then the target is removed: its series, report series included, go stale
    page.lock().unwrap().status = 200;
    wait_for("up = 1 again", || {
        last(&samples(&tenants, "up"), &up) == Some(1.0)
    })
    .await;
    scraper.apply(&ScrapeSection::default(), "tsdb").unwrap();
    assert!(scraper.targets().active_targets.is_empty());
    wait_for("up stale after removal", || {
        last(&samples(&tenants, "up"), &up).is_some_and(is_stale_nan)
    })
    .await;
    assert!(last(&samples(&tenants, "a_total"), &a).is_some_and(is_stale_nan));
    scraper.shutdown().await;
}

#[tokio::test]
async fn unreachable_target_is_down() {
    // a port nothing listens on: bind, learn the port, close
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 100ms, scrape_timeout: 100ms}}
scrape_configs: [{{job_name: gone, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]"
    ))
    .unwrap();
    let tenants = Arc::new(MemTenants::new());
    let scraper = Scraper::new(tenants.clone()).unwrap();
    scraper.apply(&section, "tsdb").unwrap();
    let up = format!("up{{instance=\"127.0.0.1:{port}\", job=\"gone\"}}");
    wait_for("up = 0", || {
        last(&samples(&tenants, "up"), &up) == Some(0.0)
    })
    .await;
    let t = scraper.targets().active_targets[0].clone();
    assert_eq!(t.health, Health::Down);
    assert!(
        t.last_error.starts_with("Get \"http://127.0.0.1:"),
        "{}",
        t.last_error
    );
    scraper.shutdown().await;

    // a bad configuration names the key
    let bad: ScrapeSection =
        serde_yaml_ng::from_str("scrape_configs: [{job_name: x, scheme: ftp}]").unwrap();
    let e = scraper.apply(&bad, "tsdb").unwrap_err();
    assert!(
        e.to_string().starts_with("tsdb.scrape_configs[0].scheme:"),
        "{e}"
    );
}

#[tokio::test]
async fn openmetrics_params_honor_labels_and_timestamps() {
    let seen_query = Arc::new(Mutex::new(String::new()));
    let q = seen_query.clone();
    let app = Router::new().route(
        "/probe",
        get(move |uri: axum::http::Uri| async move {
            *q.lock().unwrap() = uri.query().unwrap_or("").to_string();
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                "# TYPE probe gauge\nprobe{job=\"inner\"} 7 1700000000.5\n# EOF\n",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 100ms, scrape_timeout: 100ms}}
scrape_configs:
- job_name: blackbox
  metrics_path: /probe
  honor_labels: true
  params: {{module: [http_2xx]}}
  static_configs: [{{targets: ['{addr}']}}]
  relabel_configs: [{{target_label: __param_target, replacement: 'example.org'}}]"
    ))
    .unwrap();
    let tenants = Arc::new(MemTenants::new());
    let scraper = Scraper::new(tenants.clone()).unwrap();
    scraper.apply(&section, "tsdb").unwrap();
    let series = format!("probe{{instance=\"{addr}\", job=\"inner\"}}");
    wait_for("probe", || !samples(&tenants, "probe").is_empty()).await;
    let got = samples(&tenants, "probe");
    assert_eq!(got[0].0, series);
    assert_eq!(
        got[0].1,
        Sample {
            t: 1_700_000_000_500,
            v: 7.0
        }
    );
    assert_eq!(
        *seen_query.lock().unwrap(),
        "module=http_2xx&target=example.org"
    );
    // report series keep the target's job
    let up = format!("up{{instance=\"{addr}\", job=\"blackbox\"}}");
    wait_for("up", || last(&samples(&tenants, "up"), &up) == Some(1.0)).await;
    scraper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_exemplars_and_metadata_are_stored() {
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                "# TYPE rpc_seconds histogram\n\
                 # HELP rpc_seconds RPC latency.\n\
                 # UNIT rpc_seconds seconds\n\
                 rpc_seconds_bucket{le=\"0.1\"} 3 # {trace_id=\"abc\"} 0.05 1700000000.25\n\
                 rpc_seconds_bucket{le=\"+Inf\"} 4 # {trace_id=\"def\"} 2.5\n\
                 rpc_seconds_count 4\n\
                 rpc_seconds_sum 2.6\n\
                 # EOF\n",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 100ms, scrape_timeout: 100ms}}
scrape_configs:
- job_name: rpc
  static_configs: [{{targets: ['{addr}']}}]"
    ))
    .unwrap();
    let tenants = Arc::new(MemTenants::new());
    let scraper = Scraper::new(tenants.clone()).unwrap();
    scraper.apply(&section, "tsdb").unwrap();
    let store = tenants.tenant(tsdb::DEFAULT_TENANT).unwrap();
    let sets = vec![vec![
        Matcher::new(MatchOp::Equal, "__name__", "rpc_seconds_bucket").unwrap(),
    ]];
    let found = || store.select_exemplars(&sets, i64::MIN, i64::MAX).unwrap();
    wait_for("exemplars", || found().len() == 2).await;
    // Several scrapes of the same page: the exemplar with a timestamp is stored once, the one
    // without (stamped with its scrape's time) is a duplicate of itself each time.
    let up = format!("up{{instance=\"{addr}\", job=\"rpc\"}}");
    wait_for("three scrapes", || {
        samples(&tenants, "up")
            .iter()
            .filter(|(l, _)| *l == up)
            .count()
            >= 3
    })
    .await;
    let got = found();
    assert_eq!(
        got[0].labels.to_string(),
        format!("rpc_seconds_bucket{{instance=\"{addr}\", job=\"rpc\", le=\"+Inf\"}}")
    );
    assert_eq!(got[0].exemplars.len(), 1);
    let untimed = &got[0].exemplars[0];
    assert_eq!((untimed.value, untimed.has_ts), (2.5, false));
    assert_eq!(untimed.labels.get("trace_id"), Some("def"));
    assert_eq!(got[1].exemplars.len(), 1);
    assert_eq!(got[1].exemplars[0].t, 1_700_000_000_250);
    let md = store.metadata(Some("rpc_seconds"), -1, -1).unwrap();
    assert_eq!(md["rpc_seconds"].len(), 1);
    assert_eq!(md["rpc_seconds"][0].kind, "histogram");
    assert_eq!(md["rpc_seconds"][0].help, "RPC latency.");
    assert_eq!(md["rpc_seconds"][0].unit, "seconds");
    scraper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_series_fresh() {
    let page = Arc::new(Mutex::new(Page {
        body: "a 1\nb 2\n".to_string(),
        status: 200,
        seen: None,
    }));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(page.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = |extra: &str| -> ScrapeSection {
        serde_yaml_ng::from_str(&format!(
            "global: {{scrape_interval: 100ms, scrape_timeout: 100ms}}
scrape_configs:
- job_name: app
  static_configs: [{{targets: ['{addr}']}}]
{extra}"
        ))
        .unwrap()
    };
    let tenants = Arc::new(MemTenants::new());
    let scraper = Scraper::new(tenants.clone()).unwrap();
    scraper.apply(&config(""), "tsdb").unwrap();
    let inst = format!("instance=\"{addr}\", job=\"app\"");
    let (up, a, b) = (
        format!("up{{{inst}}}"),
        format!("a{{{inst}}}"),
        format!("b{{{inst}}}"),
    );
    wait_for("b", || last(&samples(&tenants, "b"), &b) == Some(2.0)).await;

    // the job changes: the loop restarts with its memory, so the newly dropped `b` goes stale
    let drop_b = "  metric_relabel_configs: [{source_labels: [__name__], regex: b, action: drop}]";
    scraper.apply(&config(drop_b), "tsdb").unwrap();
    wait_for("b stale", || {
        last(&samples(&tenants, "b"), &b).is_some_and(is_stale_nan)
    })
    .await;

    // removed and re-added before its markers are due: no markers
    scraper.apply(&ScrapeSection::default(), "tsdb").unwrap();
    scraper.apply(&config(drop_b), "tsdb").unwrap();
    let scrapes = samples(&tenants, "up").len();
    wait_for("more scrapes", || {
        samples(&tenants, "up").len() >= scrapes + 6
    })
    .await;
    let count_stale = |name: &str, series: &str| {
        samples(&tenants, name)
            .iter()
            .filter(|(l, s)| l == series && is_stale_nan(s.v))
            .count()
    };
    assert_eq!(count_stale("up", &up), 0);
    // `a` goes stale only where a scrape failed (a timeout on a loaded machine), never from
    // the removal
    let down: Vec<i64> = samples(&tenants, "up")
        .iter()
        .filter(|(l, s)| l == &up && s.v == 0.0)
        .map(|(_, s)| s.t)
        .collect();
    let a_stale: Vec<i64> = samples(&tenants, "a")
        .iter()
        .filter(|(l, s)| l == &a && is_stale_nan(s.v))
        .map(|(_, s)| s.t)
        .collect();
    assert!(
        a_stale.iter().all(|t| down.contains(t)),
        "{a_stale:?} vs {down:?}"
    );
    assert_eq!(scraper.targets().active_targets.len(), 1);
    scraper.shutdown().await;
}

/// A producer over the embedded bus that refuses its first `fail` sends.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn bus::Producer>,
    fail: Mutex<usize>,
    refused: Mutex<usize>,
}

#[async_trait::async_trait]
impl bus::Producer for Flaky {
    async fn send(&self, topic: bus::Topic, records: Vec<bus::Record>) -> bus::Result<()> {
        {
            let mut fail = self.fail.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                *self.refused.lock().unwrap() += 1;
                return Err(bus::Error::Closed);
            }
        }
        self.inner.send(topic, records).await
    }
    async fn flush(&self) -> bus::Result<()> {
        self.inner.flush().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_scraper_ships_through_the_metrics_topic_and_retries_a_refusing_bus() {
    use bus::Bus as _;
    let page = Arc::new(Mutex::new(Page {
        body: "# TYPE jobs counter\njobs_total 1\n".to_string(),
        status: 200,
        seen: None,
    }));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(page.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let bus = bus::embedded::EmbeddedBus::open(dir.path(), Default::default()).unwrap();
    let flaky = Arc::new(Flaky {
        inner: bus.producer().unwrap(),
        fail: Mutex::new(3),
        refused: Mutex::new(0),
    });
    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 200ms, scrape_timeout: 150ms}}
tenant: agent
scrape_configs: [{{job_name: app, static_configs: [{{targets: ['{addr}']}}]}}]"
    ))
    .unwrap();
    let scraper = Scraper::to_bus(flaky.clone()).unwrap();
    scraper.apply(&section, "collector.scrape").unwrap();

    // The tsdb side: the ingest consumer stores what the bus carries.
    let tenants = Arc::new(MemTenants::new());
    let consumer = bus
        .consumer(tsdb::ingest::GROUP, &[bus::Topic::Metrics])
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ingest = tokio::spawn(tsdb::ingest::run(
        consumer,
        tenants.clone() as Arc<dyn Tenants>,
        stopped,
    ));
    let in_agent = |name: &str| {
        let store = tenants.tenant("agent").unwrap();
        let m = Matcher::new(MatchOp::Equal, "__name__", name).unwrap();
        store
            .select(&[m], 0, i64::MAX)
            .unwrap()
            .into_iter()
            .flat_map(|s| {
                let l = s.labels.to_string();
                s.samples.into_iter().map(move |p| (l.clone(), p))
            })
            .collect::<Vec<_>>()
    };
    let up = format!("up{{instance=\"{addr}\", job=\"app\"}}");
    let jobs = format!("jobs_total{{instance=\"{addr}\", job=\"app\"}}");
    // The first scrape (jobs = 1) is refused, then the page changes.
    wait_for("a refused send", || *flaky.refused.lock().unwrap() > 0).await;
    page.lock().unwrap().body = "jobs_total 2\n".to_string();
    wait_for("jobs = 2 through the bus", || {
        last(&in_agent("jobs_total"), &jobs) == Some(2.0)
    })
    .await;
    assert_eq!(last(&in_agent("up"), &up), Some(1.0));
    assert_eq!(
        *flaky.refused.lock().unwrap(),
        3,
        "the first sends were refused"
    );
    // The first scrape (jobs = 1) was retried, not dropped: it comes before the later ones.
    let first = in_agent("jobs_total");
    assert_eq!(first[0].1.v, 1.0, "{first:?}");
    assert!(first.windows(2).all(|w| w[0].1.t < w[1].1.t));
    // Nothing went to the default tenant.
    assert!(samples(&tenants, "up").is_empty());
    assert_eq!(scraper.targets().active_targets[0].health, Health::Up);

    scraper.shutdown().await;
    stop.send(true).unwrap();
    ingest.await.unwrap();
}

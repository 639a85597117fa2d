//! The HTTP port: operations endpoints and the API metrics layer. Components mount their own
//! routers here as they arrive; this module owns only `/-/healthy`, `/-/ready` and `/metrics`.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Encoder, HistogramVec, IntCounterVec, TextEncoder, register_histogram_vec,
    register_int_counter_vec,
};

static API_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sextant_api_requests_total",
        "HTTP requests served by Sextant's own port, by route and status code.",
        &["handler", "code"]
    )
    .unwrap_or_else(|e| panic!("registering sextant_api_requests_total: {e}"))
});

static API_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sextant_api_request_duration_seconds",
        "Time to serve HTTP requests on Sextant's own port, by route.",
        &["handler"]
    )
    .unwrap_or_else(|e| panic!("registering sextant_api_request_duration_seconds: {e}"))
});

/// Whether the process is ready to serve: false while starting and while shutting down.
#[derive(Clone, Debug, Default)]
pub(crate) struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub(crate) fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The operations endpoints plus the components' routers (`apis`), with the API metrics layer
/// over everything.
pub(crate) fn router(readiness: Readiness, apis: Router) -> Router {
    Router::new()
        .route("/-/healthy", get(healthy).head(healthy))
        .route("/-/ready", get(ready).head(ready))
        .route("/metrics", get(metrics))
        .with_state(readiness)
        .merge(apis)
        .layer(middleware::from_fn(track))
}

async fn healthy() -> &'static str {
    "Sextant is Healthy.\n"
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    if readiness.get() {
        (StatusCode::OK, "Sextant is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

async fn metrics() -> Response {
    let families = prometheus::gather();
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    match encoder.encode(&families, &mut buf) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            Body::from(buf),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// Counts and times every request by its route template (never by raw path: bounded labels).
async fn track(request: Request, next: Next) -> Response {
    let handler = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    API_SECONDS
        .with_label_values(&[handler.as_str()])
        .observe(started.elapsed().as_secs_f64());
    API_REQUESTS
        .with_label_values(&[handler.as_str(), response.status().as_str()])
        .inc();
    response
}

/// Registers process-wide metrics that are not any component's: build info and process stats.
pub(crate) fn register_process_metrics() {
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "sextant_build_info",
            "A metric with a constant '1' value labelled by the version Sextant was built from.",
        ),
        &["version"],
    );
    if let Ok(build) = build {
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = prometheus::register(Box::new(build));
    }
    let process = prometheus::process_collector::ProcessCollector::for_self();
    let _ = prometheus::register(Box::new(process));
    LazyLock::force(&API_REQUESTS);
    LazyLock::force(&API_SECONDS);
}

/// `listener` with `TCP_NODELAY` on every accepted connection, as Go's net/http sets it: a
/// response is sent as soon as it is written rather than after the client's delayed ACK.
pub(crate) fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

/// Binds `listen`, prints the one line on standard output with the bound address (scripts and
/// tests read the port from it), calls `ready` and marks `readiness` ready, then serves `app`
/// until SIGINT or SIGTERM, when readiness turns false (logging `stopping`) and requests
/// drain. The outer error is binding; the inner one is serving, for the caller to report after
/// it has stopped its components and closed its stores.
pub(crate) async fn serve(
    listen: &str,
    app: Router,
    readiness: &Readiness,
    ready: impl FnOnce(std::net::SocketAddr),
    stopping: &'static str,
) -> anyhow::Result<anyhow::Result<()>> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("sextant listening on http://{addr}");
    ready(addr);
    readiness.set(true);
    let shutdown = {
        let readiness = readiness.clone();
        async move {
            let signal = crate::shutdown_signal().await;
            tracing::info!(signal, "shutting down: {stopping}");
            readiness.set(false);
        }
    };
    Ok(axum::serve(no_delay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP"))
}

/// Waits for every component task, logging those that panicked.
pub(crate) async fn join_tasks(tasks: &mut tokio::task::JoinSet<()>) {
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a component panicked");
        }
    }
}

//! The tsdb's own metrics (`sextant_tsdb_*`), registered in the process-wide registry that
//! `/metrics` serves. Updated per request or batch, never per sample.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounterVec, IntGauge, exponential_buckets, register_histogram_vec,
    register_int_counter_vec, register_int_gauge,
};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // Registration fails only on a name clash, a programming error that tests catch.
    register_int_counter_vec!(name, help, labels)
        .unwrap_or_else(|e| panic!("registering {name}: {e}"))
}

/// Samples stored, by ingest path (`remote_write`, `import`).
pub(crate) static SAMPLES_INGESTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_samples_ingested_total",
        "Samples accepted into storage, by ingest path.",
        &["path"],
    )
});

/// Samples not stored, by ingest path and reason.
pub(crate) static SAMPLES_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_samples_rejected_total",
        "Samples rejected at ingest, by ingest path and reason.",
        &["path", "reason"],
    )
});

/// Ingest requests, by path and HTTP status code.
pub(crate) static WRITE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_write_requests_total",
        "Ingest requests, by ingest path and HTTP status code.",
        &["path", "code"],
    )
});

/// API calls by endpoint and outcome (`success` or the Prometheus error type).
pub(crate) static QUERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_queries_total",
        "Read API calls, by endpoint and outcome (success or the Prometheus errorType).",
        &["endpoint", "outcome"],
    )
});

pub(crate) static QUERY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let buckets = exponential_buckets(0.001, 4.0, 10).unwrap_or_default();
    register_histogram_vec!(
        "sextant_tsdb_query_duration_seconds",
        "Time to answer read API calls, queueing included, by endpoint.",
        &["endpoint"],
        buckets
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_query_duration_seconds: {e}"))
});

/// Queries waiting for a concurrency slot.
pub(crate) static QUERIES_QUEUED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_queries_queued",
        "PromQL queries waiting for a concurrency slot."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_queries_queued: {e}"))
});

/// PromQL queries being evaluated.
pub(crate) static QUERIES_RUNNING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_queries_running",
        "PromQL queries being evaluated."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_queries_running: {e}"))
});

//! The tsdb's own metrics (`sextant_tsdb_*`), registered in the process-wide registry that
//! `/metrics` serves. Updated per request or batch, never per sample.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, exponential_buckets,
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge,
};

use crate::storage::AppendReport;

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
pub(crate) static INGEST_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_ingest_rejected_samples_total",
        "Samples rejected at ingest, by ingest path (remote_write, import, bus) and reason.",
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
/// Records of the bus's metrics topic, by outcome (`stored`, `undecodable`).
pub(crate) static BUS_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_bus_records_total",
        "Records of the bus's metrics topic handled by the tsdb, by outcome (stored, undecodable).",
        &["outcome"],
    )
});

pub(crate) static QUERIES_RUNNING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_queries_running",
        "PromQL queries being evaluated."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_queries_running: {e}"))
});

pub(crate) static SAMPLES_APPENDED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sextant_tsdb_samples_appended_total",
        "Samples accepted by the store (durable when counted)."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_samples_appended_total: {e}"))
});

pub(crate) static SAMPLES_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sextant_tsdb_samples_rejected_total",
        "Samples the store refused, by reason.",
        &["reason"]
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_samples_rejected_total: {e}"))
});

pub(crate) static WAL_FSYNCS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sextant_tsdb_wal_fsyncs_total",
        "Group commits of the WAL (one fdatasync each)."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_wal_fsyncs_total: {e}"))
});

pub(crate) static WAL_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sextant_tsdb_wal_written_bytes_total",
        "Bytes written to WAL segments."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_wal_written_bytes_total: {e}"))
});

pub(crate) static WAL_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sextant_tsdb_wal_write_failures_total",
        "WAL writes or fsyncs that failed (the batch was refused)."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_wal_write_failures_total: {e}"))
});

pub(crate) static CHECKPOINTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sextant_tsdb_checkpoints_total",
        "Head checkpoints, by result.",
        &["result"]
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_checkpoints_total: {e}"))
});

pub(crate) static HEAD_SERIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_head_series",
        "Active series in the heads of all tenants."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_head_series: {e}"))
});

pub(crate) static BLOCKS_LOADED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_blocks_loaded",
        "Immutable blocks open, of all tenants."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_blocks_loaded: {e}"))
});

pub(crate) static BLOCKS_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_storage_blocks_bytes",
        "Bytes of the immutable blocks of all tenants (chunks, index, meta, tombstones)."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_storage_blocks_bytes: {e}"))
});

pub(crate) static COMPACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_compactions_total",
        "Block compactions (merges of blocks, rewrites of a block with tombstones), by result.",
        &["result"],
    )
});

pub(crate) static COMPACTION_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let buckets = exponential_buckets(0.01, 4.0, 10).unwrap_or_default();
    register_histogram!(
        "sextant_tsdb_compaction_duration_seconds",
        "Time one block compaction took.",
        buckets
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_compaction_duration_seconds: {e}"))
});

pub(crate) static HEAD_TRUNCATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sextant_tsdb_head_truncations_total",
        "Times the head's oldest range was cut into a block and dropped from the head."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_head_truncations_total: {e}"))
});

/// Counts one append's outcome.
pub(crate) fn count_append(report: &AppendReport) {
    SAMPLES_APPENDED.inc_by(report.accepted as u64);
    for (reason, n) in &report.rejected {
        SAMPLES_REJECTED
            .with_label_values(&[reason.as_str()])
            .inc_by(*n as u64);
    }
}

pub(crate) static EXEMPLARS_APPENDED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sextant_tsdb_exemplars_appended_total",
        "Exemplars stored (durable when counted)."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_exemplars_appended_total: {e}"))
});

pub(crate) static EXEMPLARS_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_exemplars_rejected_total",
        "Exemplars not stored, by reason (out_of_order, label_length, duplicate, disabled).",
        &["reason"],
    )
});

pub(crate) static EXEMPLARS_IN_STORAGE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_exemplars_in_storage",
        "Exemplars in the circular buffers of all tenants."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_exemplars_in_storage: {e}"))
});

pub(crate) static EXEMPLAR_SERIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sextant_tsdb_exemplars_series_in_storage",
        "Series with exemplars in the circular buffers of all tenants."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_exemplars_series_in_storage: {e}"))
});

pub(crate) static EXEMPLAR_LOG_FSYNCS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sextant_tsdb_exemplars_log_fsyncs_total",
        "Group commits of the exemplar logs (one fdatasync each)."
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_exemplars_log_fsyncs_total: {e}"))
});

pub(crate) static METADATA_WRITES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_metadata_writes_total",
        "Metric metadata files written (each an atomic replace), by result.",
        &["result"],
    )
});

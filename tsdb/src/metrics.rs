//! The tsdb's own metrics (`sextant_tsdb_*`), registered in the process-wide registry that
//! `/metrics` serves. Updated per batch, never per sample.

use std::sync::LazyLock;

use prometheus::{
    IntCounter, IntCounterVec, IntGauge, register_int_counter, register_int_counter_vec,
    register_int_gauge,
};

use crate::storage::AppendReport;

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

/// Counts one append's outcome.
pub(crate) fn count_append(report: &AppendReport) {
    SAMPLES_APPENDED.inc_by(report.accepted as u64);
    for (reason, n) in &report.rejected {
        SAMPLES_REJECTED
            .with_label_values(&[reason.as_str()])
            .inc_by(*n as u64);
    }
}

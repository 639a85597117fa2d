//! The container-log pipeline's own metrics (`sextant_collector_container_log_*`), in the
//! process-wide registry. Updated once per poll, never per line.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(name, help, labels).unwrap_or_else(|e| {
        // Registration fails only on a name clash, which is a programming error caught by tests.
        panic!("registering {name}: {e}")
    })
}

fn gauge(name: &str, help: &str) -> IntGaugeVec {
    register_int_gauge_vec!(name, help, &[]).unwrap_or_else(|e| panic!("registering {name}: {e}"))
}

pub(crate) static LINES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_container_log_lines_total",
        "Container log lines shipped (partial lines joined count once), by format (cri, docker, raw: not parsable).",
        &["format"],
    )
});

pub(crate) static BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_container_log_bytes_total",
        "Bytes read from container log files.",
        &[],
    )
});

pub(crate) static PARTIAL_JOINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_container_log_partial_joins_total",
        "Lines shipped that were joined from several partial lines (CRI P…F, Docker split entries).",
        &[],
    )
});

pub(crate) static MALFORMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_container_log_malformed_lines_total",
        "Lines in neither format, shipped as they are.",
        &[],
    )
});

pub(crate) static TRUNCATED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_container_log_truncated_lines_total",
        "Lines cut at max_line_bytes.",
        &[],
    )
});

pub(crate) static FILE_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_container_log_file_events_total",
        "Tailer events: opened, closed (rotated file done), truncated, rewritten, cut_line, error.",
        &["event"],
    )
});

pub(crate) static FILES_OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sextant_collector_container_log_files_open",
        "Container log files tailed now, rotated ones still being read included.",
    )
});

pub(crate) static PENDING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sextant_collector_container_log_pending_partial_lines",
        "Partial lines waiting for the rest of their line.",
    )
});

pub(crate) static SHIP_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_container_log_ship_errors_total",
        "Failed sends of container log lines (retried), and failed checkpoint writes.",
        &["what"],
    )
});

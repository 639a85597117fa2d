//! The access-log pipeline's own metrics (`sextant_collector_access_log_*`), in the process-wide
//! registry. Updated once per poll and source, never per line.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(name, help, labels).unwrap_or_else(|e| {
        // Registration fails only on a name clash, which is a programming error caught by tests.
        panic!("registering {name}: {e}")
    })
}

pub(crate) static LINES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_access_log_lines_total",
        "Access-log lines read, by outcome (parsed, malformed).",
        &["source", "outcome"],
    )
});

pub(crate) static BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_access_log_bytes_total",
        "Bytes read from access-log files.",
        &["source"],
    )
});

pub(crate) static FILE_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_access_log_file_events_total",
        "Tailer events: opened, closed (rotated file done), truncated, rewritten, cut_line, error.",
        &["source", "event"],
    )
});

pub(crate) static FILES_OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sextant_collector_access_log_files_open",
        "Files tailed now, rotated ones still being read included.",
        &["source"]
    )
    .unwrap_or_else(|e| panic!("registering sextant_collector_access_log_files_open: {e}"))
});

pub(crate) static SHIP_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_access_log_ship_errors_total",
        "Failed sends of access-log lines or RED samples (retried), and failed checkpoint writes.",
        &["what"],
    )
});

pub(crate) static RED_SERIES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sextant_collector_access_log_red_series",
        "RED series kept.",
        &[]
    )
    .unwrap_or_else(|e| panic!("registering sextant_collector_access_log_red_series: {e}"))
});

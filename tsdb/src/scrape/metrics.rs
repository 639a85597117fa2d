//! The scrape loop's own metrics (`sextant_tsdb_scrape_*`), registered in the process-wide
//! registry that `/metrics` serves. Updated once per scrape, never per sample.
//!
//! Every metric carries `sink`: `store` for the server's scrape jobs (`tsdb.scrape`), `bus`
//! for the collector's (`collector.scrape`), which share this code; the two may use the same
//! job names in different processes.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounterVec, IntGaugeVec, exponential_buckets, register_histogram_vec,
    register_int_counter_vec, register_int_gauge_vec,
};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // Registration fails only on a name clash, a programming error that tests catch.
    register_int_counter_vec!(name, help, labels)
        .unwrap_or_else(|e| panic!("registering {name}: {e}"))
}

/// Scrapes run, by job.
pub(crate) static SCRAPES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_scrapes_total",
        "Scrapes run, by job.",
        &["sink", "job"],
    )
});

/// Failed scrapes (target down, bad page, limit exceeded), by job.
pub(crate) static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_failures_total",
        "Scrapes that failed (target unreachable, bad status or page, limit exceeded), by job.",
        &["sink", "job"],
    )
});

/// Samples the sink took (report series and staleness markers included), by job.
pub(crate) static SAMPLES_APPENDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_samples_appended_total",
        "Scraped samples the sink took (the store accepted them, or the bus acknowledged them), report series and staleness markers included.",
        &["sink", "job"],
    )
});

/// Samples the store rejected, by job and reason.
pub(crate) static SAMPLES_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_samples_rejected_total",
        "Scraped samples the store rejected, by job and reason.",
        &["sink", "job", "reason"],
    )
});

/// Appends that failed outright (I/O), by job.
pub(crate) static APPEND_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_append_errors_total",
        "Scrape batches the store failed to append (nothing of the batch stored, not retried), by job.",
        &["sink", "job"],
    )
});

/// Failed writes that are retried (the bus did not acknowledge), by job.
pub(crate) static WRITE_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_write_retries_total",
        "Writes of a scrape batch that failed and were retried (the bus did not acknowledge them), by job.",
        &["sink", "job"],
    )
});

/// Samples given up while retrying (the loop stopped), by job.
pub(crate) static SAMPLES_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_samples_dropped_total",
        "Scraped samples given up while their write was being retried (the target was removed or reconfigured, or the process stopped), by job.",
        &["sink", "job"],
    )
});

/// Staleness markers written, by job.
pub(crate) static STALE_MARKERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_tsdb_scrape_stale_markers_total",
        "Staleness markers written for series that disappeared or whose target failed or went away.",
        &["sink", "job"],
    )
});

/// Scrape durations, by job.
pub(crate) static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sextant_tsdb_scrape_duration_seconds",
        "Time from the start of a scrape to its samples being parsed, by job.",
        &["sink", "job"],
        exponential_buckets(0.001, 4.0, 9).unwrap_or_default()
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_scrape_duration_seconds: {e}"))
});

/// Active targets, by job.
pub(crate) static TARGETS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sextant_tsdb_scrape_targets",
        "Active scrape targets, by job.",
        &["sink", "job"]
    )
    .unwrap_or_else(|e| panic!("registering sextant_tsdb_scrape_targets: {e}"))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_without_clashes() {
        SCRAPES.with_label_values(&["s", "t"]).inc();
        FAILURES.with_label_values(&["s", "t"]).inc();
        SAMPLES_APPENDED.with_label_values(&["s", "t"]).inc();
        SAMPLES_REJECTED.with_label_values(&["s", "t", "r"]).inc();
        APPEND_ERRORS.with_label_values(&["s", "t"]).inc();
        WRITE_RETRIES.with_label_values(&["s", "t"]).inc();
        SAMPLES_DROPPED.with_label_values(&["s", "t"]).inc();
        STALE_MARKERS.with_label_values(&["s", "t"]).inc();
        DURATION.with_label_values(&["s", "t"]).observe(0.1);
        TARGETS.with_label_values(&["s", "t"]).set(1);
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.contains(&"sextant_tsdb_scrape_scrapes_total".to_string()));
        assert!(names.contains(&"sextant_tsdb_scrape_duration_seconds".to_string()));
    }
}

//! The collector's own metrics (`sextant_collector_*`), registered in the process-wide registry
//! that `/metrics` serves. Updated once per source and tick, never per sample.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounterVec, IntGaugeVec, exponential_buckets, register_histogram_vec,
    register_int_counter_vec, register_int_gauge_vec,
};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(name, help, labels).unwrap_or_else(|e| {
        // Registration fails only on a name clash, which is a programming error caught by tests.
        panic!("registering {name}: {e}")
    })
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register_int_gauge_vec!(name, help, labels)
        .unwrap_or_else(|e| panic!("registering {name}: {e}"))
}

pub(crate) static SAMPLES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_samples_total",
        "Samples produced by a source.",
        &["source"],
    )
});

pub(crate) static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_errors_total",
        "Errors of a source (a file that could not be read or parsed, a failed collection).",
        &["source"],
    )
});

pub(crate) static CGROUPS_SCANNED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_cgroups_scanned_total",
        "Cgroups whose statistics were read.",
        &["source"],
    )
});

pub(crate) static CONTAINERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sextant_collector_containers",
        "Cgroups exported by the last collection of a source.",
        &["source"],
    )
});

pub(crate) static COLLECT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sextant_collector_collect_duration_seconds",
        "Wall time of one collection of a source.",
        &["source"],
        exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()
    )
    .unwrap_or_else(|e| panic!("registering sextant_collector_collect_duration_seconds: {e}"))
});

pub(crate) static SENT_SAMPLES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_sent_samples_total",
        "Samples the sink acknowledged (durable on the bus).",
        &["sink"],
    )
});

pub(crate) static SEND_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_send_errors_total",
        "Failed attempts to hand a tick's samples to the sink (each is retried).",
        &["sink"],
    )
});

pub(crate) static DROPPED_SAMPLES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_collector_dropped_samples_total",
        "Samples given up on because the sink kept failing until the next tick.",
        &["sink"],
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_under_the_crate_prefix() {
        SAMPLES.with_label_values(&["t"]).inc();
        ERRORS.with_label_values(&["t"]).inc();
        CGROUPS_SCANNED.with_label_values(&["t"]).inc();
        CONTAINERS.with_label_values(&["t"]).set(1);
        COLLECT_SECONDS.with_label_values(&["t"]).observe(0.001);
        SENT_SAMPLES.with_label_values(&["t"]).inc();
        SEND_ERRORS.with_label_values(&["t"]).inc();
        DROPPED_SAMPLES.with_label_values(&["t"]).inc();
        // Other modules' metrics may share the registry in this process: count only these.
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|f| f.name().to_owned())
            .filter(|n| {
                n.starts_with("sextant_collector_")
                    && !n.starts_with("sextant_collector_access_log_")
                    && !n.starts_with("sextant_collector_container_log_")
            })
            .collect();
        assert_eq!(names.len(), 8, "{names:?}");
    }
}

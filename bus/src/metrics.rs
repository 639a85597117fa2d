//! The bus's own metrics (`sextant_bus_*`), registered in the process-wide registry that
//! `/metrics` serves. Emitted per batch, never per record.

use std::sync::LazyLock;

use crate::{Delivery, Topic};

use prometheus::{
    Histogram, IntCounterVec, IntGaugeVec, exponential_buckets, register_histogram,
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

pub(crate) static PRODUCED_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_produced_records_total",
        "Records acknowledged to producers.",
        &["bus", "topic"],
    )
});

pub(crate) static PRODUCED_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_produced_bytes_total",
        "Key and payload bytes of records acknowledged to producers.",
        &["bus", "topic"],
    )
});

pub(crate) static PRODUCE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_produce_errors_total",
        "Batches whose append failed (the producer was told and retries).",
        &["bus", "topic"],
    )
});

pub(crate) static CONSUMED_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_consumed_records_total",
        "Records handed to consumers.",
        &["bus", "topic", "group"],
    )
});

/// Counts one poll's deliveries per topic (one increment per topic and poll).
pub(crate) fn count_consumed(bus: &str, group: &str, deliveries: &[Delivery]) {
    for topic in Topic::ALL {
        let n = deliveries.iter().filter(|d| d.topic == topic).count();
        if n > 0 {
            CONSUMED_RECORDS
                .with_label_values(&[bus, topic.name(), group])
                .inc_by(n as u64);
        }
    }
}

pub(crate) static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_commits_total",
        "Consumer commits, by outcome.",
        &["bus", "group", "outcome"],
    )
});

pub(crate) static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sextant_bus_consumer_lag_records",
        "Records of a topic not yet committed by a consumer group (embedded bus).",
        &["topic", "group"],
    )
});

pub(crate) static LOG_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sextant_bus_log_bytes",
        "Bytes on disk of a topic's embedded log.",
        &["topic"],
    )
});

pub(crate) static EXPIRED_UNCONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_expired_unconsumed_records_total",
        "Records deleted by retention before a known consumer group committed them.",
        &["topic", "group"],
    )
});

pub(crate) static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sextant_bus_group_commit_seconds",
        "Time to write and fsync one group commit of the embedded bus.",
        exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()
    )
    .unwrap_or_else(|e| panic!("registering sextant_bus_group_commit_seconds: {e}"))
});

pub(crate) static SPOOL_BYTES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "sextant_bus_spool_bytes",
        "Bytes on disk of the spool in front of Kafka (records not yet drained, and drained ones in segments not yet deleted)."
    )
    .unwrap_or_else(|e| panic!("registering sextant_bus_spool_bytes: {e}"))
});

pub(crate) static SPOOL_RECORDS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "sextant_bus_spool_records",
        "Records in the spool not yet acknowledged by the broker.",
        &["topic"],
    )
});

pub(crate) static SPOOL_OLDEST_AGE: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    prometheus::register_gauge_vec!(
        "sextant_bus_spool_oldest_age_seconds",
        "Age of the oldest record in the spool not yet acknowledged by the broker (0 when drained): the shipping lag.",
        &["topic"]
    )
    .unwrap_or_else(|e| panic!("registering sextant_bus_spool_oldest_age_seconds: {e}"))
});

pub(crate) static SPOOL_DRAINED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_spool_drained_records_total",
        "Records the spool's drain sent to the broker (acknowledged).",
        &["topic"],
    )
});

pub(crate) static SPOOL_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_spool_send_retries_total",
        "Failed sends of a drained batch to the broker (each is retried with back-off).",
        &["topic"],
    )
});

pub(crate) static SPOOL_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_spool_rejected_records_total",
        "Records refused because the spool stayed full for bus.kafka.spool.full_wait (the sender was told).",
        &["topic"],
    )
});

pub(crate) static SPOOL_FULL_WAITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_spool_full_waits_total",
        "Sends that had to wait for room in a full spool (backpressure).",
        &["topic"],
    )
});

pub(crate) static SPOOL_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sextant_bus_spool_dropped_records_total",
        "Spooled records the brokers refused for good (too large, invalid), dropped after an error log.",
        &["topic"],
    )
});

//! The bus between collectors and stores.
//!
//! Producers (the collector, receivers) append [`Record`]s to a [`Topic`]; stores read them through
//! a [`Consumer`] in a named group and commit what they have durably processed. Delivery is
//! at-least-once end to end: a record is acknowledged to its producer only once it is durable, and
//! a consumer that crashes before committing sees the uncommitted records again. Stores make
//! re-delivery idempotent.
//!
//! Two implementations sit behind the [`Bus`] trait:
//! - [`embedded::EmbeddedBus`] (the default of `sextant run`): in-process, backed by an append-only,
//!   CRC-checked, group-committed log under the data dir, so that nothing it acknowledged is lost
//!   to `kill -9`.
//! - [`kafka::KafkaBus`]: Kafka through `rdkafka` (idempotent producer, `acks=all`, compression,
//!   consumer groups with explicitly committed offsets), by default behind a
//!   [`spool::SpooledBus`]: producers are acknowledged once their records are in a bounded
//!   on-disk spool, which drains to Kafka in order and keeps accepting while brokers are down.
//!
//! Payloads are protobuf messages from [`proto`]; [`proto`] also holds the partition keys that keep
//! one series, log stream or trace on one partition.
//!
//! Invariant: the bus knows nothing of what it carries beyond topic, key and bytes; it never
//! decodes a payload and never depends on a store or the collector.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub mod embedded;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod kafka;
mod metrics;
pub mod proto;
pub mod spool;

pub use error::{Error, Result};

/// A stream of the bus. Each maps to one Kafka topic (`<prefix><name>`) or one embedded log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Samples: [`proto::MetricsBatch`].
    Metrics,
    /// Log lines: [`proto::LogsBatch`].
    Logs,
    /// Spans: [`proto::SpansBatch`].
    Spans,
    /// Cluster and Sextant events (scaling decisions, alerts, Kubernetes events): [`proto::EventsBatch`].
    Events,
}

impl Topic {
    /// Every topic, in a fixed order.
    pub const ALL: [Topic; 4] = [Topic::Metrics, Topic::Logs, Topic::Spans, Topic::Events];

    /// The topic's short name, used in file paths, topic names and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Metrics => "metrics",
            Topic::Logs => "logs",
            Topic::Spans => "spans",
            Topic::Events => "events",
        }
    }

    /// The topic whose short name is `name`.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One message to append. `key` chooses the partition (records with equal keys stay in order on
/// one partition); see [`proto`] for the key of each payload kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Bytes,
    pub payload: Bytes,
}

impl Record {
    pub fn new(key: impl Into<Bytes>, payload: impl Into<Bytes>) -> Self {
        Record {
            key: key.into(),
            payload: payload.into(),
        }
    }
}

/// One message handed to a consumer, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch at which the bus accepted the record.
    pub timestamp_ms: i64,
    pub key: Bytes,
    pub payload: Bytes,
}

/// Appends records to topics.
#[async_trait]
pub trait Producer: Send + Sync + Debug {
    /// Appends `records` to `topic` and resolves once every one of them is durable: on the local
    /// disk (fsynced) for the embedded bus, acknowledged by all in-sync replicas for Kafka.
    ///
    /// On error, some of the records may have been appended: the caller retries the whole batch
    /// and consumers see duplicates, which stores absorb (at-least-once).
    async fn send(&self, topic: Topic, records: Vec<Record>) -> Result<()>;

    /// Resolves once everything handed to [`Producer::send`] before this call is durable or failed.
    async fn flush(&self) -> Result<()>;
}

/// Reads topics as a member of a consumer group.
#[async_trait]
pub trait Consumer: Send + Debug {
    /// Waits up to `timeout` for records and returns at most `max` of them (none on time-out).
    /// A group without committed positions starts at the earliest record still kept.
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>>;

    /// Commits, for the group, the position after every record returned by [`Consumer::poll`] so
    /// far. After a restart the group resumes there: committed records are not delivered again.
    async fn commit(&mut self) -> Result<()>;
}

/// A bus: a source of producers and consumers.
#[async_trait]
pub trait Bus: Send + Sync + Debug {
    /// Which implementation this is (`embedded` or `kafka`), for logs and metric labels.
    fn kind(&self) -> &'static str;

    /// A producer; producers are cheap to share and may be used from many tasks at once.
    fn producer(&self) -> Result<Arc<dyn Producer>>;

    /// A consumer of `topics` in consumer group `group`.
    async fn consumer(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Consumer>>;

    /// Makes everything accepted so far durable and stops background work. Producers used after
    /// this fail with [`Error::Closed`].
    async fn close(&self) -> Result<()>;
}

/// Which bus to run, and its settings (the `bus:` section of the config file): at most one of
/// `embedded` and `kafka`; neither means the embedded bus with its defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// The in-process bus with a local log under the data dir (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<embedded::EmbeddedConfig>,
    /// Kafka through librdkafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<kafka::KafkaConfig>,
}

/// The bus a [`BusConfig`] selects.
#[derive(Clone, Debug, PartialEq)]
pub enum BusChoice {
    Embedded(embedded::EmbeddedConfig),
    Kafka(kafka::KafkaConfig),
}

impl BusConfig {
    /// Checks values that serde cannot; errors start with the offending key under `bus.`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.embedded.is_some() && self.kafka.is_some() {
            return Err("bus: set one of `embedded` and `kafka`, not both".to_owned());
        }
        match self.choice() {
            BusChoice::Embedded(c) => c.validate(),
            BusChoice::Kafka(c) => c.validate(),
        }
    }

    /// The selected bus (Kafka when its section is present).
    pub fn choice(&self) -> BusChoice {
        match (&self.kafka, &self.embedded) {
            (Some(k), _) => BusChoice::Kafka(k.clone()),
            (None, e) => BusChoice::Embedded(e.clone().unwrap_or_default()),
        }
    }
}

/// Opens the configured bus. The embedded bus keeps its log in `data_dir/bus`; Kafka with the
/// spool on keeps the spool in `data_dir/spool` and needs no reachable broker to open.
pub async fn open(config: &BusConfig, data_dir: &Path) -> Result<Arc<dyn Bus>> {
    match config.choice() {
        BusChoice::Embedded(c) => Ok(Arc::new(embedded::EmbeddedBus::open(
            &data_dir.join("bus"),
            c,
        )?)),
        BusChoice::Kafka(c) if c.spool.enabled => Ok(Arc::new(spool::SpooledBus::open(
            c,
            &data_dir.join("spool"),
        )?)),
        BusChoice::Kafka(c) => Ok(Arc::new(kafka::KafkaBus::connect(c).await?)),
    }
}

/// Validates a consumer group name: it becomes a file name for the embedded bus.
pub(crate) fn check_group(group: &str) -> Result<()> {
    let ok = !group.is_empty()
        && group.len() <= 200
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !group.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidGroup(group.to_owned()))
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip() {
        for t in Topic::ALL {
            assert_eq!(Topic::from_name(t.name()), Some(t));
        }
        assert_eq!(Topic::from_name("nope"), None);
    }

    #[test]
    fn group_names() {
        assert!(check_group("tsdb").is_ok());
        assert!(check_group("log-store_1.a").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_group(bad).is_err(), "{bad}");
        }
    }
}

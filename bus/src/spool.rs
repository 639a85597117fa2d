//! The spool: a bounded on-disk buffer in front of a producer that may be unreachable (Kafka).
//!
//! [`SpoolProducer::send`] appends to a local log (the embedded bus's segment files, group
//! commit and recovery, under `<data>/spool/`) and resolves once the records are fsynced there,
//! whether or not the broker is reachable. One drain task per topic reads that log in order, sends
//! each batch to the inner producer with retry and back-off, and commits its position in the log
//! only after the inner producer acknowledged the batch. Closed segments every drain has committed
//! past are deleted.
//!
//! Invariants:
//! - a record acknowledged by the spool is on disk until the inner producer acknowledged it; a
//!   restart (even `kill -9`) resumes the drain at the last committed position (at-least-once:
//!   a batch sent but not yet committed is sent again, and stores absorb the duplicate);
//! - records of one topic reach the inner producer in the order they were spooled, so the order
//!   per partition key is kept;
//! - the spool never grows past `max_bytes`: a send that does not fit waits for the drain to make
//!   room (backpressure) for up to `full_wait`, then fails with [`Error::SpoolFull`], which the
//!   caller counts; nothing is dropped silently.

mod drain;
mod producer;
mod spooled;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::embedded::{EmbeddedBus, EmbeddedConfig, EmbeddedProducer, Policy, Retention};
use crate::metrics::{SPOOL_BYTES, SPOOL_OLDEST_AGE, SPOOL_RECORDS};
use crate::{Error, Producer, Result, Topic};

pub use producer::SpoolProducer;
pub use spooled::SpooledBus;

/// Settings of the spool (`bus: { kafka: { spool: … } } }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Whether sends go through the spool (on by default). Off, a send waits for the brokers'
    /// acknowledgement, up to `bus.kafka.message_timeout`.
    pub enabled: bool,
    /// Largest size of the spool on disk. A send that would pass it waits for room.
    pub max_bytes: ByteSize,
    /// How long a send waits for room in a full spool before it fails (and the caller counts
    /// what it could not ship). 0s fails at once.
    #[serde(with = "humantime_serde")]
    pub full_wait: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enabled: true,
            max_bytes: ByteSize::gib(1),
            full_wait: Duration::from_secs(10),
        }
    }
}

/// The smallest `max_bytes` accepted: 16 segments of the embedded log's minimum size.
const MIN_BYTES: u64 = 64 * 1024;

impl SpoolConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.max_bytes.as_u64() < MIN_BYTES {
            return Err(format!(
                "bus.kafka.spool.max_bytes: {} is below the minimum of 64 KiB",
                self.max_bytes
            ));
        }
        if self.full_wait > Duration::from_secs(3600) {
            return Err("bus.kafka.spool.full_wait: must be at most 1h".to_owned());
        }
        Ok(())
    }

    /// Segment files of a sixteenth of the bound (4 KiB to 64 MiB): drained data is deleted a
    /// segment at a time, so at most about that much of the bound holds drained records.
    fn log_config(&self) -> EmbeddedConfig {
        let segment = (self.max_bytes.as_u64() / 16).clamp(4 * 1024, 64 * 1024 * 1024);
        EmbeddedConfig {
            segment_bytes: ByteSize::b(segment),
            // Unused by `Retention::Committed`, kept valid.
            retention_bytes: self.max_bytes,
            ..EmbeddedConfig::default()
        }
    }
}

/// The drain's consumer group in the spool's log for `topic`.
fn drain_group(topic: Topic) -> String {
    format!("drain-{}", topic.name())
}

/// How long [`Spool::close`] lets the drains empty the spool before stopping them.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What the drains are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Running,
    /// Stop once the spool is empty.
    Finish,
    /// Stop now; undrained records stay for the next start.
    Now,
}

/// The spool: its log, its bound, its drains. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: EmbeddedBus,
    producer: EmbeddedProducer,
    config: SpoolConfig,
    /// Bytes of sends admitted but not yet on disk (so concurrent senders cannot overshoot).
    reserved: Mutex<u64>,
    /// Signalled when the drain committed (room may have been made).
    room: Notify,
    stop: watch::Sender<Stop>,
    drains: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering its log after a crash. Records left
    /// undrained by an earlier run are sent first once [`Spool::start_drain`] is called.
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<Spool> {
        config.validate().map_err(Error::Config)?;
        let log = EmbeddedBus::open_with(
            dir,
            config.log_config(),
            Policy {
                kind: "spool",
                retention: Retention::Committed,
            },
        )?;
        let producer = log.embedded_producer()?;
        let (stop, _) = watch::channel(Stop::Running);
        let spool = Spool {
            inner: Arc::new(Inner {
                log,
                producer,
                config,
                reserved: Mutex::new(0),
                room: Notify::new(),
                stop,
                drains: Mutex::new(Vec::new()),
            }),
        };
        let backlog: u64 = Topic::ALL
            .iter()
            .map(|t| spool.inner.log.backlog(&drain_group(*t), *t))
            .sum();
        if backlog > 0 {
            tracing::info!(
                records = backlog,
                bytes = spool.inner.log.disk_bytes(),
                "spool holds records of an earlier run; they are sent first"
            );
        }
        spool.report_all();
        Ok(spool)
    }

    /// A producer that appends to the spool.
    pub fn producer(&self) -> SpoolProducer {
        SpoolProducer::new(self.clone())
    }

    /// Starts one drain task per topic sending to `inner`. Call once.
    pub fn start_drain(&self, inner: Arc<dyn Producer>) -> Result<()> {
        let mut drains = lock(&self.inner.drains);
        for topic in Topic::ALL {
            let consumer = self
                .inner
                .log
                .embedded_consumer(&drain_group(topic), &[topic])?;
            drains.push(tokio::spawn(drain::run(
                topic,
                consumer,
                Arc::clone(&inner),
                self.clone(),
                self.inner.stop.subscribe(),
            )));
        }
        Ok(())
    }

    /// Lets the drains empty the spool for up to `grace`, stops them, and closes the log (what
    /// was accepted is durable; what was not drained is sent after the next start).
    pub async fn close(&self, grace: Duration) -> Result<()> {
        let drains = std::mem::take(&mut *lock(&self.inner.drains));
        self.inner.stop.send_replace(Stop::Finish);
        let deadline = tokio::time::Instant::now() + grace;
        let mut late = Vec::new();
        for mut h in drains {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                late.push(h);
            }
        }
        if !late.is_empty() {
            self.inner.stop.send_replace(Stop::Now);
            for h in late {
                let _ = h.await;
            }
        }
        self.inner.stop.send_replace(Stop::Now);
        self.report_all();
        let left: u64 = Topic::ALL
            .iter()
            .map(|t| self.inner.log.backlog(&drain_group(*t), *t))
            .sum();
        if left > 0 {
            tracing::warn!(
                records = left,
                "closing the spool with undrained records; they are sent after the next start"
            );
        }
        crate::Bus::close(&self.inner.log).await
    }

    /// Bytes of the spool on disk.
    pub fn bytes(&self) -> u64 {
        self.inner.log.disk_bytes()
    }

    /// Records of `topic` not yet acknowledged by the inner producer.
    pub fn backlog(&self, topic: Topic) -> u64 {
        self.inner.log.backlog(&drain_group(topic), topic)
    }

    /// Updates the gauges of `topic` after a drain step; `oldest_ms` is the spooling time of the
    /// oldest record not yet acknowledged (none when drained).
    fn report(&self, topic: Topic, oldest_ms: Option<i64>) {
        SPOOL_BYTES.set(i64::try_from(self.bytes()).unwrap_or(i64::MAX));
        SPOOL_RECORDS
            .with_label_values(&[topic.name()])
            .set(i64::try_from(self.backlog(topic)).unwrap_or(i64::MAX));
        let age = oldest_ms.map_or(0.0, |ms| {
            (crate::now_ms().saturating_sub(ms)).max(0) as f64 / 1000.0
        });
        SPOOL_OLDEST_AGE.with_label_values(&[topic.name()]).set(age);
    }

    fn report_all(&self) {
        for topic in Topic::ALL {
            SPOOL_RECORDS
                .with_label_values(&[topic.name()])
                .set(i64::try_from(self.backlog(topic)).unwrap_or(i64::MAX));
        }
        SPOOL_BYTES.set(i64::try_from(self.bytes()).unwrap_or(i64::MAX));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;

//! The spool's producer: admission against the bound (backpressure), then a durable append.

use std::time::Duration;

use async_trait::async_trait;

use super::{Spool, lock};
use crate::embedded::record_bytes;
use crate::metrics::{SPOOL_BYTES, SPOOL_FULL_WAITS, SPOOL_REJECTED};
use crate::{Error, Producer, Record, Result, Topic};

/// How often a sender waiting for room looks again (room is also signalled by the drain, but
/// segments are deleted by the log's writer a moment after the drain committed).
const ROOM_RECHECK: Duration = Duration::from_millis(100);

/// Appends to the spool; cheap to clone. `send` resolves once the records are fsynced in the
/// spool, not when the broker has them.
#[derive(Debug, Clone)]
pub struct SpoolProducer {
    spool: Spool,
}

impl SpoolProducer {
    pub(super) fn new(spool: Spool) -> Self {
        SpoolProducer { spool }
    }

    /// Waits until `size` more bytes fit under the bound and reserves them, for up to
    /// `full_wait`.
    async fn reserve(&self, topic: Topic, size: u64, records: usize) -> Result<Reservation<'_>> {
        let inner = &self.spool.inner;
        let limit = inner.config.max_bytes.as_u64();
        let deadline = tokio::time::Instant::now() + inner.config.full_wait;
        let mut waited = false;
        loop {
            let room = inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let used = {
                let mut reserved = lock(&inner.reserved);
                let used = inner.log.disk_bytes() + *reserved;
                if used + size <= limit {
                    *reserved += size;
                    return Ok(Reservation {
                        spool: &self.spool,
                        size,
                    });
                }
                used
            };
            if !waited {
                waited = true;
                SPOOL_FULL_WAITS.with_label_values(&[topic.name()]).inc();
                tracing::debug!(topic = %topic, used, limit, "spool full, send waits for the drain");
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                SPOOL_REJECTED
                    .with_label_values(&[topic.name()])
                    .inc_by(records as u64);
                tracing::warn!(topic = %topic, records, used, limit, "spool stayed full, send refused");
                return Err(Error::SpoolFull {
                    used,
                    limit,
                    waited: inner.config.full_wait,
                });
            }
            let _ = tokio::time::timeout_at(deadline.min(now + ROOM_RECHECK), room).await;
        }
    }
}

/// Bytes admitted to the spool but not yet on disk; released when dropped (also when the send
/// is cancelled).
#[derive(Debug)]
struct Reservation<'a> {
    spool: &'a Spool,
    size: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reserved = lock(&self.spool.inner.reserved);
        *reserved = reserved.saturating_sub(self.size);
    }
}

#[async_trait]
impl Producer for SpoolProducer {
    async fn send(&self, topic: Topic, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let size: u64 = records
            .iter()
            .map(|r| record_bytes(&r.key, &r.payload) as u64)
            .sum();
        let limit = self.spool.inner.config.max_bytes.as_u64();
        if size > limit {
            return Err(Error::RecordTooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            });
        }
        let reservation = self.reserve(topic, size, records.len()).await?;
        let result = self.spool.inner.producer.send(topic, records).await;
        drop(reservation);
        SPOOL_BYTES.set(i64::try_from(self.spool.bytes()).unwrap_or(i64::MAX));
        result
    }

    async fn flush(&self) -> Result<()> {
        self.spool.inner.producer.flush().await
    }
}

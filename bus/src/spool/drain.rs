//! One topic's drain: reads the spool in order, sends each batch to the inner producer until it
//! is acknowledged, then commits the spool position (so the segments behind it can go).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Spool, Stop};
use crate::embedded::EmbeddedConsumer;
use crate::metrics::{SPOOL_DRAINED, SPOOL_DROPPED, SPOOL_RETRIES};
use crate::{Consumer, Error, Producer, Record, Topic};

/// Records sent to the inner producer per batch, at most (the log also caps a poll at 8 MiB).
const BATCH_RECORDS: usize = 500;
/// How long one poll of the spool waits for records; also how quickly a stop is noticed.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// First pause after a failed send; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the gauges are updated while a batch waits for the brokers.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Drains `topic` until told to stop.
pub(super) async fn run(
    topic: Topic,
    mut consumer: EmbeddedConsumer,
    inner: Arc<dyn Producer>,
    spool: Spool,
    mut stop: watch::Receiver<Stop>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let state = *stop.borrow();
        if state == Stop::Now {
            return;
        }
        // Not raced with the stop signal: an embedded poll must not be cancelled midway.
        let polled = consumer.poll(BATCH_RECORDS, POLL_WAIT).await;
        let batch = match polled {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(topic = %topic, error = %e, "reading the spool failed");
                if pause(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(first) = batch.first() else {
            spool.report(topic, None);
            if state == Stop::Finish {
                return;
            }
            continue;
        };
        let oldest_ms = first.timestamp_ms;
        let records: Vec<Record> = batch
            .into_iter()
            .map(|d| Record {
                key: d.key,
                payload: d.payload,
            })
            .collect();
        let mut n = records.len() as u64;
        let mut d = Delivery {
            topic,
            inner: inner.as_ref(),
            spool: &spool,
            stop: &mut stop,
            oldest_ms,
            backoff: &mut backoff,
        };
        match d.deliver(&records).await {
            Sent::Ok => {}
            Sent::Stopped => return,
            // One record the brokers will never take must not block the topic: isolate it by
            // sending the batch's records one by one (in order), and drop only what is refused.
            Sent::Refused(e) => {
                tracing::warn!(topic = %topic, error = %e, records = n, "the brokers refused a spooled batch for good; sending its records one by one");
                for r in &records {
                    match d.deliver(std::slice::from_ref(r)).await {
                        Sent::Ok => {}
                        Sent::Stopped => return,
                        Sent::Refused(e) => {
                            n -= 1;
                            SPOOL_DROPPED.with_label_values(&[topic.name()]).inc();
                            tracing::error!(topic = %topic, error = %e, bytes = r.key.len() + r.payload.len(), "the brokers refused a spooled record for good; dropped");
                        }
                    }
                }
            }
        }
        SPOOL_DRAINED.with_label_values(&[topic.name()]).inc_by(n);
        // On failure the position is kept in memory and the next commit covers these records;
        // after a crash before that they are sent again (at-least-once).
        if let Err(e) = consumer.commit().await {
            tracing::warn!(topic = %topic, error = %e, "committing the spool position failed");
        }
        spool.inner.log.maintain();
        spool.inner.room.notify_waiters();
    }
}

/// How sending a batch ended.
enum Sent {
    Ok,
    /// Told to stop now; the records stay spooled.
    Stopped,
    /// Refused for good (the inner producer will never take it).
    Refused(Error),
}

/// Sends batches to the inner producer, retrying what may succeed later.
struct Delivery<'a> {
    topic: Topic,
    inner: &'a dyn Producer,
    spool: &'a Spool,
    stop: &'a mut watch::Receiver<Stop>,
    oldest_ms: i64,
    backoff: &'a mut Duration,
}

impl Delivery<'_> {
    /// Sends `records` until the inner producer acknowledges them, retrying failures with
    /// back-off, unless the failure is permanent or the drain is told to stop now.
    async fn deliver(&mut self, records: &[Record]) -> Sent {
        let topic = self.topic;
        let mut failures = 0u32;
        loop {
            // A send waits for the brokers (Kafka: up to `message_timeout`); the gauges stay
            // current meanwhile, so that the lag of an outage shows while it lasts.
            let send = self.inner.send(topic, records.to_vec());
            tokio::pin!(send);
            let mut gauges = tokio::time::interval(REPORT_EVERY);
            let sent = loop {
                tokio::select! {
                    r = &mut send => break r,
                    _ = gauges.tick() => self.spool.report(topic, Some(self.oldest_ms)),
                    () = stopped_now(self.stop) => return Sent::Stopped,
                }
            };
            let e = match sent {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(topic = %topic, failures, "spooled records delivered again");
                    }
                    *self.backoff = FIRST_BACKOFF;
                    return Sent::Ok;
                }
                Err(e) if e.is_permanent() => return Sent::Refused(e),
                Err(e) => e,
            };
            failures += 1;
            SPOOL_RETRIES.with_label_values(&[topic.name()]).inc();
            // The first failure of an outage is worth a warning; the rest are its echo.
            if failures == 1 {
                tracing::warn!(topic = %topic, error = %e, "sending spooled records failed; they stay spooled and are retried");
            } else {
                tracing::debug!(topic = %topic, error = %e, failures, "sending spooled records failed again");
            }
            if pause(self.stop, *self.backoff).await {
                return Sent::Stopped;
            }
            *self.backoff = (*self.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Sleeps `wait`; true when told to stop now meanwhile.
async fn pause(stop: &mut watch::Receiver<Stop>, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => *stop.borrow() == Stop::Now,
        () = stopped_now(stop) => true,
    }
}

/// Resolves once the drain is told to stop now (or the spool is gone).
async fn stopped_now(stop: &mut watch::Receiver<Stop>) {
    let _ = stop.wait_for(|s| *s == Stop::Now).await;
}

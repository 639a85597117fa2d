//! One topic's drain: reads the spool in order, sends each batch to the inner producer until it
//! is acknowledged, then commits the spool position (so the segments behind it can go).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Spool, Stop};
use crate::embedded::EmbeddedConsumer;
use crate::metrics::{SPOOL_DRAINED, SPOOL_RETRIES};
use crate::{Consumer, Producer, Record, Topic};

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
        let n = records.len() as u64;
        let mut failures = 0u32;
        loop {
            // A send waits for the brokers (Kafka: up to `message_timeout`); the gauges stay
            // current meanwhile, so that the lag of an outage shows while it lasts.
            let send = inner.send(topic, records.clone());
            tokio::pin!(send);
            let mut gauges = tokio::time::interval(REPORT_EVERY);
            let sent = loop {
                tokio::select! {
                    r = &mut send => break r,
                    _ = gauges.tick() => spool.report(topic, Some(oldest_ms)),
                    () = stopped_now(&mut stop) => return,
                }
            };
            match sent {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    SPOOL_RETRIES.with_label_values(&[topic.name()]).inc();
                    // The first failure of an outage is worth a warning; the rest are its echo.
                    if failures == 1 {
                        tracing::warn!(topic = %topic, error = %e, "sending spooled records failed; they stay spooled and are retried");
                    } else {
                        tracing::debug!(topic = %topic, error = %e, failures, "sending spooled records failed again");
                    }
                    if pause(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if failures > 0 {
            tracing::info!(topic = %topic, failures, "spooled records delivered again");
        }
        backoff = FIRST_BACKOFF;
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

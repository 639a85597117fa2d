use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::Record;

/// An inner producer that keeps what it accepted, fails while told to, and can fail a batch
/// after keeping half of it (as a broker that took part of a batch before the connection broke).
#[derive(Debug)]
struct Flaky {
    got: Mutex<Vec<(Topic, Record)>>,
    count: watch::Sender<usize>,
    /// Calls still to fail.
    fail_calls: AtomicUsize,
    /// Fail every call while set.
    down: AtomicBool,
}

impl Flaky {
    fn new(fail_calls: usize) -> Arc<Flaky> {
        Arc::new(Flaky {
            got: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            fail_calls: AtomicUsize::new(fail_calls),
            down: AtomicBool::new(false),
        })
    }

    async fn wait_for(&self, n: usize) {
        let mut rx = self.count.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| *c >= n))
            .await
            .is_ok();
        assert!(waited, "inner producer got {} of {n}", *self.count.borrow());
    }

    fn payloads(&self, topic: Topic) -> Vec<String> {
        lock(&self.got)
            .iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, r)| String::from_utf8(r.payload.to_vec()).unwrap())
            .collect()
    }
}

#[async_trait]
impl Producer for Flaky {
    async fn send(&self, topic: Topic, records: Vec<Record>) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        // A record no broker takes: the whole batch fails, part of it delivered.
        if let Some(i) = records
            .iter()
            .position(|r| r.payload.starts_with(b"poison"))
        {
            let mut got = lock(&self.got);
            got.extend(records.into_iter().take(i).map(|r| (topic, r)));
            self.count.send_replace(got.len());
            return Err(Error::RecordTooLarge {
                size: 1 << 30,
                limit: 1 << 20,
            });
        }
        let failing = self
            .fail_calls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let keep = if failing {
            records.len() / 2
        } else {
            records.len()
        };
        {
            let mut got = lock(&self.got);
            got.extend(records.into_iter().take(keep).map(|r| (topic, r)));
            self.count.send_replace(got.len());
        }
        if failing { Err(Error::Closed) } else { Ok(()) }
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

fn config(max_bytes: u64, full_wait: Duration) -> SpoolConfig {
    SpoolConfig {
        enabled: true,
        max_bytes: ByteSize::b(max_bytes),
        full_wait,
    }
}

fn batch(topic: &str, range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|i| Record::new(format!("key-{}", i % 5), format!("{topic}-{i:06}")))
        .collect()
}

fn names(topic: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{topic}-{i:06}")).collect()
}

/// The first occurrence of each payload, in order: what a store sees once duplicates are absorbed.
fn first_occurrences(all: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    all.into_iter().filter(|p| seen.insert(p.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_inner_producer_loses_nothing_and_order_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), config(1 << 30, Duration::from_secs(10))).unwrap();
    let inner = Flaky::new(6);
    spool.start_drain(inner.clone()).unwrap();
    let p = spool.producer();
    for i in 0..40 {
        p.send(Topic::Metrics, batch("m", i * 50..i * 50 + 50))
            .await
            .unwrap();
        p.send(Topic::Logs, batch("l", i * 10..i * 10 + 10))
            .await
            .unwrap();
    }
    // Each failed call kept half its batch: those records arrive twice.
    inner.wait_for(2000 + 400).await;
    spool.close(Duration::from_secs(10)).await.unwrap();
    let metrics = inner.payloads(Topic::Metrics);
    let logs = inner.payloads(Topic::Logs);
    assert!(metrics.len() + logs.len() > 2400, "failed batches resent");
    assert_eq!(first_occurrences(metrics), names("m", 0..2000));
    assert_eq!(first_occurrences(logs), names("l", 0..400));
    assert_eq!(spool.backlog(Topic::Metrics), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_spool_sends_what_was_not_drained_and_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let first = Flaky::new(0);
    {
        let spool = Spool::open(dir.path(), config(1 << 30, Duration::from_secs(10))).unwrap();
        spool.start_drain(first.clone()).unwrap();
        let p = spool.producer();
        p.send(Topic::Events, batch("e", 0..50)).await.unwrap();
        first.wait_for(50).await;
        // The broker goes away: these stay spooled.
        first.down.store(true, Ordering::SeqCst);
        p.send(Topic::Events, batch("e", 50..120)).await.unwrap();
        spool.close(Duration::from_millis(300)).await.unwrap();
        assert!(matches!(
            p.send(Topic::Events, batch("e", 0..1)).await,
            Err(Error::Closed)
        ));
    }
    let spool = Spool::open(dir.path(), config(1 << 30, Duration::from_secs(10))).unwrap();
    assert_eq!(spool.backlog(Topic::Events), 70);
    let second = Flaky::new(0);
    spool.start_drain(second.clone()).unwrap();
    spool
        .producer()
        .send(Topic::Events, batch("e", 120..130))
        .await
        .unwrap();
    second.wait_for(80).await;
    spool.close(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.payloads(Topic::Events), names("e", 0..50));
    assert_eq!(second.payloads(Topic::Events), names("e", 50..130));
}

fn big(i: usize) -> Vec<Record> {
    vec![Record::new(
        format!("k{i}"),
        format!("{i:06}{}", "x".repeat(1000)),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_after_full_wait() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 * 1024;
    let spool = Spool::open(dir.path(), config(max, Duration::from_millis(200))).unwrap();
    let p = spool.producer();
    // No drain: the broker is unreachable. The spool takes records up to its bound.
    let mut accepted = 0;
    let refused = loop {
        match p.send(Topic::Logs, big(accepted)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "the bound never applied");
    };
    assert!(
        matches!(refused, Error::SpoolFull { limit, .. } if limit == max),
        "{refused}"
    );
    assert!(spool.bytes() <= max, "{} bytes spooled", spool.bytes());
    assert!(accepted > 50, "only {accepted} records fitted");
    assert!(matches!(
        p.send(Topic::Logs, vec![Record::new("k", vec![0u8; 70_000])])
            .await,
        Err(Error::RecordTooLarge { .. })
    ));
    spool.close(Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_waits_for_room_and_drained_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 * 1024;
    let spool = Spool::open(dir.path(), config(max, Duration::from_secs(60))).unwrap();
    // Twice what fits, sent while nothing drains: the sender blocks once the spool is full.
    let total = 130;
    let sender = {
        let p = spool.producer();
        tokio::spawn(async move {
            for i in 0..total {
                p.send(Topic::Logs, big(i)).await?;
            }
            Ok::<_, Error>(())
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while spool.bytes() + 2 * 1100 < max {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool never filled"
        );
        tokio::task::yield_now().await;
    }
    assert!(!sender.is_finished(), "every send fitted in a full spool");
    assert!(spool.bytes() <= max);
    let inner = Flaky::new(0);
    spool.start_drain(inner.clone()).unwrap();
    sender.await.unwrap().unwrap();
    inner.wait_for(total).await;
    let expected: Vec<String> = (0..total).map(|i| format!("{i:06}")).collect();
    let got: Vec<String> = inner
        .payloads(Topic::Logs)
        .into_iter()
        .map(|p| p[..6].to_owned())
        .collect();
    assert_eq!(got, expected);
    // Every closed segment was drained: the log's writer deletes them after the commits, leaving
    // the active one.
    let segments = || std::fs::read_dir(dir.path().join("logs")).unwrap().count();
    while segments() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} segments, {} bytes left after draining",
            segments(),
            spool.bytes()
        );
        spool.inner.log.maintain();
        tokio::task::yield_now().await;
    }
    // (A segment rolls at the first append past its size, so it holds a little more.)
    assert!(spool.bytes() < max / 4, "{} bytes", spool.bytes());
    spool.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_for_good_is_dropped_and_counted_the_rest_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), config(1 << 30, Duration::from_secs(10))).unwrap();
    let inner = Flaky::new(0);
    spool.start_drain(inner.clone()).unwrap();
    let p = spool.producer();
    let dropped = || {
        crate::metrics::SPOOL_DROPPED
            .with_label_values(&["spans"])
            .get()
    };
    let before = dropped();
    let mut records = batch("s", 0..10);
    records.insert(4, Record::new("k", "poison"));
    p.send(Topic::Spans, records).await.unwrap();
    p.send(Topic::Spans, batch("s", 10..20)).await.unwrap();
    // The first four arrive twice (with the failed batch, then one by one).
    inner.wait_for(24).await;
    spool.close(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        first_occurrences(inner.payloads(Topic::Spans)),
        names("s", 0..20)
    );
    assert_eq!(dropped() - before, 1);
    assert_eq!(spool.backlog(Topic::Spans), 0);
}

#[test]
fn config_validation_names_the_key() {
    assert!(SpoolConfig::default().validate().is_ok());
    let err = config(1000, Duration::from_secs(1)).validate().unwrap_err();
    assert!(err.starts_with("bus.kafka.spool.max_bytes: "), "{err}");
    let err = config(1 << 20, Duration::from_secs(7200))
        .validate()
        .unwrap_err();
    assert!(err.starts_with("bus.kafka.spool.full_wait: "), "{err}");
    let parsed: SpoolConfig = serde_json::from_str(r#"{"max_bytes":"2 GiB"}"#).unwrap();
    assert_eq!(parsed.max_bytes, ByteSize::gib(2));
    assert!(parsed.enabled);
    assert!(serde_json::from_str::<SpoolConfig>(r#"{"max_byte":"2 GiB"}"#).is_err());
}

//! The Kafka bus against a real Kafka-protocol broker (tansu, started by the test).
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bus::kafka::{KafkaBus, KafkaConfig};
use bus::{Bus, Consumer, Delivery, Record, Topic};
use tests::Tansu;

fn config(brokers: String, prefix: &str) -> KafkaConfig {
    KafkaConfig {
        brokers,
        topic_prefix: prefix.to_owned(),
        partitions: 4,
        ..KafkaConfig::default()
    }
}

fn records(range: std::ops::Range<u64>) -> Vec<Record> {
    range
        .map(|i| Record::new(format!("key-{}", i % 17), format!("{i:010}")))
        .collect()
}

fn seq(d: &Delivery) -> u64 {
    std::str::from_utf8(&d.payload).unwrap().parse().unwrap()
}

/// Polls until `want` records arrived in total or `timeout` passed, committing after each poll.
async fn consume_until(c: &mut dyn Consumer, want: usize, timeout: Duration) -> Vec<Delivery> {
    consume_shared(c, &AtomicUsize::new(0), want, timeout).await
}

/// Like [`consume_until`], for several members of a group counting together in `seen`.
async fn consume_shared(
    c: &mut dyn Consumer,
    seen: &AtomicUsize,
    want: usize,
    timeout: Duration,
) -> Vec<Delivery> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while seen.load(Ordering::SeqCst) < want && Instant::now() < deadline {
        let got = c.poll(500, Duration::from_millis(500)).await.unwrap();
        if !got.is_empty() {
            c.commit().await.unwrap();
        }
        seen.fetch_add(got.len(), Ordering::SeqCst);
        out.extend(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_in_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path()).unwrap();
    let bus = KafkaBus::connect(config(broker.brokers(), "t1."))
        .await
        .unwrap();
    let producer = bus.producer().unwrap();
    let total = 3000u64;
    for chunk in (0..total).step_by(500) {
        producer
            .send(Topic::Metrics, records(chunk..chunk + 500))
            .await
            .unwrap();
    }

    // Two members of one group split the partitions between them.
    let mut a = bus.consumer("stores", &[Topic::Metrics]).await.unwrap();
    let mut b = bus.consumer("stores", &[Topic::Metrics]).await.unwrap();
    let seen = AtomicUsize::new(0);
    let (ra, rb) = tokio::join!(
        consume_shared(a.as_mut(), &seen, total as usize, Duration::from_secs(40)),
        consume_shared(b.as_mut(), &seen, total as usize, Duration::from_secs(40)),
    );
    let all: Vec<&Delivery> = ra.iter().chain(rb.iter()).collect();
    let unique: BTreeSet<u64> = all.iter().map(|d| seq(d)).collect();
    assert_eq!(unique, (0..total).collect(), "every record, once");
    assert_eq!(all.len(), total as usize, "no duplicates within the group");

    // Records of one key share a partition and keep their order.
    let mut by_key: BTreeMap<&[u8], Vec<&Delivery>> = BTreeMap::new();
    for d in &all {
        by_key.entry(&d.key[..]).or_default().push(d);
    }
    assert_eq!(by_key.len(), 17);
    for (key, ds) in by_key {
        let partitions: BTreeSet<i32> = ds.iter().map(|d| d.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "key {key:?} spread over {partitions:?}"
        );
        let mut ds = ds;
        ds.sort_by_key(|d| d.offset);
        assert!(
            ds.windows(2).all(|w| seq(w[0]) < seq(w[1])),
            "order of {key:?}"
        );
    }
    drop((a, b));

    // The group committed everything: a new member of it gets nothing, another group everything.
    let mut again = bus.consumer("stores", &[Topic::Metrics]).await.unwrap();
    assert!(
        consume_until(again.as_mut(), 1, Duration::from_secs(8))
            .await
            .is_empty()
    );
    let mut other = bus.consumer("other", &[Topic::Metrics]).await.unwrap();
    let got = consume_until(other.as_mut(), total as usize, Duration::from_secs(40)).await;
    assert_eq!(got.len(), total as usize);
    bus.close().await.unwrap();
    assert!(matches!(
        producer.send(Topic::Metrics, records(0..1)).await,
        Err(bus::Error::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start(dir.path()).unwrap();
    let bus = KafkaBus::connect(config(broker.brokers(), "t2."))
        .await
        .unwrap();
    let producer = bus.producer().unwrap();
    producer.send(Topic::Logs, records(0..1000)).await.unwrap();

    // A consumer commits part of the stream before the broker goes down.
    let mut c = bus.consumer("logstore", &[Topic::Logs]).await.unwrap();
    let before = consume_until(c.as_mut(), 400, Duration::from_secs(30)).await;
    assert!(before.len() >= 400);
    drop(c);

    broker.kill();
    // Sends issued while the broker is down are acknowledged once it is back.
    let sender = {
        let producer = Arc::clone(&producer);
        tokio::spawn(async move { producer.send(Topic::Logs, records(1000..2000)).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !sender.is_finished(),
        "acknowledged while the broker was down"
    );
    broker.restart().unwrap();
    tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("send not acknowledged after the broker came back")
        .unwrap()
        .unwrap();
    producer
        .send(Topic::Logs, records(2000..2500))
        .await
        .unwrap();

    // The group resumes after its commit; together nothing is missing.
    let mut c = bus.consumer("logstore", &[Topic::Logs]).await.unwrap();
    let after = consume_until(c.as_mut(), 2500 - before.len(), Duration::from_secs(60)).await;
    let seen_before: BTreeSet<u64> = before.iter().map(seq).collect();
    let seen_after: BTreeSet<u64> = after.iter().map(seq).collect();
    assert!(
        seen_before.is_disjoint(&seen_after),
        "committed records delivered again"
    );
    let all: BTreeSet<u64> = seen_before.union(&seen_after).copied().collect();
    assert_eq!(all, (0..2500).collect(), "records lost across the restart");
    bus.close().await.unwrap();
}

use std::time::Duration;

use super::*;

fn small() -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes: ByteSize::kib(4),
        ..EmbeddedConfig::default()
    }
}

fn rec(i: u32) -> Record {
    Record::new(
        format!("k{}", i % 7),
        format!("payload-{i:06}-{}", "x".repeat(100)),
    )
}

async fn drain(c: &mut dyn Consumer) -> Vec<Delivery> {
    let mut all = Vec::new();
    loop {
        let got = c.poll(500, Duration::from_millis(50)).await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

fn payload_ids(d: &[Delivery]) -> Vec<u32> {
    d.iter()
        .map(|d| {
            let s = std::str::from_utf8(&d.payload).unwrap();
            s[8..14].parse().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn consumer_resumes_after_commit_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = EmbeddedBus::open(dir.path(), small()).unwrap();
        let p = bus.producer().unwrap();
        for i in 0..20 {
            p.send(Topic::Logs, (i * 10..i * 10 + 10).map(rec).collect())
                .await
                .unwrap();
        }
        let mut c = bus.consumer("store", &[Topic::Logs]).await.unwrap();
        let first = c.poll(50, Duration::from_secs(1)).await.unwrap();
        assert_eq!(payload_ids(&first), (0..50).collect::<Vec<_>>());
        c.commit().await.unwrap();
        // Read more without committing: these must come again after the restart.
        let uncommitted = c.poll(30, Duration::from_secs(1)).await.unwrap();
        assert_eq!(uncommitted.len(), 30);
        drop(c);
        bus.close().await.unwrap();
    }
    let bus = EmbeddedBus::open(dir.path(), small()).unwrap();
    let mut c = bus.consumer("store", &[Topic::Logs]).await.unwrap();
    let rest = drain(c.as_mut()).await;
    assert_eq!(payload_ids(&rest), (50..200).collect::<Vec<_>>());
    // Offsets are contiguous and the 4 KiB segments were rolled many times.
    assert!(rest.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    assert!(std::fs::read_dir(dir.path().join("logs")).unwrap().count() > 5);
    // A new group starts from the beginning.
    let mut other = bus.consumer("other", &[Topic::Logs]).await.unwrap();
    assert_eq!(drain(other.as_mut()).await.len(), 200);
}

#[tokio::test]
async fn topics_are_separate_and_polled_fairly() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let p = bus.producer().unwrap();
    p.send(Topic::Metrics, (0..10).map(rec).collect())
        .await
        .unwrap();
    p.send(Topic::Spans, (100..103).map(rec).collect())
        .await
        .unwrap();
    let mut c = bus
        .consumer("g", &[Topic::Metrics, Topic::Spans])
        .await
        .unwrap();
    let all = drain(c.as_mut()).await;
    let metrics: Vec<_> = all
        .iter()
        .filter(|d| d.topic == Topic::Metrics)
        .cloned()
        .collect();
    let spans: Vec<_> = all
        .iter()
        .filter(|d| d.topic == Topic::Spans)
        .cloned()
        .collect();
    assert_eq!(payload_ids(&metrics), (0..10).collect::<Vec<_>>());
    assert_eq!(payload_ids(&spans), vec![100, 101, 102]);
    let mut logs = bus.consumer("logs-only", &[Topic::Logs]).await.unwrap();
    assert!(drain(logs.as_mut()).await.is_empty());
}

#[tokio::test]
async fn poll_wakes_when_records_arrive_and_times_out_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let mut c = bus.consumer("g", &[Topic::Events]).await.unwrap();
    assert!(
        c.poll(10, Duration::from_millis(20))
            .await
            .unwrap()
            .is_empty()
    );
    let p = bus.producer().unwrap();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.send(Topic::Events, vec![rec(1)]).await.unwrap();
    });
    let got = c.poll(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(payload_ids(&got), vec![1]);
    sender.await.unwrap();
}

#[tokio::test]
async fn close_flushes_everything_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let p = bus.producer().unwrap();
    // Sends in flight, not awaited by their producers, when the bus is closed.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.send(Topic::Metrics, (i * 10..i * 10 + 10).map(rec).collect())
                    .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    bus.close().await.unwrap();
    let mut acked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => acked += 10,
            Err(Error::Closed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(matches!(
        p.send(Topic::Metrics, vec![rec(0)]).await,
        Err(Error::Closed)
    ));
    drop(bus);
    let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let mut c = bus.consumer("g", &[Topic::Metrics]).await.unwrap();
    assert_eq!(drain(c.as_mut()).await.len(), acked);
    assert!(acked > 0);
}

#[tokio::test]
async fn one_member_per_group_and_one_process_per_dir() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let c = bus.consumer("g", &[Topic::Logs]).await.unwrap();
    assert!(matches!(
        bus.consumer("g", &[Topic::Logs]).await,
        Err(Error::GroupBusy(_))
    ));
    drop(c);
    assert!(bus.consumer("g", &[Topic::Logs]).await.is_ok());
    assert!(matches!(
        bus.consumer("../etc", &[Topic::Logs]).await,
        Err(Error::InvalidGroup(_))
    ));
    let second = EmbeddedBus::open(dir.path(), EmbeddedConfig::default());
    assert!(
        second.is_err(),
        "a second open of the same bus dir must fail"
    );
}

#[tokio::test]
async fn retention_by_size_drops_old_segments_and_counts_unconsumed() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        segment_bytes: ByteSize::kib(4),
        retention_bytes: ByteSize::kib(16),
        ..EmbeddedConfig::default()
    };
    let bus = EmbeddedBus::open(dir.path(), config).unwrap();
    let p = bus.producer().unwrap();
    // A group that commits early and then falls behind.
    let mut slow = bus.consumer("slow", &[Topic::Logs]).await.unwrap();
    p.send(Topic::Logs, vec![rec(0)]).await.unwrap();
    slow.poll(1, Duration::from_secs(1)).await.unwrap();
    slow.commit().await.unwrap();
    drop(slow);
    for i in 0..40 {
        p.send(Topic::Logs, (i * 10 + 1..i * 10 + 11).map(rec).collect())
            .await
            .unwrap();
    }
    let segs = bus.inner.topics[&Topic::Logs].segments();
    let total: u64 = segs.iter().map(|s| s.bytes).sum();
    assert!(
        total <= ByteSize::kib(16).as_u64() + ByteSize::kib(4).as_u64(),
        "{total}"
    );
    assert!(segs[0].base > 0, "oldest segments must be gone");
    let expired = crate::metrics::EXPIRED_UNCONSUMED
        .with_label_values(&["logs", "slow"])
        .get();
    assert!(expired > 0);
    // The lagging group resumes at the oldest kept record, in order.
    let mut slow = bus.consumer("slow", &[Topic::Logs]).await.unwrap();
    let rest = drain(slow.as_mut()).await;
    assert_eq!(rest[0].offset as u64, segs[0].base);
    assert_eq!(rest.last().unwrap().offset, 400);
}

#[test]
fn config_validation_names_the_key() {
    let bad = EmbeddedConfig {
        segment_bytes: ByteSize::b(10),
        ..EmbeddedConfig::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("bus.embedded.segment_bytes")
    );
    let bad = EmbeddedConfig {
        retention_bytes: ByteSize::mib(1),
        ..EmbeddedConfig::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("bus.embedded.retention_bytes")
    );
}

#[tokio::test]
async fn retention_by_age_deletes_old_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = EmbeddedBus::open(dir.path(), small()).unwrap();
        let p = bus.producer().unwrap();
        for i in 0..10 {
            p.send(Topic::Events, (i * 10..i * 10 + 10).map(rec).collect())
                .await
                .unwrap();
        }
        bus.close().await.unwrap();
    }
    // Age every segment by two days, as if the bus had been idle that long.
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    let tdir = dir.path().join("events");
    let before = segment::list_segments(&tdir).unwrap();
    assert!(before.len() > 3);
    for s in &before {
        let f = File::options()
            .write(true)
            .open(segment::segment_path(&tdir, s.base))
            .unwrap();
        f.set_modified(two_days_ago).unwrap();
    }
    let bus = EmbeddedBus::open(dir.path(), small()).unwrap();
    // Retention runs as the writer starts; a flush orders this test after it.
    bus.producer().unwrap().flush().await.unwrap();
    let after = bus.inner.topics[&Topic::Events].segments();
    // Only the active (newest) segment is kept, whatever its age.
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].base, before.last().unwrap().base);
    assert_eq!(segment::list_segments(&tdir).unwrap().len(), 1);
}

#[tokio::test]
async fn committed_retention_keeps_what_any_group_has_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        segment_bytes: ByteSize::kib(4),
        retention_bytes: ByteSize::kib(4),
        ..EmbeddedConfig::default()
    };
    let policy = Policy {
        kind: "spool",
        retention: Retention::Committed,
    };
    let bus = EmbeddedBus::open_with(dir.path(), config, policy).unwrap();
    let p = bus.producer().unwrap();
    for i in 0..40 {
        p.send(Topic::Logs, (i * 10..i * 10 + 10).map(rec).collect())
            .await
            .unwrap();
    }
    let segments = || bus.inner.topics[&Topic::Logs].segments();
    let before = segments();
    assert!(before.len() > 5);
    // Far over retention_bytes, but no group committed: nothing goes.
    bus.maintain();
    p.flush().await.unwrap();
    assert_eq!(segments()[0].base, 0);

    // Two groups: segments go only once both are past them.
    let mut fast = bus.embedded_consumer("fast", &[Topic::Logs]).unwrap();
    let mut slow = bus.embedded_consumer("slow", &[Topic::Logs]).unwrap();
    assert_eq!(drain(&mut fast).await.len(), 400);
    fast.commit().await.unwrap();
    slow.poll(before[2].base as usize, Duration::from_secs(1))
        .await
        .unwrap();
    slow.commit().await.unwrap();
    bus.maintain();
    p.flush().await.unwrap();
    assert_eq!(
        segments()[0].base,
        before[2].base,
        "the slow group's records"
    );
    assert_eq!(drain(&mut slow).await.len() as u64, 400 - before[2].base);
    slow.commit().await.unwrap();
    bus.maintain();
    p.flush().await.unwrap();
    assert_eq!(segments().len(), 1, "only the active segment is left");
}

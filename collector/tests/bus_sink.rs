//! The collection loop through the real embedded bus: a cgroup fixture tree is collected, shipped
//! by the `BusSink`, consumed back and decoded.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus::embedded::{EmbeddedBus, EmbeddedConfig};
use bus::proto::{MetricsBatch, labels_key};
use bus::{Bus, Topic};
use collector::cgroup::{CgroupSource, Hierarchies};
use collector::{BusSink, Collector};
use prost::Message;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn write(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

#[tokio::test]
async fn ticks_reach_the_bus_keyed_per_container() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = tmp.path().join("cgroup");
    write(&cg, &[("cgroup.controllers", "cpu memory\n")]);
    for id in [ID.to_owned(), ID.replace('0', "e")] {
        write(
            &cg.join(format!("system.slice/docker-{id}.scope")),
            &[
                (
                    "cpu.stat",
                    "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
                ),
                ("memory.current", "4096\n"),
            ],
        );
    }
    let bus = EmbeddedBus::open(&tmp.path().join("bus"), EmbeddedConfig::default()).unwrap();
    let sink = Arc::new(BusSink::new(bus.producer().unwrap(), "team-a"));
    let mut collector = Collector::new(sink, Duration::from_secs(10));
    collector.add_source(Box::new(CgroupSource::without_names(
        Hierarchies::from_layout(&cg),
        tmp.path().join("proc"),
        false,
    )));
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for i in 0..2 {
        let report = collector
            .tick(
                now + Duration::from_secs(10 * i),
                tokio::time::Instant::now() + Duration::from_secs(10),
            )
            .await;
        assert!(report.sent);
        assert_eq!(report.collected.exported, 2);
    }

    let mut consumer = bus.consumer("test", &[Topic::Metrics]).await.unwrap();
    let deliveries = consumer.poll(100, Duration::from_secs(5)).await.unwrap();
    assert_eq!(deliveries.len(), 4, "one record per container and tick");
    let mut usage = vec![];
    for d in &deliveries {
        let batch = MetricsBatch::decode(d.payload.as_ref()).unwrap();
        assert_eq!(batch.tenant, "team-a");
        // The key is the container's identity labels' key: equal for all its series.
        let id_label: Vec<_> = batch.series[0]
            .labels
            .iter()
            .filter(|l| l.name == "id" || l.name == "container_id")
            .cloned()
            .collect();
        assert_eq!(d.key, labels_key("team-a", &id_label));
        for s in &batch.series {
            let name = &s
                .labels
                .iter()
                .find(|l| l.name == "__name__")
                .unwrap()
                .value;
            if name == "container_cpu_usage_seconds_total" {
                usage.push((s.samples[0].timestamp, s.samples[0].value));
            }
        }
    }
    usage.sort_by_key(|u| u.0);
    assert_eq!(
        usage,
        vec![
            (1_800_000_000_000, 1.5),
            (1_800_000_000_000, 1.5),
            (1_800_000_010_000, 1.5),
            (1_800_000_010_000, 1.5)
        ]
    );
    bus.close().await.unwrap();
}

#[tokio::test]
async fn the_configured_collector_reads_this_host() {
    let sink = Arc::new(collector::MemorySink::new());
    let bad = collector::CollectorConfig {
        interval: Duration::from_millis(1),
        ..Default::default()
    };
    assert!(matches!(
        collector::cgroup_collector(&bad, sink.clone()),
        Err(collector::Error::Config(m)) if m.starts_with("collector.interval")
    ));
    if !Path::new("/sys/fs/cgroup").is_dir() {
        eprintln!("SKIP: no /sys/fs/cgroup");
        return;
    }
    let config = collector::CollectorConfig {
        all_cgroups: true,
        ..Default::default()
    };
    let c = collector::cgroup_collector(&config, sink.clone()).unwrap();
    let report = c
        .tick(
            SystemTime::now(),
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await;
    assert!(report.sent);
    // At least the root cgroup, with its CPU usage.
    assert!(report.collected.exported >= 1);
    let got = sink.take();
    assert!(got.iter().any(|g| g.series.iter().any(|s| {
        s.labels
            .iter()
            .any(|l| l.value == "container_cpu_usage_seconds_total")
    })));
}

//! The access-log pipeline on the embedded bus: lines arrive on the logs topic with their fields,
//! RED samples on the metrics topic, and a restart ships nothing twice.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, SystemTime};

use bus::embedded::{EmbeddedBus, EmbeddedConfig};
use bus::proto::{LogsBatch, MetricsBatch};
use bus::{Bus, Topic};
use collector::accesslog::{AccessLog, AccessLogConfig, AccessLogSource};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_and_samples_reach_the_bus_once_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("access.log");
    let write = |from: usize, to: usize| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        for i in from..to {
            writeln!(
                f,
                r#"10.0.0.{} - - [10/Oct/2026:13:55:36 +0000] "GET /r/{i} HTTP/1.1" 200 {i} "-" "t""#,
                i % 250
            )
            .unwrap();
        }
    };
    let cfg = AccessLogConfig {
        sources: vec![AccessLogSource {
            include: vec![log.to_string_lossy().into_owned()],
            ..Default::default()
        }],
        tenant: "team-a".into(),
        ..Default::default()
    };
    let bus = EmbeddedBus::open(&tmp.path().join("bus"), EmbeddedConfig::default()).unwrap();

    let mut seen_lines = Vec::new();
    let mut last_total = 0.0;
    let mut consumer = bus
        .consumer("test", &[Topic::Logs, Topic::Metrics])
        .await
        .unwrap();
    for (from, to) in [(0, 100), (100, 250)] {
        write(from, to);
        let al = AccessLog::open(&cfg, tmp.path(), SystemTime::now()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(al.run_on_bus(bus.producer().unwrap(), async {
            let _ = rx.await;
        }));
        // Bounded: until every line so far and a sample counting them have arrived.
        for _ in 0..200 {
            for d in consumer
                .poll(1000, Duration::from_millis(50))
                .await
                .unwrap()
            {
                match d.topic {
                    Topic::Logs => {
                        let b = LogsBatch::decode(d.payload.as_ref()).unwrap();
                        assert_eq!(b.tenant, "team-a");
                        for s in b.streams {
                            assert!(
                                s.labels
                                    .iter()
                                    .any(|l| l.name == "job" && l.value == "access-log")
                            );
                            seen_lines.extend(s.entries.into_iter().map(|e| {
                                assert!(e.fields.iter().any(|f| f.name == "uri"));
                                e.line
                            }));
                        }
                    }
                    Topic::Metrics => {
                        let b = MetricsBatch::decode(d.payload.as_ref()).unwrap();
                        for s in b.series {
                            if s.labels[0].value == "sextant_http_requests_total" {
                                last_total = s.samples[0].value;
                            }
                        }
                    }
                    _ => unreachable!(),
                }
            }
            if seen_lines.len() >= to && last_total as usize == to {
                break;
            }
        }
        consumer.commit().await.unwrap();
        let _ = tx.send(());
        task.await.unwrap();
        assert_eq!(seen_lines.len(), to);
        assert_eq!(last_total as usize, to);
    }
    let want: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(seen_lines, want);
    bus.close().await.unwrap();
}

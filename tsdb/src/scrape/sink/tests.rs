use std::sync::Mutex;

use proptest::prelude::*;

use super::*;
use crate::ingest;
use crate::storage::{Sample, stale_nan};

fn series(name: &str, instance: &str, points: &[(i64, f64)]) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::from_pairs([("__name__", name), ("instance", instance), ("job", "app")]),
        samples: points.iter().map(|&(t, v)| Sample { t, v }).collect(),
    }
}

fn target(instance: &str) -> Labels {
    Labels::from_pairs([("instance", instance), ("job", "app")])
}

/// The ingest decoder's view of `records`, tenant by tenant.
fn decoded(records: &[Record]) -> std::collections::BTreeMap<String, Vec<SeriesSamples>> {
    ingest::decode(records.iter().map(|r| &r.payload[..]))
        .into_iter()
        .map(|(tenant, tb)| (tenant, tb.series))
        .collect()
}

/// Compares values bit for bit (staleness markers are NaNs), except that -0 arrives as 0:
/// proto3 leaves a zero out of the wire, as Prometheus's remote write does.
fn same(a: &[SeriesSamples], b: &[SeriesSamples]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.labels == y.labels
                && x.samples.len() == y.samples.len()
                && x.samples.iter().zip(&y.samples).all(|(p, q)| {
                    p.t == q.t && (p.v.to_bits() == q.v.to_bits() || p.v == 0.0 && q.v == 0.0)
                })
        })
}

/// A producer that records what it is sent and can be told to fail.
#[derive(Debug, Default)]
struct Recorder {
    sent: Mutex<Vec<Record>>,
    fail: Mutex<usize>,
}

#[async_trait]
impl Producer for Recorder {
    async fn send(&self, topic: Topic, records: Vec<Record>) -> bus::Result<()> {
        assert_eq!(topic, Topic::Metrics);
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(bus::Error::Closed);
        }
        self.sent.lock().unwrap().extend(records);
        Ok(())
    }
    async fn flush(&self) -> bus::Result<()> {
        Ok(())
    }
}

#[test]
fn a_scrape_round_trips_through_the_ingest_decoder() {
    let sink = BusSink::new(Arc::new(Recorder::default()));
    let batch = vec![
        series("jobs_total", "a:1", &[(1_000, 42.0)]),
        series("gone_total", "a:1", &[(1_000, stale_nan())]),
        series("up", "a:1", &[(1_000, 1.0)]),
    ];
    let records = sink.records("team-a", &target("a:1"), &batch);
    assert_eq!(records.len(), 1, "one record per scrape");
    let got = decoded(&records);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["team-a"]);
    assert!(same(&got["team-a"], &batch), "{got:?}");
    // Stays a staleness marker, not any NaN.
    assert!(crate::storage::is_stale_nan(got["team-a"][1].samples[0].v));
}

#[test]
fn keys_follow_the_target_and_the_tenant() {
    let sink = BusSink::new(Arc::new(Recorder::default()));
    let one = [series("up", "a:1", &[(1, 1.0)])];
    let other = [series("x", "a:1", &[(2, 1.0)])];
    let k = |tenant: &str, t: &str, b: &[SeriesSamples]| {
        sink.records(tenant, &target(t), b)[0].key.clone()
    };
    // Every scrape of a target shares a key, whatever its series.
    assert_eq!(k("t", "a:1", &one), k("t", "a:1", &other));
    assert_ne!(k("t", "a:1", &one), k("t", "b:1", &one));
    assert_ne!(k("t", "a:1", &one), k("u", "a:1", &one));
    assert!(sink.records("t", &target("a:1"), &[]).is_empty());
}

#[test]
fn a_large_scrape_is_split_into_records_with_one_key_in_order() {
    let mut sink = BusSink::new(Arc::new(Recorder::default()));
    sink.max_record_bytes = 300;
    let batch: Vec<SeriesSamples> = (0..50)
        .map(|i| series(&format!("metric_{i}"), "a:1", &[(1_000, f64::from(i))]))
        .collect();
    let records = sink.records("", &target("a:1"), &batch);
    assert!(records.len() > 5, "{} records", records.len());
    assert!(records.iter().all(|r| r.key == records[0].key));
    assert!(records.iter().all(|r| r.payload.len() <= 300));
    // The empty tenant is the default one, as the ingest consumer reads it.
    let got = decoded(&records);
    assert!(same(&got[crate::DEFAULT_TENANT], &batch));
}

#[tokio::test]
async fn write_sends_and_reports_the_samples_and_a_bus_error_is_retryable() {
    let producer = Arc::new(Recorder::default());
    let sink = BusSink::new(producer.clone());
    let batch: Arc<[SeriesSamples]> = vec![
        series("a", "a:1", &[(1, 1.0), (2, 2.0)]),
        series("b", "a:1", &[(1, 1.0)]),
    ]
    .into();
    *producer.fail.lock().unwrap() = 1;
    let err = sink
        .write("t", &target("a:1"), batch.clone())
        .await
        .unwrap_err();
    assert!(err.retryable(), "{err}");
    let report = sink.write("t", &target("a:1"), batch).await.unwrap();
    assert_eq!(report.accepted, 3);
    assert_eq!(producer.sent.lock().unwrap().len(), 1);
    assert!(!SinkError::Store(StorageError::Internal("disk".into())).retryable());
}

proptest! {
    #[test]
    fn any_batch_round_trips(
        raw in prop::collection::vec(
            (
                prop::collection::btree_map("[a-z_]{1,8}", "[ -~]{1,12}", 0..4),
                prop::collection::vec((any::<i64>(), any::<f64>()), 1..4),
            ),
            0..30,
        ),
        limit in 64usize..4096,
    ) {
        let batch: Vec<SeriesSamples> = raw
            .into_iter()
            .enumerate()
            .map(|(i, (labels, points))| {
                let mut pairs: Vec<(String, String)> = labels.into_iter().collect();
                pairs.push(("__name__".into(), format!("m{i}")));
                SeriesSamples {
                    labels: Labels::from_pairs(pairs),
                    samples: points.into_iter().map(|(t, v)| Sample { t, v }).collect(),
                }
            })
            .collect();
        let mut sink = BusSink::new(Arc::new(Recorder::default()));
        sink.max_record_bytes = limit;
        let records = sink.records("p", &target("a:1"), &batch);
        let got = decoded(&records);
        let empty = Vec::new();
        prop_assert!(same(got.get("p").unwrap_or(&empty), &batch));
    }
}

//! The metrics topic of the bus into the store: what collectors ship reaches the tsdb here.
//!
//! At-least-once made idempotent: a poll's records are appended (durably, through the store's
//! WAL) before the group commits past them, so a crash re-delivers at most the uncommitted tail;
//! the store accepts a re-delivered sample (same series, time and value) silently, so a
//! re-delivery never shows up as a duplicate in query results. A record that cannot be decoded
//! can never succeed: it is counted, logged and committed past, never retried forever.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bus::Consumer;
use bus::proto::MetricsBatch;
use prost::Message;
use tokio::sync::watch;

use crate::DEFAULT_TENANT;
use crate::exemplar::{Exemplar, SeriesExemplars};
use crate::labels::Labels;
use crate::metrics;
use crate::storage::{AppendReport, Sample, SeriesSamples, StorageError, Tenants};

/// The consumer group the tsdb reads the metrics topic in.
pub const GROUP: &str = "tsdb";

/// Most records taken per poll (one append per tenant per poll).
const MAX_POLL: usize = 512;
const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// First wait after a failed append or poll; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Consumes the metrics topic into `tenants` until `stop` turns true (or its sender is dropped),
/// committing after every durable append. On stop, records polled but not yet stored are left
/// uncommitted for the next start. Failures of the bus or the store are logged and retried, never
/// fatal: at worst records are delivered again.
pub async fn run(
    mut consumer: Box<dyn Consumer>,
    tenants: Arc<dyn Tenants>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        let deliveries = tokio::select! {
            r = consumer.poll(MAX_POLL, POLL_TIMEOUT) => r,
            _ = stop.changed() => return,
        };
        let deliveries = match deliveries {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "polling the metrics topic failed; retrying");
                if sleep_or_stop(&mut stop, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        if deliveries.is_empty() {
            continue;
        }
        let batches = decode(deliveries.iter().map(|d| &d.payload[..]));
        // Retry the same decoded data until it is stored: the consumer has moved past it.
        loop {
            match append(&tenants, &batches).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "storing samples from the bus failed; retrying");
                    if sleep_or_stop(&mut stop, &mut backoff).await {
                        return;
                    }
                }
            }
        }
        backoff = MIN_BACKOFF;
        if let Err(e) = consumer.commit().await {
            // The records are stored; they come again after a restart and are absorbed then.
            tracing::warn!(error = %e, "committing the metrics topic failed");
        }
    }
}

/// Sleeps for `backoff` (then doubles it); true when `stop` fired meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// What the records of one poll hold for one tenant.
#[derive(Clone, Debug, Default)]
pub(crate) struct TenantBatch {
    pub(crate) series: Vec<SeriesSamples>,
    pub(crate) exemplars: Vec<SeriesExemplars>,
}

/// Decodes payloads into series and exemplars per tenant; undecodable payloads are counted and
/// skipped.
pub(crate) fn decode<'a>(
    payloads: impl Iterator<Item = &'a [u8]>,
) -> BTreeMap<String, TenantBatch> {
    let mut out: BTreeMap<String, TenantBatch> = BTreeMap::new();
    let (mut stored, mut bad) = (0u64, 0u64);
    for payload in payloads {
        let batch = match MetricsBatch::decode(payload) {
            Ok(b) => b,
            Err(e) => {
                bad += 1;
                tracing::error!(error = %e, bytes = payload.len(), "skipping an undecodable record of the metrics topic");
                continue;
            }
        };
        stored += 1;
        let tenant = if batch.tenant.is_empty() {
            DEFAULT_TENANT.to_string()
        } else {
            batch.tenant
        };
        let tb = out.entry(tenant).or_default();
        for ts in batch.series {
            let labels = Labels::from_pairs(ts.labels.into_iter().map(|l| (l.name, l.value)));
            if !ts.exemplars.is_empty() {
                tb.exemplars.push(SeriesExemplars {
                    labels: labels.clone(),
                    exemplars: ts
                        .exemplars
                        .into_iter()
                        .map(|e| Exemplar {
                            labels: Labels::from_pairs(
                                e.labels.into_iter().map(|l| (l.name, l.value)),
                            ),
                            value: e.value,
                            t: e.timestamp,
                            has_ts: e.has_timestamp,
                        })
                        .collect(),
                });
            }
            // A series sent for its exemplars alone has no samples to append.
            if !ts.samples.is_empty() {
                tb.series.push(SeriesSamples {
                    labels,
                    samples: ts
                        .samples
                        .into_iter()
                        .map(|s| Sample {
                            t: s.timestamp,
                            v: s.value,
                        })
                        .collect(),
                });
            }
        }
    }
    metrics::BUS_RECORDS
        .with_label_values(&["stored"])
        .inc_by(stored);
    metrics::BUS_RECORDS
        .with_label_values(&["undecodable"])
        .inc_by(bad);
    out
}

/// Appends every tenant's series, then its exemplars, off the async runtime (appends wait for
/// an fsync).
async fn append(
    tenants: &Arc<dyn Tenants>,
    batches: &BTreeMap<String, TenantBatch>,
) -> Result<(), StorageError> {
    for (tenant, tb) in batches {
        let store = tenants.tenant(tenant)?;
        let tb = tb.clone();
        let report = tokio::task::spawn_blocking(move || {
            let report = store.append(&tb.series)?;
            if !tb.exemplars.is_empty() {
                store.append_exemplars(&tb.exemplars)?;
            }
            Ok::<_, StorageError>(report)
        })
        .await
        .map_err(|e| StorageError::Internal(format!("append task failed: {e}")))??;
        count(tenant, &report);
    }
    Ok(())
}

fn count(tenant: &str, report: &AppendReport) {
    metrics::SAMPLES_INGESTED
        .with_label_values(&["bus"])
        .inc_by(report.accepted as u64);
    for (reason, n) in &report.rejected {
        metrics::INGEST_REJECTED
            .with_label_values(&["bus", reason.as_str()])
            .inc_by(*n as u64);
    }
    if let Some(first) = &report.first_rejection {
        tracing::warn!(
            tenant,
            rejected = report.rejected_total(),
            first = %first,
            "samples from the bus were rejected"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MatchOp, Matcher, MemTenants};
    use bus::proto::{Label, TimeSeries};
    use bus::{Bus, Record, Topic};

    fn batch(tenant: &str, job: &str, points: &[(i64, f64)]) -> Record {
        let b = MetricsBatch {
            tenant: tenant.into(),
            series: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    Label {
                        name: "job".into(),
                        value: job.into(),
                    },
                ],
                samples: points
                    .iter()
                    .map(|&(t, v)| bus::proto::Sample {
                        timestamp: t,
                        value: v,
                    })
                    .collect(),
                exemplars: Vec::new(),
            }],
        };
        Record::new(job.to_string(), b.encode_to_vec())
    }

    #[tokio::test]
    async fn exemplars_from_the_bus_reach_the_store_without_empty_series() {
        let series = SeriesExemplars {
            labels: Labels::from_pairs([("__name__", "req_total"), ("job", "api")]),
            exemplars: vec![Exemplar {
                labels: Labels::from_pairs([("trace_id", "abc123")]),
                value: 0.5,
                t: 1_000,
                has_ts: false,
            }],
        };
        let records =
            crate::scrape::sink::exemplar_records("team-a", std::slice::from_ref(&series));
        assert_eq!(records.len(), 1);
        let batches = decode(records.iter().map(|r| &r.payload[..]));
        let tb = &batches["team-a"];
        assert!(
            tb.series.is_empty(),
            "an exemplar-only series appends no samples"
        );
        assert_eq!(tb.exemplars, vec![series.clone()]);
        let tenants = Arc::new(MemTenants::new());
        append(&(tenants.clone() as Arc<dyn Tenants>), &batches)
            .await
            .unwrap();
        let m = Matcher::new(MatchOp::Equal, "job", "api").unwrap();
        let got = tenants
            .tenant("team-a")
            .unwrap()
            .select_exemplars(&[vec![m]], 0, 2_000)
            .unwrap();
        assert_eq!(got, vec![series]);
        // Nothing was stored as a series.
        let m = Matcher::new(MatchOp::Equal, "job", "api").unwrap();
        let stored = tenants
            .tenant("team-a")
            .unwrap()
            .select(&[m], i64::MIN, i64::MAX)
            .unwrap();
        assert!(stored.is_empty(), "{stored:?}");
    }

    fn select(tenants: &MemTenants, tenant: &str) -> Vec<SeriesSamples> {
        let m = Matcher::new(MatchOp::Equal, "__name__", "up").unwrap();
        tenants
            .tenant(tenant)
            .unwrap()
            .select(&[m], i64::MIN, i64::MAX)
            .unwrap()
    }

    /// Runs the loop until `want` samples are in the default tenant, then stops it.
    async fn drain(bus: &bus::embedded::EmbeddedBus, tenants: Arc<MemTenants>, want: usize) {
        let consumer = bus.consumer(GROUP, &[Topic::Metrics]).await.unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(consumer, tenants.clone() as Arc<dyn Tenants>, rx));
        for _ in 0..500 {
            let n: usize = select(&tenants, DEFAULT_TENANT)
                .iter()
                .map(|s| s.samples.len())
                .sum();
            if n >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn stores_per_tenant_skips_bad_records_and_absorbs_redelivery() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus::embedded::EmbeddedBus::open(dir.path(), Default::default()).unwrap();
        let producer = bus.producer().unwrap();
        let a = batch("", "a", &[(1000, 1.0), (2000, 2.0)]);
        producer
            .send(
                Topic::Metrics,
                vec![
                    a.clone(),
                    Record::new("x", vec![0xff, 0xff, 0xff]),
                    batch("team-b", "b", &[(1000, 5.0)]),
                    a, // re-delivered by a producer retry
                ],
            )
            .await
            .unwrap();
        let tenants = Arc::new(MemTenants::new());
        drain(&bus, tenants.clone(), 2).await;

        let got = select(&tenants, DEFAULT_TENANT);
        assert_eq!(got.len(), 1, "tenant b's series leaked: {got:?}");
        assert_eq!(
            got[0].samples,
            vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2000, v: 2.0 }]
        );
        assert_eq!(select(&tenants, "team-b")[0].samples.len(), 1);

        // Everything was committed: a new consumer of the group gets nothing more.
        let mut again = bus.consumer(GROUP, &[Topic::Metrics]).await.unwrap();
        let left = again.poll(10, Duration::from_millis(100)).await.unwrap();
        assert!(left.is_empty(), "uncommitted records: {}", left.len());
    }

    /// A store that always fails, counting the attempts.
    #[derive(Debug, Default)]
    struct Failing(std::sync::atomic::AtomicUsize);

    impl Tenants for Failing {
        fn tenant(&self, _: &str) -> Result<Arc<dyn crate::storage::Store>, StorageError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(StorageError::Internal("disk on fire".into()))
        }
    }

    #[tokio::test]
    async fn nothing_is_committed_while_the_store_fails() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus::embedded::EmbeddedBus::open(dir.path(), Default::default()).unwrap();
        let producer = bus.producer().unwrap();
        producer
            .send(Topic::Metrics, vec![batch("", "a", &[(1000, 1.0)])])
            .await
            .unwrap();
        let consumer = bus.consumer(GROUP, &[Topic::Metrics]).await.unwrap();
        let (tx, rx) = watch::channel(false);
        let failing = Arc::new(Failing::default());
        let task = tokio::spawn(run(consumer, failing.clone() as Arc<dyn Tenants>, rx));
        // Wait until the loop has retried the failed append at least once.
        while failing.0.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(true).unwrap();
        task.await.unwrap();

        let tenants = Arc::new(MemTenants::new());
        drain(&bus, tenants.clone(), 1).await;
        assert_eq!(select(&tenants, DEFAULT_TENANT)[0].samples.len(), 1);
    }
}

//! Where a scrape's batch goes: the [`ScrapeSink`] seam between the scrape loop and its output.
//!
//! - [`StoreSink`]: straight into a tenant's store (the server's `tsdb.scrape`, Prometheus's
//!   own behaviour: the WAL makes the batch durable before the loop goes on).
//! - [`BusSink`]: onto the bus's metrics topic as [`MetricsBatch`] records (the collector's
//!   `collector.scrape`, like a Prometheus agent remote-writing what it scrapes). The tsdb's
//!   [`crate::ingest`] consumer stores them.
//!
//! Why the bus sink lives here, in the tsdb crate, and not in the collector: the scrape loop,
//! the exposition parser and relabeling are tsdb code, and [`BusSink`] encodes exactly what
//! [`crate::ingest`] decodes; keeping the encoder beside its decoder lets one unit test prove
//! the round trip. The collector uses the scrape loop only through
//! [`super::Scraper::to_bus`], so it still never calls a store.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bus::proto::{Label as ProtoLabel, MetricsBatch, Sample as ProtoSample, TimeSeries};
use bus::{Producer, Record, Topic};
use prost::Message;

use crate::exemplar::SeriesExemplars;
use crate::labels::Labels;
use crate::metadata::Metadata;
use crate::storage::{AppendReport, SeriesSamples, StorageError, Tenants};

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store failed the append (nothing of the batch stored); not retried, as a disk
    /// that refuses now is unlikely to accept the same batch a moment later.
    #[error("storing scraped samples: {0}")]
    Store(#[from] StorageError),
    /// The bus did not acknowledge the records; retried (the tsdb absorbs duplicates).
    #[error("sending scraped samples to the bus: {0}")]
    Bus(#[from] bus::Error),
    /// The blocking append task failed.
    #[error("storing scraped samples: append task failed: {0}")]
    Task(String),
}

impl SinkError {
    /// Whether sending the same batch again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, SinkError::Bus(_))
    }
}

/// Receives each scrape's batch: its samples, report series and staleness markers.
#[async_trait]
pub trait ScrapeSink: Send + Sync + Debug {
    /// Short name: the `sink` label of the `sextant_tsdb_scrape_*` metrics (`store` or `bus`).
    fn name(&self) -> &'static str;

    /// Writes `batch` for `tenant`; `target` is the target's public labels (the partition key
    /// of the bus sink). Resolves once the batch is durable; the report tells which samples
    /// were accepted (everything, for the bus: the store decides later). The batch is shared
    /// so that a retry sends it again without a copy.
    async fn write(
        &self,
        tenant: &str,
        target: &Labels,
        batch: Arc<[SeriesSamples]>,
    ) -> Result<AppendReport, SinkError>;

    /// Writes a scrape's exemplars and metric metadata (the metadata only when it changed),
    /// after its samples. Sinks that cannot carry something drop it (the bus carries
    /// exemplars, not metadata).
    async fn write_annotations(
        &self,
        _tenant: &str,
        _exemplars: Vec<SeriesExemplars>,
        _metadata: Vec<(String, Metadata)>,
    ) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Appends into a tenant's store, on the blocking pool (a durable append waits for an fsync).
#[derive(Clone)]
pub struct StoreSink {
    tenants: Arc<dyn Tenants>,
}

impl Debug for StoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSink").finish_non_exhaustive()
    }
}

impl StoreSink {
    pub fn new(tenants: Arc<dyn Tenants>) -> StoreSink {
        StoreSink { tenants }
    }
}

#[async_trait]
impl ScrapeSink for StoreSink {
    fn name(&self) -> &'static str {
        "store"
    }

    async fn write(
        &self,
        tenant: &str,
        _target: &Labels,
        batch: Arc<[SeriesSamples]>,
    ) -> Result<AppendReport, SinkError> {
        let tenants = self.tenants.clone();
        let tenant = tenant.to_string();
        tokio::task::spawn_blocking(move || {
            tenants
                .tenant(&tenant)
                .and_then(|store| store.append(&batch))
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))?
        .map_err(SinkError::Store)
    }

    async fn write_annotations(
        &self,
        tenant: &str,
        exemplars: Vec<SeriesExemplars>,
        metadata: Vec<(String, Metadata)>,
    ) -> Result<(), SinkError> {
        let tenants = self.tenants.clone();
        let tenant = tenant.to_string();
        tokio::task::spawn_blocking(move || {
            let store = tenants.tenant(&tenant)?;
            if !metadata.is_empty() {
                store.record_metadata(metadata)?;
            }
            if !exemplars.is_empty() {
                let r = store.append_exemplars(&exemplars)?;
                let ooo = r
                    .rejected
                    .get(&crate::exemplar::ExemplarReject::OutOfOrder)
                    .copied()
                    .unwrap_or(0);
                // As Prometheus: reported only when every exemplar was out of order (otherwise
                // a partial update of exemplars already stored).
                if ooo > 0 && r.accepted == 0 {
                    tracing::debug!(tenant = %tenant, num_dropped = ooo,
                        "out-of-order scraped exemplars");
                }
            }
            Ok::<(), StorageError>(())
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))?
        .map_err(SinkError::Store)
    }
}

/// Largest encoded payload of one record: a large scrape is split into several records with
/// the same key (so they stay in order on one partition), below Kafka's default
/// `message.max.bytes` of about 1 MB.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// Sends each scrape to [`Topic::Metrics`]: [`MetricsBatch`] records keyed with
/// [`bus::proto::labels_key`] of the tenant and the target's labels, so that every series of a
/// target stays on one partition and its scrapes arrive in order (staleness markers after the
/// samples they end).
#[derive(Debug, Clone)]
pub struct BusSink {
    producer: Arc<dyn Producer>,
    max_record_bytes: usize,
}

impl BusSink {
    pub fn new(producer: Arc<dyn Producer>) -> BusSink {
        BusSink {
            producer,
            max_record_bytes: MAX_RECORD_BYTES,
        }
    }

    /// The records [`BusSink::write`] sends: one per scrape, more when the scrape's payload
    /// exceeds the record size limit; none for an empty batch.
    pub fn records(&self, tenant: &str, target: &Labels, batch: &[SeriesSamples]) -> Vec<Record> {
        let key = bus::proto::labels_key(tenant, &to_proto_labels(target));
        let mut records = Vec::new();
        let mut series: Vec<TimeSeries> = Vec::new();
        let mut bytes = 0usize;
        for s in batch {
            let ts = TimeSeries {
                labels: to_proto_labels(&s.labels),
                samples: s
                    .samples
                    .iter()
                    .map(|p| ProtoSample {
                        value: p.v,
                        timestamp: p.t,
                    })
                    .collect(),
                exemplars: Vec::new(),
            };
            // Field tag, length prefix and the message.
            let len = ts.encoded_len() + 6;
            if !series.is_empty() && bytes + len > self.max_record_bytes {
                records.push(record(tenant, &key, std::mem::take(&mut series)));
                bytes = 0;
            }
            bytes += len;
            series.push(ts);
        }
        if !series.is_empty() {
            records.push(record(tenant, &key, series));
        }
        records
    }
}

/// The records carrying a scrape's exemplars: series without samples, keyed by the first
/// series (exemplars need no order with the samples; the store checks each on its own).
pub fn exemplar_records(tenant: &str, exemplars: &[SeriesExemplars]) -> Vec<Record> {
    let Some(first) = exemplars.first() else {
        return Vec::new();
    };
    let key = bus::proto::labels_key(tenant, &to_proto_labels(&first.labels));
    let series = exemplars
        .iter()
        .filter(|s| !s.exemplars.is_empty())
        .map(|s| TimeSeries {
            labels: to_proto_labels(&s.labels),
            samples: Vec::new(),
            exemplars: s
                .exemplars
                .iter()
                .map(|e| bus::proto::Exemplar {
                    labels: to_proto_labels(&e.labels),
                    value: e.value,
                    timestamp: e.t,
                    has_timestamp: e.has_ts,
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    if series.is_empty() {
        return Vec::new();
    }
    vec![record(tenant, &key, series)]
}

fn record(tenant: &str, key: &bytes::Bytes, series: Vec<TimeSeries>) -> Record {
    let batch = MetricsBatch {
        tenant: tenant.to_string(),
        series,
    };
    Record::new(key.clone(), batch.encode_to_vec())
}

fn to_proto_labels(labels: &Labels) -> Vec<ProtoLabel> {
    labels
        .iter()
        .map(|l| ProtoLabel {
            name: l.name.to_string(),
            value: l.value.to_string(),
        })
        .collect()
}

#[async_trait]
impl ScrapeSink for BusSink {
    fn name(&self) -> &'static str {
        "bus"
    }

    async fn write(
        &self,
        tenant: &str,
        target: &Labels,
        batch: Arc<[SeriesSamples]>,
    ) -> Result<AppendReport, SinkError> {
        let samples = batch.iter().map(|s| s.samples.len()).sum();
        let records = self.records(tenant, target, &batch);
        if !records.is_empty() {
            self.producer.send(Topic::Metrics, records).await?;
        }
        Ok(AppendReport {
            accepted: samples,
            ..AppendReport::default()
        })
    }

    /// Sends the exemplars (the store's ingest stores them); metric metadata has no place in
    /// the bus's records and is dropped.
    async fn write_annotations(
        &self,
        tenant: &str,
        exemplars: Vec<SeriesExemplars>,
        _metadata: Vec<(String, Metadata)>,
    ) -> Result<(), SinkError> {
        let records = exemplar_records(tenant, &exemplars);
        if !records.is_empty() {
            self.producer.send(Topic::Metrics, records).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

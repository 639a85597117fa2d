//! Where the file pipelines' log lines go: the bus's logs topic, or memory in tests. (Samples
//! go through the collector's metrics [`crate::Sink`].)

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bus::proto::{LogStream, LogsBatch, labels_key};
use bus::{Producer, Record, Topic};
use prost::Message;

use crate::{Error, Result};

/// Line bytes per record, at most (a stream with more is split over several records, in order):
/// well under Kafka's default 1 MB message limit.
const RECORD_LINE_BYTES: usize = 512 * 1024;

/// Receives log streams.
#[async_trait]
pub trait LogsSink: Send + Sync + Debug {
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Delivers `streams`; resolves once they are durable. On error the caller retries all of
    /// them.
    async fn send(&self, streams: &[LogStream]) -> Result<()>;
}

/// Ships streams to [`Topic::Logs`] as [`LogsBatch`] records keyed by [`labels_key`] of the tenant
/// and the stream's labels, so that one stream stays in order on one partition.
#[derive(Debug)]
pub struct BusLogsSink {
    producer: Arc<dyn Producer>,
    tenant: String,
}

impl BusLogsSink {
    pub fn new(producer: Arc<dyn Producer>, tenant: impl Into<String>) -> Self {
        BusLogsSink {
            producer,
            tenant: tenant.into(),
        }
    }

    /// The records [`BusLogsSink::send`] appends for `streams`.
    pub fn records(&self, streams: &[LogStream]) -> Vec<Record> {
        let mut records = Vec::new();
        for s in streams {
            let key = labels_key(&self.tenant, &s.labels);
            let mut chunk = Vec::new();
            let mut bytes = 0;
            let mut push = |chunk: Vec<_>| {
                let batch = LogsBatch {
                    tenant: self.tenant.clone(),
                    streams: vec![LogStream {
                        labels: s.labels.clone(),
                        entries: chunk,
                    }],
                };
                records.push(Record::new(key.clone(), batch.encode_to_vec()));
            };
            for e in &s.entries {
                if bytes > 0 && bytes + e.line.len() > RECORD_LINE_BYTES {
                    push(std::mem::take(&mut chunk));
                    bytes = 0;
                }
                bytes += e.line.len();
                chunk.push(e.clone());
            }
            if !chunk.is_empty() {
                push(chunk);
            }
        }
        records
    }
}

#[async_trait]
impl LogsSink for BusLogsSink {
    fn name(&self) -> &'static str {
        "bus"
    }

    async fn send(&self, streams: &[LogStream]) -> Result<()> {
        let records = self.records(streams);
        if records.is_empty() {
            return Ok(());
        }
        self.producer
            .send(Topic::Logs, records)
            .await
            .map_err(Error::Bus)
    }
}

/// Keeps everything sent, in memory, for tests; can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryLogsSink {
    inner: Mutex<(Vec<LogStream>, usize)>,
}

impl MemoryLogsSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` sends fail.
    pub fn fail_next(&self, n: usize) {
        self.lock().1 = n;
    }

    /// Takes everything received so far.
    pub fn take(&self) -> Vec<LogStream> {
        std::mem::take(&mut self.lock().0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<LogStream>, usize)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl LogsSink for MemoryLogsSink {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn send(&self, streams: &[LogStream]) -> Result<()> {
        let mut inner = self.lock();
        if inner.1 > 0 {
            inner.1 -= 1;
            return Err(Error::Bus(bus::Error::Closed));
        }
        inner.0.extend(streams.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::proto::{Label, LogEntry};

    #[derive(Debug)]
    struct Nowhere;

    #[async_trait]
    impl Producer for Nowhere {
        async fn send(&self, _: Topic, _: Vec<Record>) -> bus::Result<()> {
            Ok(())
        }
        async fn flush(&self) -> bus::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn big_streams_are_split_in_order_under_one_key() {
        let sink = BusLogsSink::new(Arc::new(Nowhere), "t");
        let labels = vec![Label {
            name: "job".into(),
            value: "a".into(),
        }];
        let line = "x".repeat(1000);
        let entries: Vec<LogEntry> = (0..1200)
            .map(|i| LogEntry {
                timestamp_ns: i,
                line: line.clone(),
                fields: Vec::new(),
            })
            .collect();
        let records = sink.records(&[LogStream { labels, entries }]);
        assert_eq!(records.len(), 3);
        let mut ts = Vec::new();
        for r in &records {
            assert_eq!(r.key, records[0].key);
            let b = LogsBatch::decode(r.payload.as_ref()).unwrap();
            assert_eq!(b.tenant, "t");
            ts.extend(b.streams[0].entries.iter().map(|e| e.timestamp_ns));
        }
        assert_eq!(ts, (0..1200).collect::<Vec<_>>());
    }
}

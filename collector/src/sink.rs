//! Where collected samples go: the bus, or memory in tests.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bus::proto::{MetricsBatch, labels_key};
use bus::{Producer, Record, Topic};
use prost::Message;

use crate::source::SeriesGroup;
use crate::{Error, Result};

/// Receives each tick's series groups.
#[async_trait]
pub trait Sink: Send + Sync + Debug {
    /// Short name for logs and the `sink` label of the collector's metrics.
    fn name(&self) -> &'static str;

    /// Delivers `groups`; resolves once they are durable. On error the caller retries all of them
    /// (the receiving side absorbs duplicates).
    async fn send(&self, groups: &[SeriesGroup]) -> Result<()>;
}

/// Ships series to [`Topic::Metrics`]: one record per group, a [`MetricsBatch`] keyed with
/// [`labels_key`] of the tenant and the group's identity labels, so that every series of a
/// container stays on one partition, in order.
#[derive(Debug)]
pub struct BusSink {
    producer: Arc<dyn Producer>,
    tenant: String,
}

impl BusSink {
    pub fn new(producer: Arc<dyn Producer>, tenant: impl Into<String>) -> Self {
        BusSink {
            producer,
            tenant: tenant.into(),
        }
    }

    /// The records [`BusSink::send`] appends for `groups`.
    pub fn records(&self, groups: &[SeriesGroup]) -> Vec<Record> {
        groups
            .iter()
            .filter(|g| !g.series.is_empty())
            .map(|g| {
                let batch = MetricsBatch {
                    tenant: self.tenant.clone(),
                    series: g.series.clone(),
                };
                Record::new(labels_key(&self.tenant, &g.identity), batch.encode_to_vec())
            })
            .collect()
    }
}

#[async_trait]
impl Sink for BusSink {
    fn name(&self) -> &'static str {
        "bus"
    }

    async fn send(&self, groups: &[SeriesGroup]) -> Result<()> {
        let records = self.records(groups);
        if records.is_empty() {
            return Ok(());
        }
        self.producer
            .send(Topic::Metrics, records)
            .await
            .map_err(Error::Bus)
    }
}

/// Keeps everything sent, in memory, for tests; can be told to fail.
#[derive(Debug, Default)]
pub struct MemorySink {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    groups: Vec<SeriesGroup>,
    fail_next: usize,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` sends fail.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Takes everything received so far.
    pub fn take(&self) -> Vec<SeriesGroup> {
        std::mem::take(&mut self.lock().groups)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn send(&self, groups: &[SeriesGroup]) -> Result<()> {
        let mut inner = self.lock();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(Error::Bus(bus::Error::Closed));
        }
        inner.groups.extend(groups.iter().cloned());
        Ok(())
    }
}

//! The seam between what produces samples and the collection loop.

use std::fmt::Debug;

use bus::proto::{Label, Sample, TimeSeries};

use crate::Result;

/// Series of one entity (a container, a pod), shipped together under one partition key so that
/// every series of the entity stays in order on one partition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesGroup {
    /// The labels that identify the entity (sorted by name); the partition key is derived from
    /// them and the tenant.
    pub identity: Vec<Label>,
    /// The series, each with its full sorted label set (`__name__` included).
    pub series: Vec<TimeSeries>,
}

impl SeriesGroup {
    /// Number of samples in the group.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// Appends a one-sample series named `name` with the group's identity labels plus `extra`
    /// (label name, value) pairs.
    pub fn push(&mut self, name: &str, extra: &[(&str, &str)], value: f64, timestamp_ms: i64) {
        let mut labels = Vec::with_capacity(self.identity.len() + 1 + extra.len());
        labels.push(Label {
            name: "__name__".to_owned(),
            value: name.to_owned(),
        });
        labels.extend(self.identity.iter().cloned());
        for (n, v) in extra {
            labels.push(Label {
                name: (*n).to_owned(),
                value: (*v).to_owned(),
            });
        }
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.series.push(TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: timestamp_ms,
            }],
            exemplars: Vec::new(),
        });
    }
}

/// What one collection of a source did, for the collector's own metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Samples appended to the output.
    pub samples: u64,
    /// Objects whose statistics were read (cgroups for the cgroup source).
    pub scanned: u64,
    /// Entities exported (containers and pods for the cgroup source).
    pub exported: u64,
    /// Errors that skipped part of the collection without failing it (an unreadable file).
    pub errors: u64,
}

/// Something that produces samples when polled.
///
/// `collect` runs on a blocking thread (sources read files); it appends one [`SeriesGroup`] per
/// entity to `out`, every sample stamped `now_ms` (milliseconds since the Unix epoch, passed in so
/// that tests control time). An error fails this collection only; the loop polls again at the next
/// tick.
pub trait Source: Send + Debug {
    /// Short name for logs and the `source` label of the collector's metrics.
    fn name(&self) -> &'static str;

    /// Appends this tick's samples to `out`.
    fn collect(&mut self, now_ms: i64, out: &mut Vec<SeriesGroup>) -> Result<Collected>;
}

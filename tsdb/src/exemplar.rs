//! Exemplars: example observations (a trace id, a value, a time) attached to a series, kept
//! as Prometheus's `CircularExemplarStorage` keeps them.
//!
//! - [`buffer`]: one tenant's in-memory circular buffer, indexed by series, with Prometheus's
//!   checks (label length, duplicates, out-of-order within the out-of-order window). Pure: no
//!   I/O, no clock.
//! - [`log`]: the buffer made durable: an append-only file of CRC-framed records per tenant,
//!   group-committed (one fdatasync for all waiting appenders), replayed at open and rewritten
//!   as a snapshot of the buffer when it grows past twice the snapshot's size.
//!
//! Why not the tenant's WAL: its records are the head's, and its segments are deleted once a
//! checkpoint of the head covers them; exemplars would need their own place in checkpoints.
//! A separate log keeps the head, the WAL and checkpoints unaware of exemplars.

pub(crate) mod buffer;
pub(crate) mod log;

use std::collections::BTreeMap;

use crate::labels::Labels;

pub use buffer::ExemplarBuffer;

/// The most UTF-8 characters of an exemplar's label names and values together (OpenMetrics).
pub const MAX_LABEL_RUNES: usize = 128;

/// Prometheus's default `storage.exemplars.max_exemplars`.
pub const DEFAULT_MAX_EXEMPLARS: usize = 100_000;

/// One exemplar.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// The exemplar's own labels (`trace_id`, …), at most [`MAX_LABEL_RUNES`] characters.
    pub labels: Labels,
    pub value: f64,
    /// Milliseconds since the epoch.
    pub t: i64,
    /// Whether the time came with the exemplar (scraped exemplars without one get the scrape's
    /// time, and repeat as duplicates of themselves).
    pub has_ts: bool,
}

impl Exemplar {
    /// Prometheus's `Exemplar.Equals`: same labels and value, and the same time unless neither
    /// came with one.
    pub fn same_as(&self, other: &Exemplar) -> bool {
        self.labels == other.labels
            && (!(self.has_ts || other.has_ts) || self.t == other.t)
            && self.value == other.value
    }

    /// Characters of the label names and values together.
    pub fn label_runes(&self) -> usize {
        self.labels
            .iter()
            .map(|l| l.name.chars().count() + l.value.chars().count())
            .sum()
    }
}

/// The exemplars of one series, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesExemplars {
    /// The series' labels, metric name included.
    pub labels: Labels,
    pub exemplars: Vec<Exemplar>,
}

/// Why an exemplar was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExemplarReject {
    /// Older than the series' newest exemplar by the out-of-order window or more (or at the
    /// same time and ordered before it).
    OutOfOrder,
    /// Labels over [`MAX_LABEL_RUNES`] characters.
    LabelLength,
    /// The same as the series' newest exemplar (or as one at the same time): a no-op.
    Duplicate,
    /// `tsdb.exemplars.max_exemplars` is 0.
    Disabled,
}

impl ExemplarReject {
    /// The `reason` label of `sextant_tsdb_exemplars_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExemplarReject::OutOfOrder => "out_of_order",
            ExemplarReject::LabelLength => "label_length",
            ExemplarReject::Duplicate => "duplicate",
            ExemplarReject::Disabled => "disabled",
        }
    }
}

/// What an exemplar append did, exemplar by exemplar.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExemplarReport {
    pub accepted: usize,
    pub rejected: BTreeMap<ExemplarReject, usize>,
    /// The first out-of-order exemplar, for remote_write 2.0's error message.
    pub first_out_of_order: Option<String>,
}

impl ExemplarReport {
    pub(crate) fn reject(&mut self, why: ExemplarReject, message: impl FnOnce() -> String) {
        *self.rejected.entry(why).or_default() += 1;
        if why == ExemplarReject::OutOfOrder && self.first_out_of_order.is_none() {
            self.first_out_of_order = Some(message());
        }
    }

    /// Adds another report's counts.
    pub fn merge(&mut self, other: ExemplarReport) {
        self.accepted += other.accepted;
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        if self.first_out_of_order.is_none() {
            self.first_out_of_order = other.first_out_of_order;
        }
    }
}

#[cfg(test)]
mod tests;

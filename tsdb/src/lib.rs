//! The time-series store: series identified by label sets, the read seam the PromQL engine
//! queries through ([`storage::Queryable`]), and (as it is built) the persistent store with its
//! WAL, compressed chunks, blocks and retention, and the Prometheus-compatible HTTP API.
//!
//! Invariant: the tsdb never calls the collector; it reads the metrics topic of the bus,
//! remote_write and scrapes.

pub mod api;
pub mod chunk;
pub mod config;
pub mod duration;
pub mod exemplar;
pub mod exposition;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod head;
pub mod ingest;
pub mod labels;
pub mod metadata;
mod metrics;
mod parallel;
pub mod promql;
pub mod raw;
pub mod relabel;
pub mod scrape;
pub mod storage;
pub mod tenants;
pub mod tsdb;
mod wal;

pub use config::TsdbConfig;
pub use tenants::DiskTenants;
pub use tsdb::{Tsdb, TsdbError};

/// The tenant of writes and reads that name none (no `X-Scope-OrgID`, an empty bus tenant).
pub const DEFAULT_TENANT: &str = "default";

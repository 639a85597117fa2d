//! The time-series store: WAL, compressed chunks, blocks, retention, and the
//! Prometheus-compatible HTTP API with the PromQL engine.
//!
//! Invariant: the tsdb never calls the collector; it reads the metrics topic of the bus, remote_write
//! and scrapes.

//! The log store: a tantivy index of log lines fed from the logs topic of the bus, with
//! Loki-compatible query and push APIs.
//!
//! Invariant: the logstore reads only the logs topic and its own push API; it never calls the tsdb.

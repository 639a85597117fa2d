//! Alerting: Prometheus rule files, evaluation, Alertmanager-style grouping and silences, and
//! notifiers (webhooks to ops).
//!
//! Invariant: alert state is a pure function of query results and an injected clock.

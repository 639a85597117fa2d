//! Dashboards: the built-in web UI and Grafana provisioning (datasources and dashboards as code).
//!
//! Invariant: dashboards only read through the public query APIs; they never touch a store directly.

//! The node agent (one per node, and in-process in `sextant run`).
//!
//! Owns: walking cgroup v1/v2 hierarchies into cAdvisor-compatible `container_*` series, tailing
//! router access logs and container logs, deriving RED metrics per service, and scraping
//! Prometheus `/metrics` targets. Everything it produces leaves through bus producers.
//!
//! Invariant: the collector never calls a store; its only output is the bus.

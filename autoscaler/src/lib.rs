//! The autoscaler: policies (a Kubernetes CRD) with QPS/CPU rules over 10-second windows, scaling
//! workloads through the orchestrator API.
//!
//! Invariant: scaling decisions are pure functions of metrics and an injected clock; only the
//! actuator talks to an orchestrator.

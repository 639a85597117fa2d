//! The scrape loop: `scrape_configs` with `static_configs`, target and metric relabeling, one
//! tokio task per target writing each scrape's samples, report series (`up`,
//! `scrape_duration_seconds`, …) and staleness markers to a [`ScrapeSink`], with Prometheus's
//! semantics: a tenant's store ([`StoreSink`], the server's `tsdb.scrape`) or the bus's
//! metrics topic ([`BusSink`], the collector's `collector.scrape`, as a Prometheus agent).
//!
//! - [`config`]: the YAML configuration and its validation.
//! - [`target`]: target labels (`PopulateLabels`), URLs and the `/api/v1/targets` snapshot.
//! - [`cycle`]: one scrape's pure logic, time passed in (testable without sleeping).
//! - [`http`]: fetching a page as Prometheus does (Accept, timeout header, gzip, size limit).
//! - [`client`]: one HTTP client per job: `scheme: https`, `tls_config`, `basic_auth`,
//!   `authorization`, `proxy_url`…, with credential and TLS files re-read on every scrape.
//! - [`manager`]: the [`Scraper`] running a task per target and applying configuration changes.
//! - [`sink`]: where each scrape's batch goes (the store or the bus), and why the bus sink
//!   lives in this crate.
//!
//! Configuration ([`ScrapeSection`]; Prometheus's names and defaults: 1 m interval, 10 s
//! timeout, `/metrics`, `honor_timestamps: true`; scraped series go to `tenant`):
//!
//! ```yaml
//! global: {scrape_interval: 15s, scrape_timeout: 10s}
//! tenant: default
//! scrape_configs:
//! - job_name: node
//!   static_configs: [{targets: ['10.0.0.1:9100'], labels: {env: prod}}]
//!   relabel_configs: [{source_labels: [__address__], regex: '(.*):9100', target_label: host}]
//!   metric_relabel_configs: [{source_labels: [__name__], regex: 'go_.*', action: drop}]
//!   sample_limit: 50000
//! ```
//!
//! Wiring: [`Scraper::new`] with the store's tenants (or [`Scraper::to_bus`] with a bus
//! producer, which `collector::scrape_targets` wraps), [`Scraper::apply`] at start and on every
//! reload (inside the tokio runtime), [`Scraper::targets`] for `/api/v1/targets`,
//! [`Scraper::shutdown`] when the process stops.

pub mod client;
pub mod config;
pub mod cycle;
pub mod http;
pub mod manager;
mod metrics;
pub mod sink;
pub mod target;

use std::time::Duration;

pub use client::JobClient;
pub use config::{GlobalConfig, ScrapeConfig, ScrapeSection, StaticConfig};
pub use cycle::{ScrapeOutput, ScrapeReport, ScrapeRules, ScrapeState};
pub use manager::Scraper;
pub use sink::{BusSink, ScrapeSink, SinkError, StoreSink};
pub use target::{ActiveTarget, DroppedTargetStatus, Health, Target, Targets};

/// Errors of the scrape subsystem.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The configuration does not validate (the message starts with the dotted key).
    #[error("{0}")]
    Config(String),
    /// Scrape loops need a tokio runtime.
    #[error("the scrape loop must be started inside a tokio runtime")]
    NoRuntime,
}

/// How long a target's loop waits before its first scrape, so that its scrapes fall at a
/// fixed, target-specific offset within the interval (Prometheus's `scrapeLoop.offset`):
/// `(now + delay) % interval == hash % interval`, spreading targets over the interval.
pub fn initial_delay(hash: u64, interval: Duration, now_since_epoch: Duration) -> Duration {
    let iv = interval.as_nanos().max(1);
    let now = now_since_epoch.as_nanos();
    let base = iv - now % iv;
    let offset = u128::from(hash) % iv;
    let mut next = base + offset;
    if next > iv {
        next -= iv;
    }
    Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_within_the_interval() {
        let iv = Duration::from_secs(15);
        for (hash, now_ms) in [
            (0u64, 0u64),
            (7, 1234),
            (u64::MAX, 999_999),
            (123_456_789_012, 14_999),
        ] {
            let now = Duration::from_millis(now_ms);
            let d = initial_delay(hash, iv, now);
            assert!(d <= iv, "{d:?}");
            let at = (now + d).as_nanos() % iv.as_nanos();
            assert_eq!(at, u128::from(hash) % iv.as_nanos());
        }
    }
}

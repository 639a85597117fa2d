//! Prometheus `/metrics` targets scraped by the node agent (`collector.scrape`), shipped through
//! the bus like everything else the collector produces — a Prometheus agent in the collector.
//!
//! The scrape loop is the tsdb's ([`tsdb::scrape`]: the same `scrape_configs` schema,
//! relabeling, `honor_labels`, limits, report series `up`/`scrape_duration_seconds`/…,
//! staleness markers, `/api/v1/targets` status), run with its bus sink
//! ([`tsdb::scrape::BusSink`]): every target scrape becomes `MetricsBatch` records on the
//! metrics topic, keyed by the target so that its series stay on one partition, in order. A
//! send the bus refuses is retried until it is acknowledged; meanwhile the target is not
//! scraped again, so memory stays at one batch per target. The collector depends on the tsdb
//! crate for this loop only: it never opens or calls a store.
//!
//! Use `collector.scrape` for targets on the collector's node (node exporters, sidecars, pods
//! on `localhost`), so that they reach the stores through the bus from a DaemonSet; the
//! server's `tsdb.scrape` scrapes straight into its store.
//!
//! Wiring, in `sextant run` and in a standalone collector alike (inside a tokio runtime):
//!
//! ```ignore
//! let scraper = Arc::new(collector::scrape_targets(&config.collector.scrape, bus.producer()?)?);
//! // …on a configuration reload:
//! scraper.apply(&new_config.collector.scrape, collector::SCRAPE_KEY)?;
//! // …/api/v1/targets: scraper.targets(); on stop, before closing the bus:
//! scraper.shutdown().await;
//! ```

use std::sync::Arc;

use bus::Producer;
use tsdb::scrape::{ScrapeSection, Scraper};

use crate::{Error, Result};

/// The dotted key of the section, prefixed to its validation messages.
pub const SCRAPE_KEY: &str = "collector.scrape";

/// Starts scraping the targets of `section` (the `collector.scrape` section), shipping every
/// scrape through `producer` to the metrics topic. Must be called inside a tokio runtime; an
/// empty section starts no loop (a later [`Scraper::apply`] can add jobs).
pub fn scrape_targets(section: &ScrapeSection, producer: Arc<dyn Producer>) -> Result<Scraper> {
    let scraper = Scraper::to_bus(producer).map_err(|e| Error::Scrape(e.to_string()))?;
    scraper
        .apply(section, SCRAPE_KEY)
        .map_err(|e| Error::Scrape(e.to_string()))?;
    Ok(scraper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_invalid_section_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus::embedded::EmbeddedBus::open(dir.path(), Default::default()).unwrap();
        let producer = bus::Bus::producer(&bus).unwrap();
        let bad: ScrapeSection =
            serde_yaml_ng::from_str("scrape_configs: [{job_name: x, metrics_path: nope}]").unwrap();
        let e = scrape_targets(&bad, producer.clone()).unwrap_err();
        assert!(
            e.to_string()
                .contains("collector.scrape.scrape_configs[0].metrics_path:"),
            "{e}"
        );
        let s = scrape_targets(&ScrapeSection::default(), producer).unwrap();
        assert!(s.targets().active_targets.is_empty());
        s.shutdown().await;
    }
}

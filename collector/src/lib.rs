//! The node agent (one per node, and in-process in `sextant run`).
//!
//! Owns: walking cgroup v1/v2 hierarchies into cAdvisor-compatible `container_*` series, tailing
//! router access logs and container logs, deriving RED metrics per service, and scraping
//! Prometheus `/metrics` targets. Everything it produces leaves through bus producers.
//!
//! Invariant: the collector never calls a store; its only output is the bus.
//!
//! Seams: a [`Source`] produces [`SeriesGroup`]s when polled at a time passed in; a [`Sink`]
//! receives them ([`BusSink`] encodes `MetricsBatch` records for the bus, [`MemorySink`] keeps
//! them for tests); the [`Collector`] loop polls sources every interval. [`cgroup::CgroupSource`]
//! is the container metrics source; names a cgroup path cannot tell come from an
//! [`resolve::Identity`] resolver ([`resolve::KubeletIdentity`] or none). [`scrape_targets`]
//! scrapes Prometheus `/metrics` targets with the tsdb's scrape loop and its bus sink (see
//! [`scrape`] for why that loop, not a store, is all the collector uses of the tsdb crate).

pub mod accesslog;
pub mod cgroup;
pub mod config;
pub mod containerlog;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
pub mod pipeline;
pub mod resolve;
mod runner;
pub mod scrape;
mod sink;
mod source;
pub mod tail;
#[cfg(test)]
mod testutil;

pub use config::{CollectorConfig, DockerConfig, KubeletConfig};
pub use error::{Error, Result};
pub use runner::{Collector, TickReport};
pub use scrape::{SCRAPE_KEY, scrape_targets};
pub use sink::{BusSink, MemorySink, Sink};
pub use source::{Collected, SeriesGroup, Source};

/// A collector over the node's cgroups as `config` says, shipping to `sink`.
pub fn cgroup_collector(
    config: &CollectorConfig,
    sink: std::sync::Arc<dyn Sink>,
) -> Result<Collector> {
    config.validate().map_err(Error::Config)?;
    let mut resolvers: Vec<Box<dyn resolve::Identity>> = Vec::new();
    if let Some(k) = &config.kubelet {
        resolvers.push(Box::new(resolve::KubeletIdentity::new(k.clone())?));
    }
    if let Some(d) = &config.docker {
        resolvers.push(Box::new(resolve::DockerIdentity::new(d.clone())));
    }
    let resolver: Box<dyn resolve::Identity> = match resolvers.len() {
        0 => Box::new(resolve::NoIdentity),
        1 => resolvers.remove(0),
        _ => Box::new(resolve::Chain::new(resolvers)),
    };
    let source = cgroup::CgroupSource::new(config, resolver)?;
    let mut c = Collector::new(sink, config.interval);
    c.add_source(Box::new(source));
    Ok(c)
}

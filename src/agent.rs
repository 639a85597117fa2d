//! The node agent's components, started the same way by `sextant run` (in-process, shipping
//! over the embedded bus) and by `sextant collector` (standalone, shipping to Kafka through the
//! spool): the cgroup collector, the access-log and container-log pipelines and the
//! collector's scrape jobs.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::stopping;

/// What the running agent exposes to its process: the scrape jobs, for `/api/v1/targets` and
/// for stopping them before the bus closes.
pub(crate) struct Agent {
    pub(crate) scraper: Arc<tsdb::scrape::Scraper>,
}

impl Agent {
    /// Starts every component `config.collector` enables, shipping to `bus`; their tasks join
    /// `tasks` and stop when `stopped` turns true.
    pub(crate) fn start(
        config: &Config,
        data_dir: &Path,
        bus: &dyn bus::Bus,
        stopped: &watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<Agent> {
        let c = &config.collector;
        let sink = Arc::new(collector::BusSink::new(
            bus.producer().context("a bus producer for the collector")?,
            c.tenant.clone(),
        ));
        let node = collector::cgroup_collector(c, sink).context("starting the collector")?;
        tasks.spawn(node.run(stopping(stopped.clone())));
        if !c.access_log.sources.is_empty() {
            let pipeline =
                collector::accesslog::AccessLog::open(&c.access_log, data_dir, SystemTime::now())
                    .context("opening the access-log pipeline")?;
            let producer = bus.producer().context("a bus producer for access logs")?;
            tasks.spawn(pipeline.run_on_bus(producer, stopping(stopped.clone())));
        }
        if c.container_logs.enabled {
            let pipeline = collector::containerlog::ContainerLog::open(
                &c.container_logs,
                c.docker.as_ref(),
                data_dir,
            )
            .context("opening the container-log pipeline")?;
            let producer = bus
                .producer()
                .context("a bus producer for container logs")?;
            tasks.spawn(pipeline.run_on_bus(producer, stopping(stopped.clone())));
        }
        let producer = bus
            .producer()
            .context("a bus producer for scrape targets")?;
        let scraper = Arc::new(
            collector::scrape_targets(&c.scrape, producer)
                .context("starting the collector's scrape jobs")?,
        );
        Ok(Agent { scraper })
    }

    /// Stops the scrape jobs (the other components stop with the `stopped` signal).
    pub(crate) async fn shutdown(&self) {
        self.scraper.shutdown().await;
    }
}

//! `sextant collector`: the node agent alone (a DaemonSet-style process per node), shipping what
//! it collects to Kafka through the on-disk spool, and serving only the operations endpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::config::Config;
use crate::server::{self, Readiness};
use crate::{EXIT_CONFIG, init_logging, load_config};

#[derive(Debug, clap::Args)]
pub(crate) struct CollectorArgs {
    /// YAML configuration file; without one, the defaults (see `sextant config example`).
    #[arg(long, short = 'c', env = "SEXTANT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kafka bootstrap brokers, host:port[,host:port…] (sets bus.kafka.brokers, selecting Kafka).
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Data directory for the spool and the access-log checkpoints (overrides server.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address for /metrics, /-/healthy and /-/ready; port 0 picks a free one
    /// (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

/// Runs `sextant collector`; returns the process's exit code.
pub(crate) fn main(args: CollectorArgs) -> ExitCode {
    let config = match configure(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sextant-collector")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "sextant collector stopped on an error"
            );
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration with the flags applied, refused when it cannot ship anywhere useful.
fn configure(args: CollectorArgs) -> Result<Config, String> {
    let mut config = load_config(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(brokers) = args.kafka {
        let mut kafka = config.bus.kafka.take().unwrap_or_default();
        kafka.brokers = brokers;
        config.bus.kafka = Some(kafka);
        config.bus.embedded = None;
    }
    if let Some(dir) = args.data_dir {
        config.server.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Err(e) = config.validate() {
        return Err(format!("command line: {e}"));
    }
    check(&config)
        .map(|()| config)
        .map_err(|e| format!("command line: {e}"))
}

/// What `sextant collector` refuses beyond what the configuration itself does.
fn check(config: &Config) -> Result<(), String> {
    if config.bus.kafka.is_none() {
        // An embedded log on this node that no store reads would keep everything here, silently.
        return Err(
            "sextant collector ships to Kafka: pass --kafka BROKERS or configure bus.kafka \
             (the embedded bus is for `sextant run`, where the stores read it)"
                .to_owned(),
        );
    }
    if !config.collector.enabled {
        return Err(
            "collector.enabled: is false, so `sextant collector` has nothing to run".to_owned(),
        );
    }
    Ok(())
}

/// The agent: opens the bus (the spool, draining to Kafka), runs the node agent (cgroup
/// collector, access logs, scrape jobs), serves the operations endpoints until SIGINT or SIGTERM, then stops the
/// sources and closes the bus (the spool gets a short grace to drain; the rest stays on disk).
async fn run(config: Config) -> anyhow::Result<()> {
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    server::register_process_metrics();
    if config.bus.kafka.as_ref().is_some_and(|k| !k.spool.enabled) {
        tracing::warn!(
            "bus.kafka.spool.enabled is false: while the brokers are unreachable, cgroup samples are dropped after one interval"
        );
    }
    let bus = bus::open(&config.bus, data_dir)
        .await
        .context("opening the bus")?;

    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let agent = Agent::start(&config, data_dir, bus.as_ref(), &stopped, &mut tasks)?;

    let readiness = Readiness::default();
    let app = server::router(readiness.clone(), axum::Router::new());
    let served = server::serve(
        &config.server.listen,
        app,
        &readiness,
        |addr| tracing::info!(%addr, data_dir = %data_dir.display(), bus = bus.kind(), "sextant collector ready"),
        "stopping the sources, closing the spool",
    )
    .await?;
    let _ = stop.send(true);
    agent.shutdown().await;
    server::join_tasks(&mut tasks).await;
    bus.close().await.context("closing the bus")?;
    served?;
    tracing::info!("shutdown complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kafka: Option<&str>) -> CollectorArgs {
        CollectorArgs {
            config: None,
            kafka: kafka.map(str::to_owned),
            data_dir: Some(PathBuf::from("/tmp/sextant-test")),
            listen: Some("127.0.0.1:0".to_owned()),
        }
    }

    #[test]
    fn the_embedded_bus_is_refused() {
        let err = configure(args(None)).unwrap_err();
        assert!(err.contains("--kafka BROKERS"), "{err}");
    }

    #[test]
    fn kafka_flag_selects_kafka_with_the_spool() {
        let config = configure(args(Some("k1:9092,k2:9092"))).unwrap();
        let bus::BusChoice::Kafka(k) = config.bus.choice() else {
            panic!("kafka expected");
        };
        assert_eq!(k.brokers, "k1:9092,k2:9092");
        assert!(k.spool.enabled);
        assert_eq!(config.server.listen, "127.0.0.1:0");
    }
}

//! The `sextant` binary: command line, configuration and wiring. No business logic lives here;
//! each component is a library crate that this file starts and stops.

mod agent;
mod collector_cmd;
mod config;
mod server;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::{Config, LogFormat};
use crate::server::Readiness;

/// Metrics, logs, traces, alerts and autoscaling for container clusters, in one binary.
#[derive(Debug, Parser)]
#[command(name = "sextant", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every component in one process (the embedded all-in-one mode).
    ///
    /// Needs no other service: the bus is an embedded log under the data directory, and one HTTP
    /// port serves every API. Prints the address it bound on standard output.
    Run(RunArgs),
    /// Runs only the node agent, shipping to Kafka through an on-disk spool.
    ///
    /// Collects cgroup metrics and access logs as the `collector` section says and sends them to
    /// the brokers of `--kafka` (or bus.kafka); while they are unreachable the spool keeps
    /// accepting, up to bus.kafka.spool.max_bytes. Serves only /metrics, /-/healthy and /-/ready.
    Collector(collector_cmd::CollectorArgs),
    /// Prints or checks configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// YAML configuration file; without one, the defaults (see `sextant config example`).
    #[arg(long, short = 'c', env = "SEXTANT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address, host:port; port 0 picks a free one (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints a complete, commented example configuration (every key at its default).
    Example,
    /// Validates a configuration file, with SEXTANT__* environment overrides applied; exits 2
    /// naming the offending key when it is invalid.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Exit code for a configuration that was refused (as for a bad command line).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::EXAMPLE);
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => match load_config(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Collector(args) => collector_cmd::main(args),
        Command::Run(args) => {
            let mut config = match load_config(args.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if let Some(dir) = args.data_dir {
                config.server.data_dir = dir;
            }
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            if let Err(e) = config.validate() {
                eprintln!("error: command line: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            init_logging(&config);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("sextant")
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
                    tracing::error!(error = format!("{e:#}"), "sextant stopped on an error");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, config::ConfigError> {
    Config::load(path, std::env::vars())
}

fn init_logging(config: &Config) {
    // Validated already; the fallback only guards against a filter that parses differently here.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The all-in-one process: opens the data directory, the bus and the stores, starts the
/// collector and the bus consumers, serves HTTP until SIGINT or SIGTERM, then stops accepting,
/// drains requests and makes everything accepted durable.
async fn run(config: Config) -> anyhow::Result<()> {
    let started = SystemTime::now();
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    server::register_process_metrics();

    let bus = bus::open(&config.bus, data_dir)
        .await
        .context("opening the bus")?;
    let tenants = {
        let (dir, cfg) = (data_dir.clone(), config.tsdb.clone());
        tokio::task::spawn_blocking(move || tsdb::DiskTenants::open(&dir, cfg))
            .await
            .context("opening the tsdb")?
            .context("opening the tsdb")?
    };
    let tenants = Arc::new(tenants);
    let scraper =
        Arc::new(tsdb::scrape::Scraper::new(tenants.clone()).context("starting the scrape loop")?);
    scraper
        .apply(&config.tsdb.scrape, "tsdb.scrape")
        .context("starting the scrape jobs")?;
    let mut api = tsdb::api::ApiState::new(tenants.clone(), config.tsdb.api.clone(), started)
        .with_storage_retention(humantime::format_duration(config.tsdb.retention.time).to_string())
        .with_scraper(scraper.clone());
    // Background work stops when `stop` turns true, after the HTTP server has drained.
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let consumer = bus
        .consumer(tsdb::ingest::GROUP, &[bus::Topic::Metrics])
        .await
        .context("consuming the metrics topic")?;
    tasks.spawn({
        let (tenants, stopped) = (tenants.clone(), stopped.clone());
        async move { tsdb::ingest::run(consumer, tenants, stopped).await }
    });
    // The node agent ships through the bus, as a standalone collector would; /api/v1/targets
    // lists its scrape jobs beside the server's.
    let agent = if config.collector.enabled {
        let agent = agent::Agent::start(&config, data_dir, bus.as_ref(), &stopped, &mut tasks)?;
        api = api.with_scraper(agent.scraper.clone());
        Some(agent)
    } else {
        None
    };

    let readiness = Readiness::default();
    let app = server::router(readiness.clone(), tsdb::api::router(api));
    let served = server::serve(
        &config.server.listen,
        app,
        &readiness,
        |addr| tracing::info!(%addr, data_dir = %data_dir.display(), bus = bus.kind(), "sextant ready"),
        "draining requests, flushing accepted data",
    )
    .await?;

    let _ = stop.send(true);
    scraper.shutdown().await;
    if let Some(a) = &agent {
        a.shutdown().await;
    }
    server::join_tasks(&mut tasks).await;
    tokio::task::spawn_blocking(move || tenants.close())
        .await
        .context("closing the tsdb")?
        .context("closing the tsdb")?;
    bus.close().await.context("flushing the bus")?;
    served?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopping(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves with the name of the first of SIGINT or SIGTERM to arrive.
async fn shutdown_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops sextant");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}

//! A process that uses the embedded bus the way Sextant does, for tests that kill it.
//!
//! `produce`: several tasks send batches of records whose payloads are unique sequence numbers,
//! printing `acked FIRST LAST` after each acknowledged batch. On SIGTERM it stops sending, closes
//! the bus (flushing what is in flight), prints the acknowledgements of those, then `closed`.
//!
//! `consume`: polls a consumer group, printing `got SEQ` for each record, commits after every
//! poll and prints `committed SEQ` (the last delivered) once the commit returned. With
//! `--exit-when-idle` it exits after a poll that found nothing.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bus::embedded::{EmbeddedBus, EmbeddedConfig};
use bus::{Bus, Record, Topic};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

#[derive(Debug, Parser)]
struct Cli {
    /// The bus directory.
    #[arg(long)]
    dir: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    Produce {
        /// First sequence number (continue where an earlier run stopped).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Concurrent sending tasks.
        #[arg(long, default_value_t = 4)]
        tasks: u64,
        /// Records per batch.
        #[arg(long, default_value_t = 50)]
        batch: u64,
        /// Stop after this many records (default: until signalled).
        #[arg(long)]
        count: Option<u64>,
    },
    Consume {
        #[arg(long)]
        group: String,
        #[arg(long, default_value_t = 100)]
        max: usize,
        #[arg(long)]
        exit_when_idle: bool,
    },
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn payload(seq: u64) -> Vec<u8> {
    // Some bulk so that segments roll during the test.
    format!("{seq:012}:{}", "p".repeat(200)).into_bytes()
}

fn seq_of(payload: &[u8]) -> Result<u64> {
    let head = payload.get(..12).context("short payload")?;
    std::str::from_utf8(head)?
        .parse()
        .context("payload sequence")
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let config = EmbeddedConfig {
        segment_bytes: bytesize::ByteSize::kib(256),
        ..EmbeddedConfig::default()
    };
    let bus = EmbeddedBus::open(&cli.dir, config)?;
    match cli.mode {
        Mode::Produce {
            start,
            tasks,
            batch,
            count,
        } => {
            let next = Arc::new(AtomicU64::new(start));
            let end = count.map_or(u64::MAX, |c| start + c);
            let (stop_tx, stop_rx) = watch::channel(false);
            let mut handles = Vec::new();
            for _ in 0..tasks {
                let producer = bus.embedded_producer()?;
                let next = next.clone();
                let stop = stop_rx.clone();
                handles.push(tokio::spawn(async move {
                    while !*stop.borrow() {
                        let first = next.fetch_add(batch, Ordering::SeqCst);
                        if first >= end {
                            break;
                        }
                        let last = (first + batch).min(end) - 1;
                        let records = (first..=last)
                            .map(|s| Record::new(format!("k{}", s % 13), payload(s)))
                            .collect();
                        match bus::Producer::send(&producer, Topic::Logs, records).await {
                            Ok(()) => say(format!("acked {first} {last}")),
                            Err(e) => {
                                say(format!("failed {first} {last}: {e}"));
                                break;
                            }
                        }
                    }
                }));
            }
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let all_done = futures_join(handles);
            tokio::pin!(all_done);
            tokio::select! {
                _ = term.recv() => {
                    let _ = stop_tx.send(true);
                    bus.close().await?;
                    all_done.await;
                }
                _ = &mut all_done => {
                    bus.close().await?;
                }
            }
            say("closed".to_owned());
        }
        Mode::Consume {
            group,
            max,
            exit_when_idle,
        } => {
            let mut consumer = bus.consumer(&group, &[Topic::Logs]).await?;
            loop {
                let got = consumer.poll(max, Duration::from_millis(200)).await?;
                if got.is_empty() {
                    if exit_when_idle {
                        break;
                    }
                    continue;
                }
                let mut last = 0;
                for d in &got {
                    last = seq_of(&d.payload)?;
                    say(format!("got {last}"));
                }
                consumer.commit().await?;
                say(format!("committed {last}"));
            }
        }
    }
    Ok(())
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

//! Router access logs → log lines and RED metrics.
//!
//! Each source tails its files ([`crate::tail`]), parses every line with its parser chain
//! ([`parse`]), sends every line (parsed or not) to the logs stream with the request fields as
//! structured metadata, and counts parsed requests into RED series ([`red`]) flushed once per
//! wall-clock second, stamped with that second.
//!
//! One step ([`AccessLog::poll`]) reads and parses; the caller ships the [`Batch`] (lines to a
//! [`LogsSink`], samples to a [`Sink`]) and then [`AccessLog::commit`]s it: file positions advance
//! and the checkpoint (positions and RED counts together) is replaced atomically only after both
//! were acknowledged. So a restart resumes after the last shipped line: after a clean stop no line
//! is lost or sent twice; after a crash between an acknowledgement and the checkpoint write, that
//! one batch's lines are sent again (at-least-once), while the counters stay exact because the
//! restored counts exclude the re-read lines.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bus::proto::{Label, LogEntry, LogStream};
use serde::{Deserialize, Serialize};
use tracing::debug;

pub mod config;
pub mod format;
mod metrics;
pub mod parse;
pub mod red;

pub use crate::pipeline::{BusLogsSink, LogsSink, MemoryLogsSink};
pub use config::{AccessLogConfig, AccessLogSource, ParserConfig};

use crate::pipeline::{Pipeline, TailMetrics, until_sent};
use crate::sink::Sink;
use crate::source::SeriesGroup;
use crate::tail::{FileId, FilePosition, Line, TailOptions, Tailer};
use crate::{Error, Result};
use parse::{Access, Parser};
use red::{Red, RedState};

const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u32,
    /// The last second RED samples were stamped with.
    last_flush_s: i64,
    sources: BTreeMap<String, SourceCheckpoint>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceCheckpoint {
    files: Vec<FilePosition>,
    red: RedState,
}

#[derive(Debug)]
struct SourceRt {
    name: String,
    tailer: Tailer,
    parsers: Vec<Parser>,
    /// Sorted; `job` included.
    labels: Vec<Label>,
    service_field: String,
    red: Red,
}

/// What one poll read: lines to ship, RED samples to ship (at most once per second), and the
/// positions to acknowledge once both are shipped.
#[derive(Debug, Default)]
pub struct Batch {
    pub streams: Vec<LogStream>,
    pub metrics: Vec<SeriesGroup>,
    acks: Vec<(usize, FileId, u64, u64)>,
    /// Lines read, and those no parser matched.
    pub lines: u64,
    pub malformed: u64,
    /// Whether a file had more than the per-poll budget: poll again at once.
    pub more: bool,
}

impl Batch {
    /// Whether there is nothing to ship or acknowledge.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.metrics.is_empty() && self.acks.is_empty()
    }
}

/// The access-log pipeline.
#[derive(Debug)]
pub struct AccessLog {
    sources: Vec<SourceRt>,
    checkpoint_file: PathBuf,
    tenant: String,
    series_ttl_s: i64,
    last_flush_s: i64,
    /// No flush at or before this second (the second the process restored its checkpoint in: a
    /// sample for it may already have been shipped before a crash).
    first_flush_s: i64,
    last_ts_ns: i64,
}

impl AccessLog {
    /// Opens the pipeline, resuming from the checkpoint if there is one. A relative checkpoint
    /// path is taken under `data_dir`.
    pub fn open(config: &AccessLogConfig, data_dir: &Path, now: SystemTime) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let checkpoint_file = data_dir.join(&config.checkpoint_file);
        let mut cp: Checkpoint = crate::pipeline::load_checkpoint(&checkpoint_file)?;
        if cp.version != CHECKPOINT_VERSION && !cp.sources.is_empty() {
            return Err(Error::Config(format!(
                "access_log.checkpoint_file: {} has version {}, expected {CHECKPOINT_VERSION}",
                checkpoint_file.display(),
                cp.version
            )));
        }
        let mut sources = Vec::new();
        for s in &config.sources {
            let restored = cp.sources.remove(&s.name).unwrap_or_default();
            let opts = TailOptions {
                include: s.include.clone(),
                exclude: s.exclude.clone(),
                read_from: config.read_from,
                rotate_wait: config.rotate_wait,
                max_line_bytes: config.max_line_bytes,
                max_read_bytes: config.max_read_bytes,
            };
            let mut labels: BTreeMap<String, String> = s.labels.clone();
            labels
                .entry("job".to_owned())
                .or_insert_with(|| "access-log".to_owned());
            let mut red = Red::new(
                config.buckets.clone(),
                config.upstream_label,
                config.max_series,
            );
            red.restore(restored.red);
            sources.push(SourceRt {
                name: s.name.clone(),
                tailer: Tailer::new(opts, restored.files),
                parsers: s
                    .parsers
                    .iter()
                    .map(|p| p.compile().map_err(Error::Config))
                    .collect::<Result<_>>()?,
                labels: labels
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                service_field: s.service_field.clone(),
                red,
            });
        }
        Ok(AccessLog {
            sources,
            checkpoint_file,
            tenant: config.tenant.clone(),
            series_ttl_s: i64::try_from(config.series_ttl.as_secs()).unwrap_or(i64::MAX),
            last_flush_s: cp.last_flush_s,
            first_flush_s: unix_ms(now).div_euclid(1000) + 1,
            last_ts_ns: 0,
        })
    }

    /// Reads and parses what the files have now. `mono_ms` is a monotonic clock (for rotation
    /// waits), `wall` the time lines are stamped with and the RED flush second comes from.
    pub fn poll(&mut self, mono_ms: u64, wall: SystemTime) -> Batch {
        let wall_ms = unix_ms(wall);
        let wall_ns = wall_ms.saturating_mul(1_000_000);
        let mut batch = Batch::default();
        for (si, src) in self.sources.iter_mut().enumerate() {
            let mut lines = Vec::new();
            let stats = src.tailer.poll(mono_ms, &mut lines);
            batch.more |= stats.more;
            // Per (file path, request host): the stream's labels are built once per stream.
            let mut streams: BTreeMap<(Arc<Path>, Option<String>), Vec<LogEntry>> = BTreeMap::new();
            let mut acks: BTreeMap<FileId, (u64, u64)> = BTreeMap::new();
            let mut malformed = 0;
            let n = lines.len() as u64;
            for line in lines {
                let Line {
                    file,
                    path,
                    generation,
                    end,
                    text,
                } = line;
                let (fields, host) = {
                    let mut f = Vec::new();
                    if src.parsers.iter().any(|p| p.parse(&text, &mut f)) {
                        let a = Access::from_fields(&f, &src.service_field);
                        src.red.observe(&a);
                        (entry_fields(&a), a.host.map(str::to_owned))
                    } else {
                        malformed += 1;
                        (Vec::new(), None)
                    }
                };
                self.last_ts_ns = wall_ns.max(self.last_ts_ns + 1);
                streams.entry((path, host)).or_default().push(LogEntry {
                    timestamp_ns: self.last_ts_ns,
                    line: text,
                    fields,
                });
                acks.insert(file, (generation, end));
            }
            batch.lines += n;
            batch.malformed += malformed;
            for ((path, host), entries) in streams {
                let mut labels = src.labels.clone();
                labels.push(Label {
                    name: "filename".to_owned(),
                    value: path.to_string_lossy().into_owned(),
                });
                if let Some(h) = host {
                    labels.push(Label {
                        name: "host".to_owned(),
                        value: h,
                    });
                }
                // A configured label of the same name gives way to the line's own.
                crate::pipeline::sort_labels(&mut labels);
                batch.streams.push(LogStream { labels, entries });
            }
            batch
                .acks
                .extend(acks.into_iter().map(|(f, (g, e))| (si, f, g, e)));
            record_poll(src, &stats, n, malformed);
        }
        let now_s = wall_ms.div_euclid(1000);
        if now_s > self.last_flush_s && now_s >= self.first_flush_s {
            for src in &mut self.sources {
                batch
                    .metrics
                    .extend(src.red.flush(now_s * 1000, &src.labels, self.series_ttl_s));
            }
            metrics::RED_SERIES
                .with_label_values(&[] as &[&str])
                .set(self.sources.iter().map(|s| s.red.len() as i64).sum());
            self.last_flush_s = now_s;
        }
        batch
    }

    /// Records that `batch` was shipped: advances the file positions and replaces the checkpoint.
    pub fn commit(&mut self, batch: &Batch) -> Result<()> {
        for (si, file, generation, end) in &batch.acks {
            if let Some(src) = self.sources.get_mut(*si) {
                src.tailer.ack(*file, *generation, *end);
            }
        }
        self.write_checkpoint()
    }

    fn write_checkpoint(&self) -> Result<()> {
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            last_flush_s: self.last_flush_s,
            sources: self
                .sources
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        SourceCheckpoint {
                            files: s.tailer.positions(),
                            red: s.red.state(),
                        },
                    )
                })
                .collect(),
        };
        crate::pipeline::save_checkpoint(&self.checkpoint_file, &cp)
    }

    /// [`AccessLog::run`] shipping lines to the bus's logs topic and RED samples to its metrics
    /// topic, for the configured tenant.
    pub async fn run_on_bus(
        self,
        producer: Arc<dyn bus::Producer>,
        shutdown: impl Future<Output = ()>,
    ) {
        let logs = Arc::new(BusLogsSink::new(Arc::clone(&producer), self.tenant.clone()));
        let samples = Arc::new(crate::BusSink::new(producer, self.tenant.clone()));
        self.run(logs, samples, shutdown).await;
    }

    /// Polls, ships and commits until `shutdown` resolves (see [`crate::pipeline`]):
    /// lines to `logs`, RED samples to `samples`.
    pub async fn run(
        self,
        logs: Arc<dyn LogsSink>,
        samples: Arc<dyn Sink>,
        shutdown: impl Future<Output = ()>,
    ) {
        let ship = move |batch: Batch| {
            let (logs, samples) = (Arc::clone(&logs), Arc::clone(&samples));
            async move {
                ship(&batch, logs.as_ref(), samples.as_ref()).await;
                batch
            }
        };
        let checkpoint_errors = metrics::SHIP_ERRORS.with_label_values(&["checkpoint"]);
        crate::pipeline::run(self, ship, shutdown, checkpoint_errors).await;
    }
}

impl Pipeline for AccessLog {
    type Batch = Batch;
    const NAME: &'static str = "access_log";

    fn poll(&mut self, mono_ms: u64, wall: SystemTime) -> Batch {
        AccessLog::poll(self, mono_ms, wall)
    }

    fn commit(&mut self, batch: &Batch) -> Result<()> {
        AccessLog::commit(self, batch)
    }

    fn is_empty(batch: &Batch) -> bool {
        batch.is_empty()
    }

    fn more(batch: &Batch) -> bool {
        batch.more
    }
}

/// Sends the batch's lines, then its samples, each retried with back-off until acknowledged.
async fn ship(batch: &Batch, logs: &dyn LogsSink, samples: &dyn Sink) {
    if !batch.streams.is_empty() {
        until_sent(
            || logs.send(&batch.streams),
            |e| {
                metrics::SHIP_ERRORS.with_label_values(&["logs"]).inc();
                debug!(sink = logs.name(), error = %e, "sending access-log lines failed, retrying");
            },
        )
        .await;
    }
    if !batch.metrics.is_empty() {
        until_sent(
            || samples.send(&batch.metrics),
            |e| {
                metrics::SHIP_ERRORS.with_label_values(&["metrics"]).inc();
                debug!(sink = samples.name(), error = %e, "sending RED samples failed, retrying");
            },
        )
        .await;
    }
}

/// The request fields of a line as structured metadata.
fn entry_fields(a: &Access<'_>) -> Vec<Label> {
    let mut out = Vec::with_capacity(10);
    let mut add = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push(Label {
                name: name.to_owned(),
                value,
            });
        }
    };
    let s = |v: Option<&str>| v.map(str::to_owned);
    add("host", s(a.host));
    add("service", s(a.service));
    add("method", s(a.method));
    add("uri", s(a.uri));
    add("status", a.status.map(|v| v.to_string()));
    add("bytes", a.bytes.map(|v| v.to_string()));
    add("request_time", a.request_time.map(|v| v.to_string()));
    add("upstream", s(a.upstream));
    add("upstream_time", a.upstream_time.map(|v| v.to_string()));
    add("request_id", s(a.request_id));
    add("trace_id", a.trace_id.as_deref().map(str::to_owned));
    out
}

fn record_poll(src: &SourceRt, stats: &crate::tail::PollStats, lines: u64, malformed: u64) {
    let name = src.name.as_str();
    if lines > malformed {
        metrics::LINES
            .with_label_values(&[name, "parsed"])
            .inc_by(lines - malformed);
    }
    if malformed > 0 {
        metrics::LINES
            .with_label_values(&[name, "malformed"])
            .inc_by(malformed);
    }
    TailMetrics {
        bytes: &metrics::BYTES,
        events: &metrics::FILE_EVENTS,
        files_open: &metrics::FILES_OPEN,
    }
    .record(stats, src.tailer.open_files(), &[name]);
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

//! Container logs → log lines.
//!
//! Tails the kubelet's `/var/log/pods` files (or `/var/log/containers` links, or Docker's
//! json-files) with the rotation-safe [`crate::tail`]er, parses each physical line as CRI or
//! Docker ([`parse`]; `auto` decides per file), joins partial lines ([`join`]) and ships every
//! logical line to the logs stream with the entry's own timestamp and labels from its path
//! ([`path`]: `namespace`, `pod`, `pod_uid`, `container`, `container_id`), `stream` and
//! `filename`, plus Docker's names when the Docker resolver is configured. A line in neither
//! format is shipped as it is, without `stream`, and counted.
//!
//! Delivery follows [`crate::pipeline`]: a batch's file positions advance, and the checkpoint is
//! replaced, only after it was acknowledged. Partial lines still waiting for their end are part
//! of the checkpoint, together with the positions just after them, so that a restart in the
//! middle of a partial sequence neither loses the pieces read nor reads them twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bus::proto::{Label, LogEntry, LogStream};
use serde::{Deserialize, Serialize};
use tracing::debug;

pub mod config;
pub mod join;
mod metrics;
pub mod parse;
pub mod path;

pub use config::ContainerLogConfig;
pub use parse::{Format, Stream};

use crate::cgroup::{Kind, PathIdentity};
use crate::config::DockerConfig;
use crate::pipeline::{BusLogsSink, LogsSink, Pipeline, TailMetrics, label, until_sent};
use crate::resolve::{DockerIdentity, Identity};
use crate::tail::{FileId, FilePosition, TailOptions, Tailer};
use crate::{Error, Result};
use join::{Anchor, Joined, Joiner, PendingLine, append_bounded};
use path::PathInfo;

const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u32,
    files: Vec<FilePosition>,
    pending: Vec<PendingLine>,
}

/// What the pipeline knows of one log path.
#[derive(Debug)]
struct PathMeta {
    /// Stream labels but `stream`, sorted.
    labels: Vec<Label>,
    info: PathInfo,
    /// `Auto` until a line parsed (with `format: auto`).
    format: Format,
    /// The timestamp of the last line parsed, for lines that do not parse.
    last_ts_ns: Option<i64>,
    /// The resolver generation the labels were made at.
    generation: u64,
}

/// Lines counted by format: CRI, Docker, raw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FormatCounts {
    pub cri: u64,
    pub docker: u64,
    pub raw: u64,
}

/// What one poll read: the lines to ship, and the positions to acknowledge once they are.
#[derive(Debug, Default)]
pub struct Batch {
    pub streams: Vec<LogStream>,
    acks: Vec<(FileId, u64, u64)>,
    /// Lines shipped, by format.
    pub lines: FormatCounts,
    /// Lines joined from several pieces.
    pub joins: u64,
    /// Lines cut at `max_line_bytes`.
    pub truncated: u64,
    /// Whether a file had more than the per-poll budget: poll again at once.
    pub more: bool,
}

impl Batch {
    /// Whether there is nothing to ship or acknowledge.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.acks.is_empty()
    }
}

/// The container-log pipeline.
#[derive(Debug)]
pub struct ContainerLog {
    tailer: Tailer,
    format: Format,
    joiner: Joiner,
    /// Pending lines from the checkpoint, checked against the files at the first poll.
    restored: Option<Vec<PendingLine>>,
    paths: HashMap<Arc<Path>, PathMeta>,
    docker: Option<Box<dyn Identity>>,
    /// Configured labels, `job` included.
    labels: Vec<Label>,
    max_line_bytes: usize,
    checkpoint_file: PathBuf,
    tenant: String,
}

impl ContainerLog {
    /// Opens the pipeline, resuming from the checkpoint if there is one (a relative checkpoint
    /// path is under `data_dir`). With `docker`, Docker json-files are labelled with the names
    /// the Docker daemon gives their containers.
    pub fn open(
        config: &ContainerLogConfig,
        docker: Option<&DockerConfig>,
        data_dir: &Path,
    ) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let checkpoint_file = data_dir.join(&config.checkpoint_file);
        let cp: Checkpoint = crate::pipeline::load_checkpoint(&checkpoint_file)?;
        if cp.version != CHECKPOINT_VERSION && !(cp.files.is_empty() && cp.pending.is_empty()) {
            return Err(Error::Config(format!(
                "container_logs.checkpoint_file: {} has version {}, expected {CHECKPOINT_VERSION}",
                checkpoint_file.display(),
                cp.version
            )));
        }
        let opts = TailOptions {
            include: config.paths.clone(),
            exclude: config.exclude.clone(),
            read_from: config.read_from,
            rotate_wait: config.rotate_wait,
            max_line_bytes: config.physical_line_bytes(),
            max_read_bytes: config.max_read_bytes,
        };
        let mut labels: Vec<Label> = config
            .labels
            .iter()
            .map(|(k, v)| label(k, v.as_str()))
            .collect();
        if !config.labels.contains_key("job") {
            labels.push(label("job", "container-logs"));
        }
        crate::pipeline::sort_labels(&mut labels);
        let timeout_ms = u64::try_from(config.partial_timeout.as_millis()).unwrap_or(u64::MAX);
        Ok(ContainerLog {
            tailer: Tailer::new(opts, cp.files),
            format: config.format,
            joiner: Joiner::new(config.max_line_bytes, timeout_ms),
            restored: Some(cp.pending),
            paths: HashMap::new(),
            docker: docker.map(|d| Box::new(DockerIdentity::new(d.clone())) as Box<dyn Identity>),
            labels,
            max_line_bytes: config.max_line_bytes,
            checkpoint_file,
            tenant: config.tenant.clone(),
        })
    }

    /// Reads, parses and joins what the files have now. `mono_ms` is a monotonic clock
    /// (rotation waits, the partial-line timeout); `wall` stamps lines that carry no time.
    pub fn poll(&mut self, mono_ms: u64, wall: SystemTime) -> Batch {
        let wall_ns = unix_ns(wall);
        let mut lines = Vec::new();
        let stats = self.tailer.poll(mono_ms, &mut lines);
        if let Some(restored) = self.restored.take() {
            self.restore(restored, mono_ms);
        }
        if let Some(d) = &mut self.docker {
            d.refresh(Instant::now());
        }
        let mut batch = Batch {
            more: stats.more,
            ..Default::default()
        };
        let mut out = Streams::default();
        let mut acks: BTreeMap<FileId, (u64, u64)> = BTreeMap::new();
        for line in lines {
            let (file, path, end, text) = (line.file, line.path, line.end, line.text);
            acks.insert(file, (line.generation, end));
            let meta = path_meta(
                &mut self.paths,
                self.docker.as_deref_mut(),
                &self.labels,
                &path,
            );
            let format = match self.format {
                Format::Auto => meta.format,
                f => f,
            };
            match parse::parse(format, &text) {
                Some((detected, frag)) => {
                    meta.format = detected;
                    meta.last_ts_ns = Some(frag.ts_ns);
                    let at = Anchor { file, end };
                    if let Some(j) = self.joiner.push(&path, frag, at, mono_ms) {
                        out.push_joined(j, detected, &mut batch);
                    }
                }
                None => {
                    let ts_ns = meta.last_ts_ns.unwrap_or(wall_ns);
                    let mut raw = String::new();
                    if append_bounded(&mut raw, &text, self.max_line_bytes) {
                        batch.truncated += 1;
                    }
                    batch.lines.raw += 1;
                    out.push(path, None, ts_ns, raw);
                }
            }
        }
        for j in self.joiner.expire(mono_ms) {
            let format = self.meta(&j.path).format;
            out.push_joined(j, format, &mut batch);
        }
        for ((path, stream), entries) in out.0 {
            let mut labels = self.meta(&path).labels.clone();
            if let Some(s) = stream {
                labels.push(label("stream", s.as_str()));
                crate::pipeline::sort_labels(&mut labels);
            }
            batch.streams.push(LogStream { labels, entries });
        }
        batch.acks = acks.into_iter().map(|(f, (g, e))| (f, g, e)).collect();
        let open: HashSet<&Arc<Path>> = self.tailer.open_paths().collect();
        let joiner = &self.joiner;
        self.paths
            .retain(|p, _| open.contains(p) || joiner.has_pending(p));
        self.record(&stats, &batch);
        batch
    }

    /// Puts back the checkpoint's pending lines whose files resumed where the checkpoint says
    /// (or are gone: their rest may still come from the file that replaced them); a file read
    /// again from an earlier position yields their pieces again.
    fn restore(&mut self, restored: Vec<PendingLine>, mono_ms: u64) {
        for p in restored {
            let a = p.anchor();
            let valid = match self.tailer.position(a.file) {
                Some((generation, acked)) => generation == 0 && acked >= a.end,
                None => true,
            };
            if valid {
                self.joiner.restore(p, mono_ms);
            } else {
                debug!(
                    path = %p.path.display(),
                    "file read again from an earlier position, dropping its checkpointed partial line"
                );
            }
        }
    }

    fn meta(&mut self, path: &Arc<Path>) -> &mut PathMeta {
        path_meta(
            &mut self.paths,
            self.docker.as_deref_mut(),
            &self.labels,
            path,
        )
    }

    /// Records that `batch` was shipped: advances the file positions and replaces the checkpoint
    /// (positions and pending partial lines together).
    pub fn commit(&mut self, batch: &Batch) -> Result<()> {
        for (file, generation, end) in &batch.acks {
            self.tailer.ack(*file, *generation, *end);
        }
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            files: self.tailer.positions(),
            pending: self.joiner.checkpoint(),
        };
        crate::pipeline::save_checkpoint(&self.checkpoint_file, &cp)
    }

    fn record(&self, stats: &crate::tail::PollStats, batch: &Batch) {
        for (format, n) in [
            ("cri", batch.lines.cri),
            ("docker", batch.lines.docker),
            ("raw", batch.lines.raw),
        ] {
            if n > 0 {
                metrics::LINES.with_label_values(&[format]).inc_by(n);
            }
        }
        let none: &[&str] = &[];
        for (m, n) in [
            (&metrics::PARTIAL_JOINS, batch.joins),
            (&metrics::MALFORMED, batch.lines.raw),
            (&metrics::TRUNCATED, batch.truncated),
        ] {
            if n > 0 {
                m.with_label_values(none).inc_by(n);
            }
        }
        metrics::PENDING
            .with_label_values(none)
            .set(i64::try_from(self.joiner.len()).unwrap_or(i64::MAX));
        TailMetrics {
            bytes: &metrics::BYTES,
            events: &metrics::FILE_EVENTS,
            files_open: &metrics::FILES_OPEN,
        }
        .record(stats, self.tailer.open_files(), none);
    }

    /// [`ContainerLog::run`] shipping lines to the bus's logs topic for the configured tenant.
    pub async fn run_on_bus(
        self,
        producer: Arc<dyn bus::Producer>,
        shutdown: impl Future<Output = ()>,
    ) {
        let logs = Arc::new(BusLogsSink::new(producer, self.tenant.clone()));
        self.run(logs, shutdown).await;
    }

    /// Polls, ships to `logs` and commits until `shutdown` resolves (see
    /// [`crate::pipeline`]).
    pub async fn run(self, logs: Arc<dyn LogsSink>, shutdown: impl Future<Output = ()>) {
        let ship = move |batch: Batch| {
            let logs = Arc::clone(&logs);
            async move {
                if !batch.streams.is_empty() {
                    until_sent(
                        || logs.send(&batch.streams),
                        |e| {
                            metrics::SHIP_ERRORS.with_label_values(&["logs"]).inc();
                            debug!(
                                sink = logs.name(),
                                error = %e,
                                "sending container log lines failed, retrying"
                            );
                        },
                    )
                    .await;
                }
                batch
            }
        };
        let checkpoint_errors = metrics::SHIP_ERRORS.with_label_values(&["checkpoint"]);
        crate::pipeline::run(self, ship, shutdown, checkpoint_errors).await;
    }
}

impl Pipeline for ContainerLog {
    type Batch = Batch;
    const NAME: &'static str = "container_logs";

    fn poll(&mut self, mono_ms: u64, wall: SystemTime) -> Batch {
        ContainerLog::poll(self, mono_ms, wall)
    }

    fn commit(&mut self, batch: &Batch) -> Result<()> {
        ContainerLog::commit(self, batch)
    }

    fn is_empty(batch: &Batch) -> bool {
        batch.is_empty()
    }

    fn more(batch: &Batch) -> bool {
        batch.more
    }
}

/// Entries of one poll by path and stream (`None`: lines in neither format).
#[derive(Default)]
struct Streams(BTreeMap<(Arc<Path>, Option<Stream>), Vec<LogEntry>>);

impl Streams {
    fn push(&mut self, path: Arc<Path>, stream: Option<Stream>, ts_ns: i64, line: String) {
        self.0.entry((path, stream)).or_default().push(LogEntry {
            timestamp_ns: ts_ns,
            line,
            fields: Vec::new(),
        });
    }

    fn push_joined(&mut self, j: Joined, format: Format, batch: &mut Batch) {
        match format {
            Format::Docker => batch.lines.docker += 1,
            _ => batch.lines.cri += 1,
        }
        if j.parts > 1 {
            batch.joins += 1;
        }
        if j.truncated {
            batch.truncated += 1;
        }
        self.push(j.path, Some(j.stream), j.ts_ns, j.line);
    }
}

/// The metadata of `path`, made on first sight and relabelled when the resolver's names may
/// have changed.
fn path_meta<'a>(
    paths: &'a mut HashMap<Arc<Path>, PathMeta>,
    docker: Option<&mut (dyn Identity + 'static)>,
    configured: &[Label],
    path: &Arc<Path>,
) -> &'a mut PathMeta {
    let generation = docker.as_ref().map_or(0, |d| d.generation());
    let meta = paths.entry(Arc::clone(path)).or_insert_with(|| PathMeta {
        labels: Vec::new(),
        info: path::resolve(path),
        format: Format::Auto,
        last_ts_ns: None,
        // Forces the labels to be made below.
        generation: generation.wrapping_add(1),
    });
    if meta.generation != generation {
        meta.generation = generation;
        meta.labels = labels_for(path, &meta.info, docker, configured);
    }
    meta
}

/// The labels of a path's streams (but `stream`): the configured ones, `filename`, what the path
/// tells, and for a Docker json-file what the Docker daemon knows of its container (its
/// Kubernetes names with cri-dockerd, else its own name as `container`).
fn labels_for(
    path: &Path,
    info: &PathInfo,
    docker: Option<&mut (dyn Identity + 'static)>,
    configured: &[Label],
) -> Vec<Label> {
    let mut info = info.clone();
    if let Some(d) = docker
        && info.docker
        && info.container_id.is_some()
    {
        let names = d.names(&PathIdentity {
            kind: Kind::Container,
            pod_uid: None,
            container_id: info.container_id.clone(),
            runtime: Some("docker"),
        });
        info.namespace = info.namespace.or(names.namespace);
        info.pod = info.pod.or(names.pod);
        info.container = info.container.or(names.container).or(names.name);
    }
    let mut labels = configured.to_vec();
    labels.push(label("filename", path.to_string_lossy()));
    for (name, value) in [
        ("namespace", info.namespace),
        ("pod", info.pod),
        ("pod_uid", info.pod_uid),
        ("container", info.container),
        ("container_id", info.container_id),
    ] {
        if let Some(v) = value {
            labels.push(label(name, v));
        }
    }
    // The path's own labels win over configured ones of the same name.
    crate::pipeline::sort_labels(&mut labels);
    labels
}

fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

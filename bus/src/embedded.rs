//! The embedded bus: in-process, one append-only log per topic under `<data dir>/bus/`.
//!
//! Layout: `bus/<topic>/<base offset>.log` segment files ([`segment`]), `bus/groups/<group>.json`
//! committed positions ([`offsets`]), and `bus/LOCK`, held while a process has the bus open.
//! One writer thread ([`writer`]) group-commits appends; a producer's `send` resolves after the
//! fdatasync that made its records durable. Each topic has a single partition (0): in one process
//! there is no parallelism to gain from more, and order per key is then trivially kept.
//!
//! A consumer group has at most one member at a time on the embedded bus.

mod offsets;
pub(crate) mod segment;
mod writer;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytesize::ByteSize;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use self::offsets::{OffsetStore, Positions};
pub(crate) use self::segment::encoded_len as record_bytes;
use self::segment::{MAX_RECORD_BYTES, SegmentMeta, SegmentReader, recover};
use self::writer::{Command, TopicShared, TopicWriter};
pub(crate) use self::writer::{Policy, Retention};
use crate::metrics::{COMMITS, CONSUMER_LAG, count_consumed};
use crate::{Bus, Consumer, Delivery, Error, Producer, Record, Result, Topic, check_group};

/// Settings of the embedded bus (`bus: { embedded: … }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Size at which a topic's active segment file is closed and a new one started.
    pub segment_bytes: ByteSize,
    /// Closed segments last written longer ago than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// While a topic's log is larger than this, its oldest closed segments are deleted.
    pub retention_bytes: ByteSize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            segment_bytes: ByteSize::mib(64),
            retention: Duration::from_secs(24 * 3600),
            retention_bytes: ByteSize::gib(4),
        }
    }
}

impl EmbeddedConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.segment_bytes < ByteSize::kib(4) {
            return Err(format!(
                "bus.embedded.segment_bytes: {} is below the minimum of 4 KiB",
                self.segment_bytes
            ));
        }
        if self.retention_bytes < self.segment_bytes {
            return Err(format!(
                "bus.embedded.retention_bytes: {} is below segment_bytes ({})",
                self.retention_bytes, self.segment_bytes
            ));
        }
        if self.retention.is_zero() {
            return Err("bus.embedded.retention: must be longer than 0s".to_owned());
        }
        Ok(())
    }
}

/// The embedded bus. See the module docs.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    topics: BTreeMap<Topic, Arc<TopicShared>>,
    offsets: Arc<OffsetStore>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    members: Mutex<HashSet<String>>,
    /// The `bus` label of this log's metrics (`embedded`, or `spool` for the Kafka spool).
    kind: &'static str,
    /// Held (locked) for the life of the bus so that a second process cannot open the same log.
    _lock: File,
}

impl EmbeddedBus {
    /// Opens the bus in `dir`, creating it if needed and recovering from a crash if there was one.
    pub fn open(dir: &Path, config: EmbeddedConfig) -> Result<EmbeddedBus> {
        config.validate().map_err(Error::Config)?;
        EmbeddedBus::open_with(dir, config, Policy::default())
    }

    /// Opens the log with a retention policy and metric label of its own (the spool's).
    pub(crate) fn open_with(
        dir: &Path,
        config: EmbeddedConfig,
        policy: Policy,
    ) -> Result<EmbeddedBus> {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(Error::io(&lock_path))?;
        lock.try_lock().map_err(|e| Error::Io {
            path: lock_path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("the bus is in use by another process ({e})"),
            ),
        })?;
        let offsets = Arc::new(OffsetStore::open(&dir.join("groups"))?);
        let mut topics = BTreeMap::new();
        let mut writers = BTreeMap::new();
        for topic in Topic::ALL {
            let tdir = dir.join(topic.name());
            let rec = recover(&tdir)?;
            if rec.truncated_bytes > 0 {
                tracing::warn!(topic = %topic, bytes = rec.truncated_bytes, "recovered bus log: cut a torn tail (records that were never acknowledged)");
            }
            let (durable_end, _) = watch::channel(rec.next_offset);
            let shared = Arc::new(TopicShared {
                topic,
                dir: tdir,
                durable_end,
                segments: std::sync::RwLock::new(rec.segments),
            });
            writers.insert(topic, TopicWriter::new(shared.clone(), rec.next_offset)?);
            topics.insert(topic, shared);
        }
        let (tx, rx) = mpsc::channel(1024);
        let writer = {
            let offsets = offsets.clone();
            std::thread::Builder::new()
                .name("bus-writer".to_owned())
                .spawn(move || writer::run(rx, writers, config, offsets, policy))
                .map_err(Error::io(dir))?
        };
        // Housekeeping ticks for an idle bus; the thread ends once the bus is closed or dropped.
        let weak = tx.downgrade();
        std::thread::Builder::new()
            .name("bus-maintain".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(writer::RETENTION_EVERY);
                    match weak.upgrade() {
                        Some(tx) if tx.blocking_send(Command::Maintain).is_ok() => {}
                        _ => break,
                    }
                }
            })
            .map_err(Error::io(dir))?;
        tracing::info!(dir = %dir.display(), "embedded bus open");
        Ok(EmbeddedBus {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                topics,
                offsets,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                members: Mutex::new(HashSet::new()),
                kind: policy.kind,
                _lock: lock,
            }),
        })
    }

    /// The producer as its concrete type.
    pub fn embedded_producer(&self) -> Result<EmbeddedProducer> {
        let tx = lock(&self.inner.tx).clone().ok_or(Error::Closed)?;
        Ok(EmbeddedProducer { tx })
    }

    /// The consumer as its concrete type.
    pub fn embedded_consumer(&self, group: &str, topics: &[Topic]) -> Result<EmbeddedConsumer> {
        check_group(group)?;
        if !lock(&self.inner.members).insert(group.to_owned()) {
            return Err(Error::GroupBusy(group.to_owned()));
        }
        let mut cursors = Vec::new();
        let mut seen = HashSet::new();
        for topic in topics.iter().filter(|t| seen.insert(**t)) {
            let shared = self.inner.topics[topic].clone();
            let first = shared.segments().first().map_or(0, |s| s.base);
            let position = self
                .inner
                .offsets
                .get(group, *topic)
                .unwrap_or(first)
                .max(first);
            cursors.push(Cursor {
                end_rx: shared.durable_end.subscribe(),
                shared,
                position,
                committed: position,
                reader: None,
            });
        }
        Ok(EmbeddedConsumer {
            inner: self.inner.clone(),
            group: group.to_owned(),
            cursors,
            next_cursor: 0,
        })
    }

    /// Where the bus keeps its files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes of every topic's segment files (durable records; deleted segments excluded).
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.inner
            .topics
            .values()
            .flat_map(|t| t.segments())
            .map(|s| s.bytes)
            .sum()
    }

    /// Records of `topic` that `group` has not committed.
    pub(crate) fn backlog(&self, group: &str, topic: Topic) -> u64 {
        let shared = &self.inner.topics[&topic];
        let first = shared.segments().first().map_or(0, |s| s.base);
        let committed = self.inner.offsets.get(group, topic).unwrap_or(first);
        (*shared.durable_end.borrow()).saturating_sub(committed)
    }

    /// Asks the writer to apply retention now (it also does on every segment roll and every
    /// [`writer::RETENTION_EVERY`]). Returns without waiting.
    pub(crate) fn maintain(&self) {
        if let Some(tx) = lock(&self.inner.tx).as_ref() {
            let _ = tx.try_send(Command::Maintain);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Bus for EmbeddedBus {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn producer(&self) -> Result<Arc<dyn Producer>> {
        Ok(Arc::new(self.embedded_producer()?))
    }

    async fn consumer(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(self.embedded_consumer(group, topics)?))
    }

    async fn close(&self) -> Result<()> {
        let Some(tx) = lock(&self.inner.tx).take() else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        let flushed = match tx.send(Command::Close { ack }).await {
            Ok(()) => done.await.unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        let handle = lock(&self.inner.writer).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        tracing::info!("embedded bus closed");
        flushed
    }
}

/// Producer of the embedded bus; cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedProducer {
    tx: mpsc::Sender<Command>,
}

impl EmbeddedProducer {
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<()>>) -> Command,
    ) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx.send(make(ack)).await.map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)?
    }
}

#[async_trait]
impl Producer for EmbeddedProducer {
    async fn send(&self, topic: Topic, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(r) = records
            .iter()
            .find(|r| r.key.len() + r.payload.len() > MAX_RECORD_BYTES)
        {
            return Err(Error::RecordTooLarge {
                size: r.key.len() + r.payload.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        self.request(|ack| Command::Append {
            topic,
            records,
            ack,
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        self.request(|ack| Command::Flush { ack }).await
    }
}

/// A consumer's position in one topic.
#[derive(Debug)]
struct Cursor {
    shared: Arc<TopicShared>,
    end_rx: watch::Receiver<u64>,
    /// Next offset to hand out.
    position: u64,
    committed: u64,
    reader: Option<SegmentReader>,
}

impl Cursor {
    fn available(&self) -> bool {
        self.position < *self.end_rx.borrow()
    }

    /// Reads up to `max` records below the durable end. Blocking i/o.
    fn read(&mut self, max: usize, max_bytes: usize, out: &mut Vec<Delivery>) -> Result<()> {
        let end = *self.end_rx.borrow();
        let mut bytes = 0;
        while out.len() < max && bytes < max_bytes && self.position < end {
            if self.reader.is_none() {
                let segs = self.shared.segments();
                let Some(seg) = segment_for(&segs, self.position) else {
                    return Ok(());
                };
                // Retention may have removed what this cursor pointed at: skip to what is kept.
                self.position = self.position.max(seg.base);
                match SegmentReader::open(&self.shared.dir, seg.base, self.position) {
                    Ok(r) => self.reader = Some(r),
                    // Deleted by retention between listing and opening: look again.
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        let base = seg.base;
                        match self.shared.segments().iter().find(|s| s.base > base) {
                            Some(next) => self.position = self.position.max(next.base),
                            None => return Ok(()),
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(reader) = self.reader.as_mut() else {
                return Ok(());
            };
            match reader.read()? {
                Some(r) => {
                    self.position = r.offset + 1;
                    bytes += r.payload.len() + r.key.len();
                    out.push(Delivery {
                        topic: self.shared.topic,
                        partition: 0,
                        offset: r.offset as i64,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key,
                        payload: r.payload,
                    });
                }
                None => {
                    // End of this segment's data: the next read opens the following segment.
                    let base = reader.base;
                    let next_base = self
                        .shared
                        .segments()
                        .iter()
                        .find(|s| s.base > base)
                        .map(|s| s.base);
                    match next_base {
                        Some(b) => {
                            self.position = self.position.max(b);
                            self.reader = None;
                        }
                        None => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The segment holding `position`, or the oldest kept one when `position` was deleted.
fn segment_for(segs: &[SegmentMeta], position: u64) -> Option<&SegmentMeta> {
    segs.iter()
        .rev()
        .find(|s| s.base <= position)
        .or_else(|| segs.first())
}

/// Consumer of the embedded bus.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    inner: Arc<Inner>,
    group: String,
    cursors: Vec<Cursor>,
    /// Round-robin start, so one busy topic cannot starve the others.
    next_cursor: usize,
}

/// Bytes one poll returns at most (besides the record count).
const MAX_POLL_BYTES: usize = 8 * 1024 * 1024;

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.cursors.iter().any(Cursor::available) && max > 0 {
                let mut cursors = std::mem::take(&mut self.cursors);
                let start = self.next_cursor % cursors.len().max(1);
                let (cursors, out) = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    let n = cursors.len();
                    let mut result = Ok(());
                    for i in 0..n {
                        let c = &mut cursors[(start + i) % n];
                        if let Err(e) = c.read(max, MAX_POLL_BYTES, &mut out) {
                            result = Err(e);
                            break;
                        }
                    }
                    (cursors, result.map(|()| out))
                })
                .await
                .map_err(|e| Error::Corrupt {
                    path: self.inner.dir.clone(),
                    reason: format!("bus reader task failed: {e}"),
                })?;
                self.cursors = cursors;
                self.next_cursor = start + 1;
                let out = out?;
                if !out.is_empty() {
                    count_consumed(self.inner.kind, &self.group, &out);
                    return Ok(out);
                }
            }
            if self.cursors.is_empty() {
                tokio::time::sleep_until(deadline).await;
                return Ok(Vec::new());
            }
            let changed = futures::future::select_all(
                self.cursors.iter_mut().map(|c| c.end_rx.changed().boxed()),
            );
            let woke = match tokio::time::timeout_at(deadline, changed).await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok((result, _, _)) => result.is_ok(),
            };
            // The writer is gone; whatever is durable can still be read.
            if !woke && !self.cursors.iter().any(Cursor::available) {
                return Err(Error::Closed);
            }
        }
    }

    async fn commit(&mut self) -> Result<()> {
        let positions: Positions = self
            .cursors
            .iter()
            .filter(|c| c.position != c.committed)
            .map(|c| (c.shared.topic, c.position))
            .collect();
        if positions.is_empty() {
            return Ok(());
        }
        let offsets = self.inner.offsets.clone();
        let group = self.group.clone();
        let result = tokio::task::spawn_blocking(move || offsets.commit(&group, &positions))
            .await
            .map_err(|e| Error::Corrupt {
                path: self.inner.dir.clone(),
                reason: format!("commit task failed: {e}"),
            })
            .and_then(|r| r);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        COMMITS
            .with_label_values(&[self.inner.kind, &self.group, outcome])
            .inc();
        result?;
        for c in &mut self.cursors {
            c.committed = c.position;
            let end = *c.end_rx.borrow();
            CONSUMER_LAG
                .with_label_values(&[c.shared.topic.name(), &self.group])
                .set(end.saturating_sub(c.committed) as i64);
        }
        Ok(())
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        lock(&self.inner.members).remove(&self.group);
    }
}

#[cfg(test)]
mod tests;

//! The single writer of the embedded bus: one OS thread that appends every topic's records and
//! acknowledges them after a group commit (one write and one fdatasync per touched topic for all
//! commands waiting at that moment).
//!
//! Invariant: `durable_end` of a topic only ever covers records that were fsynced; consumers read
//! below it and nothing else.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::embedded::EmbeddedConfig;
use crate::embedded::offsets::OffsetStore;
use crate::embedded::segment::{SegmentMeta, encode, segment_path, sync_dir};
use crate::metrics::{
    EXPIRED_UNCONSUMED, FSYNC_SECONDS, LOG_BYTES, PRODUCE_ERRORS, PRODUCED_BYTES, PRODUCED_RECORDS,
};
use crate::{Error, Record, Result, Topic, now_ms};

/// How many queued commands one group commit takes at most.
const MAX_COMMANDS_PER_COMMIT: usize = 4096;
/// How often retention runs when no segment rolls (the bus sends itself `Maintain` as often).
pub(crate) const RETENTION_EVERY: Duration = Duration::from_secs(30);

/// How a log deletes old segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retention {
    /// By age and size (`retention`, `retention_bytes`), counting what groups had not committed:
    /// the embedded bus.
    AgeAndSize,
    /// A closed segment is deleted once every group with a committed position on its topic is
    /// past its last record, and never before: the spool, whose size is bounded by refusing
    /// appends instead.
    Committed,
}

/// What distinguishes one use of the log from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The `bus` label of the log's metrics.
    pub(crate) kind: &'static str,
    pub(crate) retention: Retention,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            kind: "embedded",
            retention: Retention::AgeAndSize,
        }
    }
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Append {
        topic: Topic,
        records: Vec<Record>,
        ack: oneshot::Sender<Result<()>>,
    },
    /// Acknowledged once everything queued before it is durable.
    Flush { ack: oneshot::Sender<Result<()>> },
    /// Makes everything durable, acknowledges, and stops the writer.
    Close { ack: oneshot::Sender<Result<()>> },
    /// Housekeeping: applies retention now (periodically on an idle bus, and after the spool's
    /// drain committed).
    Maintain,
}

/// A topic's state shared between the writer and consumers.
#[derive(Debug)]
pub(crate) struct TopicShared {
    pub(crate) topic: Topic,
    pub(crate) dir: PathBuf,
    /// One past the last durable offset.
    pub(crate) durable_end: watch::Sender<u64>,
    /// Segments oldest first; the last one is being written.
    pub(crate) segments: RwLock<Vec<SegmentMeta>>,
}

impl TopicShared {
    pub(crate) fn segments(&self) -> Vec<SegmentMeta> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn with_segments<T>(&self, f: impl FnOnce(&mut Vec<SegmentMeta>) -> T) -> T {
        f(&mut self.segments.write().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The writer's handle on one topic's active segment.
#[derive(Debug)]
pub(crate) struct TopicWriter {
    pub(crate) shared: Arc<TopicShared>,
    pub(crate) file: File,
    pub(crate) active_base: u64,
    pub(crate) active_bytes: u64,
    pub(crate) next_offset: u64,
    /// Records encoded in this round, not yet written.
    buf: Vec<u8>,
    /// Per-round accounting for metrics.
    round_records: u64,
    round_bytes: u64,
}

impl TopicWriter {
    pub(crate) fn new(shared: Arc<TopicShared>, next_offset: u64) -> Result<TopicWriter> {
        let (active_base, active_bytes) = {
            let segs = shared.segments();
            let last = segs.last().ok_or_else(|| Error::Corrupt {
                path: shared.dir.clone(),
                reason: "topic has no segment".to_owned(),
            })?;
            (last.base, last.bytes)
        };
        let path = segment_path(&shared.dir, active_base);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        Ok(TopicWriter {
            shared,
            file,
            active_base,
            active_bytes,
            next_offset,
            buf: Vec::new(),
            round_records: 0,
            round_bytes: 0,
        })
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.shared.dir, self.active_base)
    }

    /// Encodes records into this round's buffer, rolling the segment first if it is full.
    fn append(&mut self, records: &[Record], segment_bytes: u64) -> Result<bool> {
        let mut rolled = false;
        if self.active_bytes + self.buf.len() as u64 >= segment_bytes {
            self.sync()?;
            self.roll()?;
            rolled = true;
        }
        let ts = now_ms();
        for r in records {
            encode(&mut self.buf, self.next_offset, ts, &r.key, &r.payload);
            self.next_offset += 1;
            self.round_records += 1;
            self.round_bytes += (r.key.len() + r.payload.len()) as u64;
        }
        Ok(rolled)
    }

    /// Writes and fsyncs this round's records, then publishes the new durable end.
    fn sync(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.path();
        self.file.write_all(&self.buf).map_err(Error::io(&path))?;
        self.file.sync_data().map_err(Error::io(&path))?;
        self.active_bytes += self.buf.len() as u64;
        self.buf.clear();
        let (base, bytes) = (self.active_base, self.active_bytes);
        self.shared.with_segments(|segs| {
            if let Some(last) = segs.last_mut().filter(|s| s.base == base) {
                last.bytes = bytes;
                last.modified = SystemTime::now();
            }
        });
        self.shared.durable_end.send_replace(self.next_offset);
        Ok(())
    }

    /// Closes the active segment (already synced) and starts a new one at `next_offset`.
    fn roll(&mut self) -> Result<()> {
        let base = self.next_offset;
        let path = segment_path(&self.shared.dir, base);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        sync_dir(&self.shared.dir)?;
        self.file = file;
        self.active_base = base;
        self.active_bytes = 0;
        self.shared.with_segments(|segs| {
            segs.push(SegmentMeta {
                base,
                bytes: 0,
                modified: SystemTime::now(),
            })
        });
        tracing::debug!(topic = %self.shared.topic, base, "bus segment rolled");
        Ok(())
    }

    fn take_round(&mut self) -> (u64, u64) {
        let r = (self.round_records, self.round_bytes);
        self.round_records = 0;
        self.round_bytes = 0;
        r
    }

    /// Deletes closed segments, oldest first: past the age or size limit, or (the spool) once
    /// committed by every group.
    fn apply_retention(&self, config: &EmbeddedConfig, offsets: &OffsetStore, policy: Policy) {
        let now = SystemTime::now();
        let segs = self.shared.segments();
        let mut total: u64 = segs.iter().map(|s| s.bytes).sum();
        let mut deleted = 0;
        let committed_by_all = offsets
            .all_for(self.shared.topic)
            .into_iter()
            .map(|(_, o)| o)
            .min()
            .unwrap_or(0);
        for (i, seg) in segs.iter().enumerate().take(segs.len().saturating_sub(1)) {
            let expired = match policy.retention {
                Retention::AgeAndSize => {
                    let too_old = now
                        .duration_since(seg.modified)
                        .is_ok_and(|age| age > config.retention);
                    too_old || total > config.retention_bytes.as_u64()
                }
                Retention::Committed => segs[i + 1].base <= committed_by_all,
            };
            if !expired {
                break;
            }
            let path = segment_path(&self.shared.dir, seg.base);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete expired bus segment");
                break;
            }
            let end = segs[i + 1].base;
            let groups = match policy.retention {
                Retention::AgeAndSize => offsets.all_for(self.shared.topic),
                Retention::Committed => Vec::new(),
            };
            for (group, committed) in groups {
                if committed < end {
                    let lost = end - committed.max(seg.base);
                    EXPIRED_UNCONSUMED
                        .with_label_values(&[self.shared.topic.name(), &group])
                        .inc_by(lost);
                    tracing::warn!(topic = %self.shared.topic, group, lost, "retention deleted records a consumer group had not committed");
                }
            }
            total -= seg.bytes;
            deleted += 1;
        }
        if deleted > 0 {
            self.shared.with_segments(|s| {
                s.drain(..deleted);
            });
            if let Err(e) = sync_dir(&self.shared.dir) {
                tracing::warn!(error = %e, "cannot sync bus directory after retention");
            }
        }
        if policy.retention == Retention::AgeAndSize {
            LOG_BYTES
                .with_label_values(&[self.shared.topic.name()])
                .set(total as i64);
        }
    }
}

/// The writer thread's loop. Returns when closed or when every sender is gone.
pub(crate) fn run(
    mut rx: mpsc::Receiver<Command>,
    mut topics: BTreeMap<Topic, TopicWriter>,
    config: EmbeddedConfig,
    offsets: Arc<OffsetStore>,
    policy: Policy,
) {
    let kind = policy.kind;
    let segment_bytes = config.segment_bytes.as_u64();
    let mut poisoned: Option<String> = None;
    let mut last_retention = Instant::now();
    for w in topics.values() {
        w.apply_retention(&config, &offsets, policy);
    }
    while let Some(first) = rx.blocking_recv() {
        let mut commands = vec![first];
        while commands.len() < MAX_COMMANDS_PER_COMMIT {
            match rx.try_recv() {
                Ok(c) => commands.push(c),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut acks: Vec<oneshot::Sender<Result<()>>> = Vec::new();
        let mut close_ack = None;
        let mut rolled = false;
        let mut maintain = false;
        for command in commands {
            match command {
                Command::Append {
                    topic,
                    records,
                    ack,
                } => {
                    if let Some(reason) = &poisoned {
                        let _ = ack.send(Err(Error::Poisoned(reason.clone())));
                        continue;
                    }
                    let Some(w) = topics.get_mut(&topic) else {
                        let _ = ack.send(Err(Error::Closed));
                        continue;
                    };
                    match w.append(&records, segment_bytes) {
                        Ok(r) => {
                            rolled |= r;
                            acks.push(ack);
                        }
                        Err(e) => {
                            poisoned = Some(e.to_string());
                            let _ = ack.send(Err(e));
                        }
                    }
                }
                Command::Flush { ack } => acks.push(ack),
                Command::Maintain => maintain = true,
                Command::Close { ack } => close_ack = Some(ack),
            }
            if close_ack.is_some() {
                break;
            }
        }
        // Group commit: one write + fdatasync per topic with records this round.
        let mut failure = poisoned.clone();
        if failure.is_none() {
            for w in topics.values_mut() {
                if let Err(e) = w.sync() {
                    tracing::error!(error = %e, "bus write failed; refusing further appends until restart");
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(reason) = &failure {
            poisoned = Some(reason.clone());
        }
        FSYNC_SECONDS.observe(started.elapsed().as_secs_f64());
        for w in topics.values_mut() {
            let (records, bytes) = w.take_round();
            let name = w.shared.topic.name();
            if failure.is_some() {
                if records > 0 {
                    PRODUCE_ERRORS.with_label_values(&[kind, name]).inc();
                }
            } else {
                PRODUCED_RECORDS
                    .with_label_values(&[kind, name])
                    .inc_by(records);
                PRODUCED_BYTES
                    .with_label_values(&[kind, name])
                    .inc_by(bytes);
            }
        }
        // Before acknowledging, so that a producer sees retention settled after its send.
        if rolled || maintain || last_retention.elapsed() >= RETENTION_EVERY {
            for w in topics.values() {
                w.apply_retention(&config, &offsets, policy);
            }
            last_retention = Instant::now();
        }
        for ack in acks {
            let result = match &failure {
                None => Ok(()),
                Some(reason) => Err(Error::Poisoned(reason.clone())),
            };
            let _ = ack.send(result);
        }
        if let Some(ack) = close_ack {
            let _ = ack.send(match failure {
                None => Ok(()),
                Some(reason) => Err(Error::Poisoned(reason)),
            });
            // Anything queued after Close is refused by dropping its acknowledgement channel.
            rx.close();
            while let Ok(cmd) = rx.try_recv() {
                drop(cmd);
            }
            return;
        }
    }
}

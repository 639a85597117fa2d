//! What the file-log pipelines (router access logs, container logs) share: the loop that polls,
//! ships and commits; sending with retries; the checkpoint file; stream labels; the tailer's
//! metrics.
//!
//! A pipeline's step (`Pipeline::poll`) reads its files into a batch, the caller ships the batch
//! and then commits it (`Pipeline::commit`): file positions advance and the checkpoint is
//! replaced only after the batch was acknowledged, so that a restart resumes after the last
//! shipped line.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::proto::Label;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

mod ship;

pub use ship::{BusLogsSink, LogsSink, MemoryLogsSink};

use crate::tail::PollStats;
use crate::{Error, Result};

/// A file pipeline, as [`run`] drives it.
pub(crate) trait Pipeline: Send + 'static {
    type Batch: Send + 'static;
    /// Names the pipeline in Sextant's own logs.
    const NAME: &'static str;

    /// Reads what the files have now. `mono_ms` is a monotonic clock (rotation waits), `wall`
    /// the wall-clock time.
    fn poll(&mut self, mono_ms: u64, wall: SystemTime) -> Self::Batch;

    /// Records that `batch` was shipped: advances positions and replaces the checkpoint.
    fn commit(&mut self, batch: &Self::Batch) -> Result<()>;

    /// Whether `batch` has nothing to ship or acknowledge.
    fn is_empty(batch: &Self::Batch) -> bool;

    /// Whether a file had more than the per-poll budget: poll again at once.
    fn more(batch: &Self::Batch) -> bool;
}

/// Polls, ships and commits until `shutdown` resolves: at once again while files have a backlog,
/// else just after each wall-clock second. `ship` hands the batch back once it was acknowledged
/// (it retries failed sends itself; the files are the buffer meanwhile), and nothing is read
/// again until then. A failed checkpoint write is counted in `checkpoint_errors` and logged; the
/// next commit writes it again.
pub(crate) async fn run<P, S, F>(
    mut pipeline: P,
    mut ship: S,
    shutdown: impl Future<Output = ()>,
    checkpoint_errors: IntCounter,
) where
    P: Pipeline,
    S: FnMut(P::Batch) -> F,
    F: Future<Output = P::Batch>,
{
    tokio::pin!(shutdown);
    let start = Instant::now();
    loop {
        let mono_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let joined = tokio::task::spawn_blocking(move || {
            let b = pipeline.poll(mono_ms, SystemTime::now());
            (pipeline, b)
        })
        .await;
        let mut batch;
        (pipeline, batch) = match joined {
            Ok(r) => r,
            Err(e) => {
                warn!(pipeline = P::NAME, error = %e, "poll task failed");
                return;
            }
        };
        let more = P::more(&batch);
        if !P::is_empty(&batch) {
            tokio::select! {
                _ = &mut shutdown => return,
                b = ship(batch) => batch = b,
            }
            let joined = tokio::task::spawn_blocking(move || {
                let r = pipeline.commit(&batch);
                (pipeline, r)
            })
            .await;
            let r;
            (pipeline, r) = match joined {
                Ok(x) => x,
                Err(e) => {
                    warn!(pipeline = P::NAME, error = %e, "commit task failed");
                    return;
                }
            };
            if let Err(e) = r {
                checkpoint_errors.inc();
                warn!(pipeline = P::NAME, error = %e, "writing the checkpoint failed");
            }
        }
        if more {
            continue;
        }
        // Just after the next wall-clock second.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_millis();
        let wait = Duration::from_millis(u64::from(1000 - since.min(999)) + 5);
        tokio::select! {
            _ = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Calls `send` until it succeeds, with back-off from 100 ms to 5 s; `on_error` sees each
/// failure.
pub(crate) async fn until_sent<S, F>(mut send: S, mut on_error: impl FnMut(&Error))
where
    S: FnMut() -> F,
    F: Future<Output = Result<()>>,
{
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = send().await {
        on_error(&e);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The checkpoint in `path`, or the default when there is none yet. Creates the directory.
pub(crate) fn load_checkpoint<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    match crate::tail::checkpoint::read_if_exists(path).map_err(Error::io(path))? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        None => Ok(T::default()),
    }
}

/// Replaces the checkpoint in `path` atomically.
pub(crate) fn save_checkpoint<T: Serialize>(path: &Path, checkpoint: &T) -> Result<()> {
    let bytes = serde_json::to_vec(checkpoint).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    crate::tail::checkpoint::write_atomic(path, &bytes).map_err(Error::io(path))
}

/// Sorts labels by name; of several with one name, the last one pushed wins.
pub(crate) fn sort_labels(labels: &mut Vec<Label>) {
    // Stable: labels of one name keep their order, and the last of them is kept.
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels.dedup_by(|later, earlier| {
        later.name == earlier.name && {
            std::mem::swap(later, earlier);
            true
        }
    });
}

/// Whether `name` is a valid label name for configured labels (Prometheus's, without the
/// reserved `__` prefix).
pub(crate) fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("__")
        && name
            .chars()
            .enumerate()
            .all(|(k, c)| c == '_' || c.is_ascii_alphabetic() || (k > 0 && c.is_ascii_digit()))
}

/// A label pair.
pub(crate) fn label(name: &str, value: impl Into<String>) -> Label {
    Label {
        name: name.to_owned(),
        value: value.into(),
    }
}

/// The tailer's metrics of one pipeline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TailMetrics<'a> {
    /// Bytes read.
    pub bytes: &'a IntCounterVec,
    /// By event (one more label than the others): opened, closed, truncated, rewritten,
    /// cut_line, error.
    pub events: &'a IntCounterVec,
    pub files_open: &'a IntGaugeVec,
}

impl TailMetrics<'_> {
    /// Counts one poll of a tailer that has `open_files` open now; `labels` are the values of
    /// the pipeline's own labels (the source's name, or none).
    pub(crate) fn record(&self, stats: &PollStats, open_files: usize, labels: &[&str]) {
        if stats.read.bytes > 0 {
            self.bytes
                .with_label_values(labels)
                .inc_by(stats.read.bytes);
        }
        for (event, n) in [
            ("opened", stats.opened),
            ("closed", stats.closed),
            ("truncated", stats.truncations),
            ("rewritten", stats.read.rewritten),
            ("cut_line", stats.read.truncated_lines),
            ("error", stats.errors),
        ] {
            if n > 0 {
                let mut l = labels.to_vec();
                l.push(event);
                self.events.with_label_values(&l).inc_by(n);
            }
        }
        self.files_open
            .with_label_values(labels)
            .set(i64::try_from(open_files).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_labels_of_one_name_win() {
        let mut l = vec![
            label("job", "configured"),
            label("b", "1"),
            label("job", "own"),
            label("a", "2"),
        ];
        sort_labels(&mut l);
        assert_eq!(
            l,
            vec![label("a", "2"), label("b", "1"), label("job", "own")]
        );
    }

    #[test]
    fn label_names() {
        assert!(valid_label_name("job"));
        assert!(valid_label_name("_x9"));
        assert!(!valid_label_name("9x"));
        assert!(!valid_label_name("__name__"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
    }

    #[test]
    fn checkpoints_round_trip_and_default_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/cp.json");
        let v: Vec<u64> = load_checkpoint(&p).unwrap();
        assert!(v.is_empty());
        save_checkpoint(&p, &vec![1u64, 2]).unwrap();
        assert_eq!(load_checkpoint::<Vec<u64>>(&p).unwrap(), vec![1, 2]);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(load_checkpoint::<Vec<u64>>(&p).is_err());
    }
}

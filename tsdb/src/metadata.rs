//! Metric metadata (type, help, unit per metric family) of one tenant, fed by remote_write's
//! metadata, the `# TYPE/# HELP/# UNIT` lines of imports and scrapes; served by
//! `/api/v1/metadata`.
//!
//! [`PersistentMetadata`] keeps it in `<tenant>/metadata.json`, replaced atomically (write,
//! fsync, rename) when an entry is added, at most once a second; a change within the second
//! after a write is written by the next change after it or by [`PersistentMetadata::flush`]
//! (the tenant's checkpoint and close). Loaded at open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::metrics;

/// One metadata entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Metadata {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset` or
    /// `unknown`.
    #[serde(rename = "type")]
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// Distinct metadata per family beyond which the oldest variant is forgotten.
const MAX_VARIANTS: usize = 10;

/// The file's name in the tenant directory.
pub(crate) const FILE: &str = "metadata.json";

/// Least time between two writes of the file.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// One tenant's metadata: per family, its distinct entries, most recently seen last.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetadataSet {
    families: BTreeMap<String, Vec<Metadata>>,
}

impl MetadataSet {
    /// Records entries `(family, metadata)`; a repeated entry is kept once. Returns whether an
    /// entry was added (a repeated one only moves to the end).
    pub fn record(&mut self, entries: impl IntoIterator<Item = (String, Metadata)>) -> bool {
        let mut added = false;
        for (family, md) in entries {
            let variants = self.families.entry(family).or_default();
            if let Some(i) = variants.iter().position(|v| *v == md) {
                if i + 1 != variants.len() {
                    let v = variants.remove(i);
                    variants.push(v);
                }
                continue;
            }
            if variants.len() >= MAX_VARIANTS {
                variants.remove(0);
            }
            variants.push(md);
            added = true;
        }
        added
    }

    /// Families (optionally only `metric`) with their metadata, at most `limit` families and
    /// `limit_per_metric` entries each (negative: no limit), as Prometheus's metadata API.
    pub fn list(
        &self,
        metric: Option<&str>,
        limit: i64,
        limit_per_metric: i64,
    ) -> BTreeMap<String, Vec<Metadata>> {
        let mut out = BTreeMap::new();
        for (family, variants) in &self.families {
            if metric.is_some_and(|m| m != family) {
                continue;
            }
            if limit >= 0 && out.len() as i64 >= limit {
                break;
            }
            let mut v = variants.clone();
            if limit_per_metric > 0 {
                v.truncate(usize::try_from(limit_per_metric).unwrap_or(usize::MAX));
            }
            out.insert(family.clone(), v);
        }
        out
    }
}

#[derive(Debug)]
struct State {
    set: MetadataSet,
    /// Changed since the last write.
    dirty: bool,
    last_write: Option<Instant>,
}

/// A tenant's metadata kept in `<dir>/metadata.json`.
#[derive(Debug)]
pub struct PersistentMetadata {
    path: PathBuf,
    state: Mutex<State>,
}

impl PersistentMetadata {
    /// Loads `dir/metadata.json` (none yet: empty). An unreadable file is logged and replaced:
    /// senders resend metadata, so losing it is better than refusing to open the store.
    pub fn open(dir: &Path) -> PersistentMetadata {
        let path = dir.join(FILE);
        let set = match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e,
                    "tsdb: ignoring an unreadable metadata file");
                MetadataSet::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetadataSet::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e,
                    "tsdb: ignoring an unreadable metadata file");
                MetadataSet::default()
            }
        };
        PersistentMetadata {
            path,
            state: Mutex::new(State {
                set,
                dirty: false,
                last_write: None,
            }),
        }
    }

    /// Records entries; writes the file when they changed it and the last write is a second
    /// old (or when an earlier change is still unwritten).
    pub fn record(
        &self,
        entries: impl IntoIterator<Item = (String, Metadata)>,
        now: Instant,
    ) -> Result<(), std::io::Error> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.set.record(entries) {
            st.dirty = true;
        }
        let due = st
            .last_write
            .is_none_or(|w| now.saturating_duration_since(w) >= DEBOUNCE);
        if st.dirty && due {
            self.write(&mut st, now)?;
        }
        Ok(())
    }

    /// Writes an unwritten change.
    pub fn flush(&self) -> Result<(), std::io::Error> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.dirty {
            self.write(&mut st, Instant::now())?;
        }
        Ok(())
    }

    pub fn list(
        &self,
        metric: Option<&str>,
        limit: i64,
        limit_per_metric: i64,
    ) -> BTreeMap<String, Vec<Metadata>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .list(metric, limit, limit_per_metric)
    }

    fn write(&self, st: &mut State, now: Instant) -> Result<(), std::io::Error> {
        let res = write_atomically(&self.path, &st.set);
        metrics::METADATA_WRITES
            .with_label_values(&[if res.is_ok() { "ok" } else { "error" }])
            .inc();
        res?;
        st.dirty = false;
        st.last_write = Some(now);
        Ok(())
    }
}

fn write_atomically(path: &Path, set: &MetadataSet) -> Result<(), std::io::Error> {
    use std::io::Write as _;
    let data = serde_json::to_vec(set).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(kind: &str, help: &str) -> Metadata {
        Metadata {
            kind: kind.into(),
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn distinct_and_limited() {
        let mut s = MetadataSet::default();
        assert!(s.record([
            ("x".into(), md("counter", "X")),
            ("x".into(), md("counter", "X")),
        ]));
        assert!(!s.record([("x".into(), md("counter", "X"))]));
        assert!(s.record([
            ("y".into(), md("gauge", "Y")),
            ("x".into(), md("gauge", "X2")),
        ]));
        let all = s.list(None, -1, -1);
        assert_eq!(all.len(), 2);
        assert_eq!(all["x"].len(), 2);
        assert_eq!(s.list(None, 1, -1).len(), 1);
        assert_eq!(s.list(None, -1, 1)["x"].len(), 1);
        assert_eq!(s.list(Some("y"), -1, -1).len(), 1);
        assert!(s.list(Some("z"), -1, -1).is_empty());
        for i in 0..15 {
            s.record([("x".into(), md("gauge", &i.to_string()))]);
        }
        assert_eq!(s.list(Some("x"), -1, -1)["x"].len(), MAX_VARIANTS);
    }

    #[test]
    fn persisted_debounced_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let m = PersistentMetadata::open(tmp.path());
        m.record([("a".into(), md("counter", "A"))], t0).unwrap();
        // Written at once: the first change.
        let back = PersistentMetadata::open(tmp.path());
        assert_eq!(back.list(None, -1, -1)["a"], vec![md("counter", "A")]);
        // A change within the second is not written yet…
        m.record(
            [("b".into(), md("gauge", "B"))],
            t0 + Duration::from_millis(10),
        )
        .unwrap();
        assert!(
            PersistentMetadata::open(tmp.path())
                .list(Some("b"), -1, -1)
                .is_empty()
        );
        // …but by the next record after it, even one changing nothing.
        m.record(
            [("a".into(), md("counter", "A"))],
            t0 + Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(
            PersistentMetadata::open(tmp.path())
                .list(None, -1, -1)
                .len(),
            2
        );
        m.record(
            [("c".into(), md("gauge", "C"))],
            t0 + Duration::from_millis(2010),
        )
        .unwrap();
        m.flush().unwrap();
        let back = PersistentMetadata::open(tmp.path());
        assert_eq!(back.list(None, -1, -1).len(), 3);
        assert_eq!(back.list(Some("c"), -1, -1)["c"][0].kind, "gauge");
        // A corrupt file opens empty rather than failing the store.
        std::fs::write(tmp.path().join(FILE), b"{not json").unwrap();
        assert!(
            PersistentMetadata::open(tmp.path())
                .list(None, -1, -1)
                .is_empty()
        );
    }
}

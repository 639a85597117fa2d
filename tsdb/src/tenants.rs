//! [`DiskTenants`]: one persistent [`Tsdb`] per tenant under `<data>/tsdb/<tenant>/`, opened at
//! start for every tenant on disk, created on a tenant's first use, and maintained by a
//! background thread: every minute (or checkpoint interval, if shorter) it cuts heads into
//! blocks, applies block retention and compacts; every checkpoint interval it checkpoints and
//! enforces the size limit. [`DiskTenants::close`] checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use crate::config::TsdbConfig;
use crate::storage::{StorageError, Store, Tenants};
use crate::tsdb::{Tsdb, TsdbError};

/// The directory name of a tenant: bytes outside `[A-Za-z0-9_-]` (and `.`, except leading)
/// are `%XX`-escaped, so any `X-Scope-OrgID` maps to one safe name and back.
pub fn tenant_dir_name(org_id: &str) -> String {
    let mut out = String::with_capacity(org_id.len());
    for (i, b) in org_id.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

/// The tenant of a directory name made by [`tenant_dir_name`].
pub fn tenant_from_dir_name(name: &str) -> Option<String> {
    if name == "%" {
        return Some(String::new());
    }
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// Persistent stores of all tenants.
#[derive(Debug)]
pub struct DiskTenants {
    root: PathBuf,
    cfg: TsdbConfig,
    stores: Arc<RwLock<HashMap<String, Arc<Tsdb>>>>,
    stop: Arc<Stop>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl DiskTenants {
    /// Opens `<data_dir>/tsdb`, every tenant in it, and starts the checkpoint thread.
    pub fn open(data_dir: &Path, cfg: TsdbConfig) -> Result<DiskTenants, TsdbError> {
        let root = data_dir.join("tsdb");
        std::fs::create_dir_all(&root).map_err(TsdbError::io(&root))?;
        let mut stores = HashMap::new();
        for e in std::fs::read_dir(&root).map_err(TsdbError::io(&root))? {
            let e = e.map_err(TsdbError::io(&root))?;
            if !e.file_type().map_err(TsdbError::io(&root))?.is_dir() {
                continue;
            }
            let name = e.file_name();
            let Some(tenant) = name.to_str().and_then(tenant_from_dir_name) else {
                tracing::warn!(dir = ?name, "tsdb: ignoring a directory that names no tenant");
                continue;
            };
            let db = Tsdb::open(&e.path(), &cfg)?;
            stores.insert(tenant, Arc::new(db));
        }
        let stores = Arc::new(RwLock::new(stores));
        let stop = Arc::new(Stop::default());
        let worker = {
            let stores = stores.clone();
            let stop = stop.clone();
            let every = cfg.wal.checkpoint_interval;
            let size = cfg.retention.size.as_u64();
            std::thread::Builder::new()
                .name("tsdb-maintenance".into())
                .spawn(move || checkpoint_loop(&stores, &stop, every, size))
                .map_err(TsdbError::io(&root))?
        };
        Ok(DiskTenants {
            root,
            cfg,
            stores,
            stop,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// The tenants with a store.
    pub fn tenant_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Stops the checkpoint thread and checkpoints every tenant (a clean shutdown).
    pub fn close(&self) -> Result<(), TsdbError> {
        self.stop_worker();
        let stores: Vec<Arc<Tsdb>> = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for db in stores {
            db.close()?;
        }
        Ok(())
    }

    fn stop_worker(&self) {
        *self.stop.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.wake.notify_all();
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("tsdb: the checkpoint thread panicked");
        }
    }

    fn store(&self, org_id: &str) -> Result<Arc<Tsdb>, TsdbError> {
        if let Some(db) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(org_id)
        {
            return Ok(db.clone());
        }
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = stores.get(org_id) {
            return Ok(db.clone());
        }
        let db = Arc::new(Tsdb::open(
            &self.root.join(tenant_dir_name(org_id)),
            &self.cfg,
        )?);
        tracing::info!(tenant = org_id, "tsdb: new tenant");
        stores.insert(org_id.to_string(), db.clone());
        Ok(db)
    }
}

impl Drop for DiskTenants {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

/// How often heads are checked for a cut and blocks for compaction.
const MAINTENANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn checkpoint_loop(
    stores: &RwLock<HashMap<String, Arc<Tsdb>>>,
    stop: &Stop,
    every: std::time::Duration,
    size: u64,
) {
    let tick = every.min(MAINTENANCE_EVERY);
    let mut last_checkpoint = std::time::Instant::now();
    loop {
        {
            let stopped = stop.stopped.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) = stop
                .wake
                .wait_timeout_while(stopped, tick, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        let all: Vec<(String, Arc<Tsdb>)> = stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (tenant, db) in &all {
            if let Err(e) = db.maintain() {
                tracing::error!(tenant = %tenant, error = %e, "tsdb: block maintenance failed");
            }
        }
        if last_checkpoint.elapsed() < every {
            continue;
        }
        last_checkpoint = std::time::Instant::now();
        for (tenant, db) in &all {
            if let Err(e) = db.checkpoint() {
                tracing::error!(tenant = %tenant, error = %e, "tsdb: checkpoint failed");
            }
        }
        if size > 0
            && let Err(e) = enforce_size(&all, size)
        {
            tracing::error!(error = %e, "tsdb: size retention failed");
        }
    }
}

/// Rounds of size retention per checkpoint round.
const SIZE_ROUNDS: usize = 20;

/// Drops the oldest data of all tenants until they use at most `size` bytes: each round drops
/// the chunks ending in the oldest 5 % of the stored time span (at least one minute).
pub(crate) fn enforce_size(all: &[(String, Arc<Tsdb>)], size: u64) -> Result<(), TsdbError> {
    for _ in 0..SIZE_ROUNDS {
        let mut total = 0u64;
        let mut oldest: Option<i64> = None;
        // The earliest end of a series' first chunk: a cutoff past it frees at least a chunk.
        let mut first_end = i64::MAX;
        for (_, db) in all {
            let (min, bytes) = db.usage()?;
            total += bytes;
            if let Some(m) = min {
                oldest = Some(oldest.map_or(m, |o| o.min(m)));
            }
            first_end = first_end.min(db.first_chunk_end().unwrap_or(i64::MAX));
        }
        let Some(oldest) = oldest else {
            return Ok(());
        };
        if total <= size {
            return Ok(());
        }
        let newest = all
            .iter()
            .filter_map(|(_, db)| db.newest())
            .max()
            .unwrap_or(oldest);
        let step = ((newest - oldest) / 20).max(60_000);
        let cutoff = oldest.saturating_add(step).max(first_end.saturating_add(1));
        tracing::info!(
            bytes = total,
            limit = size,
            cutoff,
            "tsdb: size retention drops old data"
        );
        for (_, db) in all {
            db.drop_before(cutoff)?;
        }
    }
    Ok(())
}

impl Tenants for DiskTenants {
    fn tenant(&self, org_id: &str) -> Result<Arc<dyn Store>, StorageError> {
        Ok(self.store(org_id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_escape_and_round_trip() {
        for t in ["anonymous", "team-a_1", "a.b", "../x", "", "é/%", ".hidden"] {
            let d = tenant_dir_name(t);
            assert!(
                !d.contains('/') && !d.starts_with('.') && !d.is_empty(),
                "{d}"
            );
            assert_eq!(tenant_from_dir_name(&d).as_deref(), Some(t));
        }
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;
    use crate::labels::Labels;
    use crate::storage::{Appendable, MatchOp, Matcher, Queryable, Sample, SeriesSamples};

    fn write(t: &DiskTenants, org: &str, name: &str) {
        let batch = [SeriesSamples {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: vec![Sample { t: 1000, v: 1.0 }],
        }];
        let r = t.tenant(org).unwrap().append(&batch).unwrap();
        assert_eq!(r.accepted, 1);
    }

    fn names(t: &DiskTenants, org: &str) -> Vec<String> {
        let m = Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap();
        t.tenant(org)
            .unwrap()
            .label_values("__name__", &[m], i64::MIN, i64::MAX)
            .unwrap()
    }

    #[test]
    fn size_retention_drops_the_oldest_data() {
        let tmp = tempfile::tempdir().unwrap();
        let t = DiskTenants::open(tmp.path(), TsdbConfig::default()).unwrap();
        for org in ["a", "b"] {
            let batch: Vec<SeriesSamples> = (0..20)
                .map(|i| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]),
                    samples: (0..2400)
                        .map(|k| Sample {
                            t: k * 15_000,
                            v: (k * 17 % 1000) as f64,
                        })
                        .collect(),
                })
                .collect();
            t.tenant(org).unwrap().append(&batch).unwrap();
        }
        let all: Vec<(String, Arc<Tsdb>)> = ["a", "b"]
            .iter()
            .map(|o| (o.to_string(), t.store(o).unwrap()))
            .collect();
        for (_, db) in &all {
            db.checkpoint().unwrap();
        }
        let before: u64 = all.iter().map(|(_, db)| db.usage().unwrap().1).sum();
        enforce_size(&all, before / 2).unwrap();
        let after: u64 = all.iter().map(|(_, db)| db.usage().unwrap().1).sum();
        assert!(after <= before / 2, "{after} > {}", before / 2);
        for (_, db) in &all {
            let (min, _) = db.usage().unwrap();
            assert!(min.unwrap() > 0, "the oldest data went");
            let m = Matcher::new(MatchOp::Equal, "__name__", "m").unwrap();
            let got = db.select(&[m], i64::MIN, i64::MAX).unwrap();
            assert_eq!(got.len(), 20);
            assert_eq!(
                got[0].samples.last().unwrap().t,
                2399 * 15_000,
                "the newest stays"
            );
        }
    }

    #[test]
    fn size_retention_drops_the_oldest_blocks_first() {
        let tmp = tempfile::tempdir().unwrap();
        let t = DiskTenants::open(tmp.path(), TsdbConfig::default()).unwrap();
        let db = t.store("a").unwrap();
        // 24 h at 15 s for 20 series, cut into 2 h blocks.
        for h in 0..24i64 {
            let batch: Vec<SeriesSamples> = (0..20)
                .map(|i| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]),
                    samples: (h * 240..(h + 1) * 240)
                        .map(|k| Sample {
                            t: k * 15_000,
                            v: (k * 17 % 1000) as f64,
                        })
                        .collect(),
                })
                .collect();
            db.append(&batch).unwrap();
            db.maintain().unwrap();
        }
        let blocks_before = db.blocks();
        assert!(blocks_before.len() >= 2, "{}", blocks_before.len());
        let all = vec![("a".to_owned(), db.clone())];
        let before = db.usage().unwrap().1;
        enforce_size(&all, before * 3 / 4).unwrap();
        let (min, after) = db.usage().unwrap();
        assert!(after <= before * 3 / 4, "{after} > {}", before * 3 / 4);
        // Whole blocks went, oldest first: what is left starts at a block boundary.
        let left = db.blocks();
        assert!(left.len() < blocks_before.len());
        assert_eq!(min, left.first().map(|b| b.min_t()));
        assert!(!blocks_before[0].dir().exists());
        let m = Matcher::new(MatchOp::Equal, "__name__", "m").unwrap();
        let got = db.select(&[m], i64::MIN, i64::MAX).unwrap();
        assert_eq!(got.len(), 20);
        assert_eq!(Some(got[0].samples[0].t), min);
        assert_eq!(got[0].samples.last().unwrap().t, (24 * 240 - 1) * 15_000);
    }

    #[test]
    fn tenants_are_isolated_and_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let t = DiskTenants::open(tmp.path(), TsdbConfig::default()).unwrap();
            write(&t, "team-a", "a_metric");
            write(&t, "team/b", "b_metric");
            assert_eq!(names(&t, "team-a"), ["a_metric"]);
            assert_eq!(names(&t, "team/b"), ["b_metric"]);
            t.close().unwrap();
        }
        assert!(tmp.path().join("tsdb/team-a/wal").is_dir());
        // Without a clean close (the WAL alone) as well.
        {
            let t = DiskTenants::open(tmp.path(), TsdbConfig::default()).unwrap();
            assert_eq!(t.tenant_ids(), ["team-a", "team/b"]);
            write(&t, "team-a", "a_late");
        }
        let t = DiskTenants::open(tmp.path(), TsdbConfig::default()).unwrap();
        assert_eq!(names(&t, "team-a"), ["a_late", "a_metric"]);
        assert_eq!(names(&t, "team/b"), ["b_metric"]);
        assert!(names(&t, "new").is_empty());
    }
}

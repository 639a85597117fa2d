//! [`DiskTenants`]: one persistent [`Tsdb`] per tenant under `<data>/tsdb/<tenant>/`, opened at
//! start for every tenant on disk, created on a tenant's first use, checkpointed periodically
//! by a background thread and on [`DiskTenants::close`].

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
            std::thread::Builder::new()
                .name("tsdb-checkpoint".into())
                .spawn(move || checkpoint_loop(&stores, &stop, every))
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

fn checkpoint_loop(
    stores: &RwLock<HashMap<String, Arc<Tsdb>>>,
    stop: &Stop,
    every: std::time::Duration,
) {
    loop {
        {
            let stopped = stop.stopped.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) = stop
                .wake
                .wait_timeout_while(stopped, every, |s| !*s)
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
        for (tenant, db) in all {
            if let Err(e) = db.checkpoint() {
                tracing::error!(tenant = %tenant, error = %e, "tsdb: checkpoint failed");
            }
        }
    }
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

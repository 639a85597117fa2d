//! Committed positions of consumer groups: one small JSON file per group under `groups/`,
//! replaced atomically (write, fsync, rename, fsync the directory) on each commit.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::embedded::segment::sync_dir;
use crate::{Error, Result, Topic};

/// Next offset to read, per topic, of one group.
pub(crate) type Positions = BTreeMap<Topic, u64>;

#[derive(Debug)]
pub(crate) struct OffsetStore {
    dir: PathBuf,
    groups: Mutex<BTreeMap<String, Positions>>,
}

impl OffsetStore {
    pub(crate) fn open(dir: &Path) -> Result<OffsetStore> {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let mut groups = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
            let path = entry.map_err(Error::io(dir))?.path();
            let Some(group) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue; // includes leftover `.tmp` files of an interrupted commit
            };
            let text = fs::read_to_string(&path).map_err(Error::io(&path))?;
            let raw: BTreeMap<String, u64> =
                serde_json::from_str(&text).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let positions = raw
                .into_iter()
                .filter_map(|(t, o)| Topic::from_name(&t).map(|t| (t, o)))
                .collect();
            groups.insert(group.to_owned(), positions);
        }
        Ok(OffsetStore {
            dir: dir.to_owned(),
            groups: Mutex::new(groups),
        })
    }

    /// The committed position of `group` on `topic`.
    pub(crate) fn get(&self, group: &str, topic: Topic) -> Option<u64> {
        self.lock().get(group).and_then(|p| p.get(&topic)).copied()
    }

    /// Every group's committed position on `topic`.
    pub(crate) fn all_for(&self, topic: Topic) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter_map(|(g, p)| p.get(&topic).map(|o| (g.clone(), *o)))
            .collect()
    }

    /// Durably records `positions` for `group` (merged over what it had). Blocking i/o.
    pub(crate) fn commit(&self, group: &str, positions: &Positions) -> Result<()> {
        let mut merged = self.lock().get(group).cloned().unwrap_or_default();
        merged.extend(positions.iter().map(|(t, o)| (*t, *o)));
        let raw: BTreeMap<&str, u64> = merged.iter().map(|(t, o)| (t.name(), *o)).collect();
        let text = serde_json::to_string(&raw).map_err(|e| Error::Corrupt {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let path = self.dir.join(format!("{group}.json"));
        let tmp = self.dir.join(format!("{group}.json.tmp"));
        let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        sync_dir(&self.dir)?;
        self.lock().insert(group.to_owned(), merged);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Positions>> {
        // A panic while holding this lock leaves the map consistent (it is replaced whole).
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        store
            .commit("tsdb", &Positions::from([(Topic::Metrics, 10)]))
            .unwrap();
        store
            .commit("tsdb", &Positions::from([(Topic::Logs, 3)]))
            .unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.get("tsdb", Topic::Metrics), Some(10));
        assert_eq!(store.get("tsdb", Topic::Logs), Some(3));
        assert_eq!(store.get("other", Topic::Logs), None);
        assert_eq!(store.all_for(Topic::Metrics), vec![("tsdb".to_owned(), 10)]);
    }
}

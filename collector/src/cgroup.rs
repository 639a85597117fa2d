//! Container metrics from cgroups: discovery of container cgroups in the v1 and v2 hierarchies
//! and their statistics under cAdvisor's names.
//!
//! Every tick walks the hierarchy (directories only, `d_type` from `getdents`, no `stat`) and
//! reads the files of each container cgroup found. cgroupfs (kernfs) offers no cheap change
//! signal to skip the walk: a directory's mtime does not change when a child cgroup is created
//! (checked on Linux 6.18), and inotify would need a watch on every cgroup directory. The walk is
//! a small part of a scan: one `getdents` per cgroup directory against ~20 file reads per
//! container. What is cached between scans is everything derived from the path: the directories
//! in each hierarchy, the identity labels (until the resolver learns more), and the limits
//! (re-read every minute).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bus::proto::Label;

use crate::config::CollectorConfig;
use crate::resolve::{Identity, NoIdentity};
use crate::source::{Collected, SeriesGroup, Source};
use crate::{Error, Result};

pub mod identity;
mod mounts;
pub(crate) mod parse;
mod read;
mod stats;
mod v1;
mod v2;

pub use identity::{Kind, PathIdentity};
pub use mounts::Hierarchies;
pub use read::Dirs;
pub use stats::{Spec, Stats};

use read::Reader;

/// One cgroup being exported, cached between scans.
#[derive(Debug)]
struct Entry {
    dirs: Dirs,
    /// Scans left in which missing directories are looked for again: a runtime creates a
    /// container's directory in one hierarchy after the other, and a walk may come in between.
    dirs_rechecks: u8,
    identity: PathIdentity,
    labels: Vec<Label>,
    labels_generation: Option<u64>,
    seen: u64,
    /// The limits and when they were read (ms); re-read every [`SPEC_REFRESH_MS`].
    spec: Option<(Spec, i64)>,
    /// What was exported last, to end its series with staleness markers when the cgroup goes.
    last: Option<Stats>,
}

/// Prometheus's staleness marker (`value.StaleNaN`): written for every series of a cgroup that
/// disappeared, so that queries stop returning it at once instead of for the 5-minute lookback,
/// as Prometheus does for series that vanish from a scrape.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// How long a cgroup's limits are used before they are read again. cAdvisor reads them once per
/// container; re-reading each minute catches in-place resizes at a fraction of the cost of
/// reading them every tick.
const SPEC_REFRESH_MS: i64 = 60_000;

/// The cgroup source: walks the hierarchies, reads each container's files, emits cAdvisor's
/// `container_*` series.
pub struct CgroupSource {
    hierarchies: Hierarchies,
    /// Hierarchies walked to discover cgroups: every one with `all_cgroups`; else one, since
    /// runtimes create a container at the same path in every hierarchy (a v1 hierarchy of a
    /// controller read, else v2).
    walk_roots: Vec<PathBuf>,
    proc_root: PathBuf,
    all_cgroups: bool,
    resolver: Box<dyn Identity>,
    entries: BTreeMap<String, Entry>,
    reader: Reader,
    stats: Stats,
    scan: u64,
    host_netns: Option<u64>,
    /// Reused by the walk.
    found: Vec<String>,
}

impl fmt::Debug for CgroupSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgroupSource")
            .field("hierarchies", &self.hierarchies)
            .field("all_cgroups", &self.all_cgroups)
            .field("cgroups", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl CgroupSource {
    /// A source over the hierarchies mounted under `config.cgroup_root`.
    pub fn new(config: &CollectorConfig, resolver: Box<dyn Identity>) -> Result<Self> {
        let h = Hierarchies::detect(&config.cgroup_root);
        if h.is_empty() {
            return Err(Error::NoCgroups(config.cgroup_root.clone()));
        }
        Ok(Self::with_hierarchies(
            h,
            config.proc_root.clone(),
            config.all_cgroups,
            resolver,
        ))
    }

    /// A source over given hierarchies (fixture trees in tests).
    pub fn with_hierarchies(
        hierarchies: Hierarchies,
        proc_root: PathBuf,
        all_cgroups: bool,
        resolver: Box<dyn Identity>,
    ) -> Self {
        let mut walk_roots: Vec<PathBuf> = Vec::new();
        for c in mounts::V1_CONTROLLERS {
            if let Some(m) = hierarchies.v1_mount(c)
                && !walk_roots.iter().any(|r| r == m)
            {
                walk_roots.push(m.to_path_buf());
            }
        }
        if let Some(u) = &hierarchies.unified {
            walk_roots.push(u.clone());
        }
        if !all_cgroups {
            walk_roots.truncate(1);
        }
        let host_netns = read::netns_inode(&proc_root.join("1/ns/net"))
            .or_else(|| read::netns_inode(&proc_root.join("self/ns/net")));
        CgroupSource {
            hierarchies,
            walk_roots,
            proc_root,
            all_cgroups,
            resolver,
            entries: BTreeMap::new(),
            reader: Reader::new(PathBuf::from("/sys/dev/block")),
            stats: Stats::default(),
            scan: 0,
            host_netns,
            found: Vec::new(),
        }
    }

    /// A source without a name resolver.
    pub fn without_names(hierarchies: Hierarchies, proc_root: PathBuf, all_cgroups: bool) -> Self {
        Self::with_hierarchies(hierarchies, proc_root, all_cgroups, Box::new(NoIdentity))
    }

    /// The hierarchies this source reads.
    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// Walks the hierarchies and updates the cached entries: new cgroups are added, vanished
    /// ones dropped (and returned). Returns the number of cgroup directories seen.
    fn discover(&mut self, gone: &mut Vec<Entry>) -> u64 {
        self.scan += 1;
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        let mut dirs_seen = 0;
        for root in &self.walk_roots {
            let mut rel = String::new();
            dirs_seen += walk(root, &mut rel, &mut found);
        }
        for rel in found.drain(..) {
            if let Some(e) = self.entries.get_mut(&rel) {
                e.seen = self.scan;
                if e.dirs_rechecks > 0 {
                    e.dirs_rechecks -= 1;
                    let (dirs, complete) = dirs_of(&self.hierarchies, &rel);
                    e.dirs = dirs;
                    if complete {
                        e.dirs_rechecks = 0;
                    }
                }
                continue;
            }
            let identity = identity::parse(&rel);
            if !identity.is_container() && !self.all_cgroups {
                continue;
            }
            let (dirs, complete) = dirs_of(&self.hierarchies, &rel);
            self.entries.insert(
                rel,
                Entry {
                    dirs,
                    dirs_rechecks: if complete { 0 } else { 3 },
                    identity,
                    labels: Vec::new(),
                    labels_generation: None,
                    seen: self.scan,
                    spec: None,
                    last: None,
                },
            );
        }
        self.found = found;
        let scan = self.scan;
        let vanished: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.seen != scan)
            .map(|(p, _)| p.clone())
            .collect();
        for p in vanished {
            if let Some(e) = self.entries.remove(&p) {
                gone.push(e);
            }
        }
        dirs_seen
    }
}

/// The directories of cgroup `rel` in each hierarchy, and whether it exists in all of them.
fn dirs_of(h: &Hierarchies, rel: &str) -> (Dirs, bool) {
    let mut complete = true;
    let mut at = |mount: Option<&Path>| {
        let mount = mount?;
        let p = join_rel(mount, rel);
        if p.is_dir() {
            Some(p)
        } else {
            complete = false;
            None
        }
    };
    let dirs = Dirs {
        cpu: at(h.v1_mount("cpu")),
        cpuacct: at(h.v1_mount("cpuacct")),
        memory: at(h.v1_mount("memory")),
        blkio: at(h.v1_mount("blkio")),
        pids: at(h.v1_mount("pids")),
        unified: at(h.unified.as_deref()),
    };
    (dirs, complete)
}

/// `mount` joined with a cgroup path relative to it (`/` is the mount itself).
fn join_rel(mount: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}

/// Appends the path of `dir` (relative to the walk's root, `/` for the root) and of every cgroup
/// directory below it to `found`; returns how many directories were read.
fn walk(dir: &Path, rel: &mut String, found: &mut Vec<String>) -> u64 {
    found.push(if rel.is_empty() {
        "/".to_owned()
    } else {
        rel.clone()
    });
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    let mut n = 1;
    for e in entries.flatten() {
        // d_type from getdents: no stat per entry.
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let len = rel.len();
        rel.push('/');
        rel.push_str(name);
        n += walk(&e.path(), rel, found);
        rel.truncate(len);
    }
    n
}

/// The identity labels of a cgroup: `id` and what the path and the resolver tell (kubelet's
/// cAdvisor labels `namespace`, `pod`, `container`, `image`, `name`, plus `pod_uid` and
/// `container_id`), sorted by name.
fn identity_labels(path: &str, id: &PathIdentity, names: crate::resolve::Names) -> Vec<Label> {
    let mut labels = vec![Label {
        name: "id".to_owned(),
        value: path.to_owned(),
    }];
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            labels.push(Label {
                name: name.to_owned(),
                value: v,
            });
        }
    };
    add("pod_uid", id.pod_uid.clone());
    add("container_id", id.container_id.clone());
    add("namespace", names.namespace);
    add("pod", names.pod);
    add("container", names.container);
    add("image", names.image);
    add("name", names.name);
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    labels
}

impl Source for CgroupSource {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    fn collect(&mut self, now_ms: i64, out: &mut Vec<SeriesGroup>) -> Result<Collected> {
        let mut gone = Vec::new();
        let walked = self.discover(&mut gone);
        tracing::trace!(
            directories = walked,
            cgroups = self.entries.len(),
            "cgroups walked"
        );
        self.resolver.refresh(Instant::now());
        let generation = self.resolver.generation();
        let mut c = Collected::default();
        // Children sort right after their parent: in reverse order a pod's containers come
        // before the pod, whose network counters are read from one of their processes.
        let mut pod_pids: HashMap<String, u32> = HashMap::new();
        for (path, e) in self.entries.iter_mut().rev() {
            if e.labels_generation != Some(generation) {
                let names = self.resolver.names(&e.identity);
                e.labels = identity_labels(path, &e.identity, names);
                e.labels_generation = Some(generation);
            }
            let s = &mut self.stats;
            let spec = e
                .spec
                .filter(|(_, at)| (0..SPEC_REFRESH_MS).contains(&(now_ms - at)))
                .map(|(spec, _)| spec);
            self.reader.read_cgroup(&e.dirs, spec, s);
            if spec.is_none() {
                e.spec = Some((s.spec, now_ms));
            }
            let mut procs = self.reader.procs(&e.dirs);
            // crun on cgroup v2 runs a container's processes in a `container` sub-cgroup of its
            // scope (the scope's v2 counters include it); count those.
            if matches!(procs, Some((0, _)))
                && matches!(e.identity.kind, Kind::PodContainer | Kind::Container)
                && let Some(u) = &e.dirs.unified
            {
                let inner = Dirs {
                    unified: Some(u.join("container")),
                    ..Dirs::default()
                };
                procs = self.reader.procs(&inner).or(procs);
            }
            if let Some((n, _)) = procs {
                s.processes = Some(n);
            }
            let first_pid = procs.and_then(|(_, p)| p);
            // Network counters live in a network namespace: in Kubernetes all containers of a
            // pod share the sandbox's, which cAdvisor reports once per pod; they are exported on
            // the pod's cgroup here. A process in the host's namespace has no container network.
            let net_pid = match e.identity.kind {
                Kind::PodContainer => {
                    if let (Some(uid), Some(pid)) = (&e.identity.pod_uid, first_pid) {
                        pod_pids.entry(uid.clone()).or_insert(pid);
                    }
                    None
                }
                Kind::Pod => e
                    .identity
                    .pod_uid
                    .as_ref()
                    .and_then(|u| pod_pids.get(u).copied())
                    .or(first_pid),
                Kind::Container | Kind::Other => first_pid,
            };
            if let Some(pid) = net_pid {
                let ns = self.reader.netns(&self.proc_root, pid);
                if ns.is_some() && ns != self.host_netns {
                    self.reader.net(&self.proc_root, pid, s);
                }
            }
            let mut g = SeriesGroup {
                identity: e.labels.clone(),
                series: Vec::with_capacity(32),
            };
            c.samples += s.emit(&mut g, now_ms);
            match &mut e.last {
                Some(last) => last.clone_from(s),
                None => e.last = Some(s.clone()),
            }
            c.scanned += 1;
            if !g.series.is_empty() {
                c.exported += 1;
                out.push(g);
            }
        }
        for e in gone {
            let Some(last) = e.last else { continue };
            let mut g = SeriesGroup {
                identity: e.labels,
                series: Vec::new(),
            };
            c.samples += last.emit(&mut g, now_ms);
            for series in &mut g.series {
                for sample in &mut series.samples {
                    sample.value = f64::from_bits(STALE_NAN);
                }
            }
            out.push(g);
        }
        c.errors = self.reader.take_errors();
        Ok(c)
    }
}

#[cfg(test)]
mod tests;

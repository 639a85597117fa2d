//! Reading one cgroup's files with one reused buffer and path (no allocation per file).

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::parse;
use super::stats::{DeviceIo, InterfaceNet, Spec, Stats};

/// A cgroup's directory in each hierarchy it exists in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirs {
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    /// The v2 directory (on a hybrid host, only PSI and what controllers v2 has are read there).
    pub unified: Option<PathBuf>,
}

/// Reads cgroup and proc files, reusing its buffers across files and cgroups.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    path: PathBuf,
    /// `major:minor` → `/dev/<name>`, from `/sys/dev/block/<major:minor>/uevent`.
    devices: HashMap<(u32, u32), String>,
    sys_dev_block: PathBuf,
    /// Read errors other than a missing file since the last [`Reader::take_errors`].
    errors: u64,
}

impl Reader {
    pub(crate) fn new(sys_dev_block: PathBuf) -> Self {
        Reader {
            buf: Vec::with_capacity(8192),
            path: PathBuf::with_capacity(256),
            devices: HashMap::new(),
            sys_dev_block,
            errors: 0,
        }
    }

    pub(crate) fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }

    /// Reads `dir/file` into the buffer; false when it does not exist (or vanished with its
    /// cgroup) or could not be read (counted as an error).
    pub(crate) fn read(&mut self, dir: &Path, file: &str) -> bool {
        self.path.clear();
        self.path.push(dir);
        self.path.push(file);
        self.buf.clear();
        match std::fs::File::open(&self.path).and_then(|mut f| f.read_to_end(&mut self.buf)) {
            Ok(_) => true,
            Err(e) => {
                // ENODEV: the cgroup was removed between open and read.
                if !matches!(e.kind(), ErrorKind::NotFound) && e.raw_os_error() != Some(19) {
                    self.errors += 1;
                    tracing::debug!(path = %self.path.display(), error = %e, "cgroup file unreadable");
                }
                false
            }
        }
    }

    pub(crate) fn buf(&self) -> &[u8] {
        &self.buf
    }

    fn single(&mut self, dir: &Path, file: &str) -> Option<u64> {
        if self.read(dir, file) {
            parse::single_u64(&self.buf)
        } else {
            None
        }
    }

    /// Reads one cgroup into `s` (cleared first). The limits are read when `spec` is `None`
    /// (and left in `s.spec`), else taken from it.
    pub(crate) fn read_cgroup(&mut self, dirs: &Dirs, spec: Option<Spec>, s: &mut Stats) {
        s.clear();
        let read_spec = spec.is_none();
        s.spec = spec.unwrap_or_default();
        if dirs.cpuacct.is_some() || dirs.cpu.is_some() {
            self.v1_cpu(dirs.cpuacct.as_deref(), dirs.cpu.as_deref(), read_spec, s);
        } else if let Some(u) = &dirs.unified {
            self.v2_cpu(u, read_spec, s);
        }
        if let Some(m) = &dirs.memory {
            self.v1_memory(m, read_spec, s);
        } else if let Some(u) = &dirs.unified {
            self.v2_memory(u, read_spec, s);
        }
        if let Some(b) = &dirs.blkio {
            self.v1_blkio(b, s);
        } else if let Some(u) = &dirs.unified
            && self.read(u, "io.stat")
        {
            let mut io = std::mem::take(&mut s.io);
            let buf = std::mem::take(&mut self.buf);
            parse::io_stat(&buf, |dev, r, w| {
                io.push(DeviceIo {
                    device: self.device_name(dev),
                    read_bytes: r,
                    write_bytes: w,
                })
            });
            self.buf = buf;
            s.io = io;
        }
        let pids_dir = dirs.pids.as_deref().or(dirs.unified.as_deref());
        if let Some(p) = pids_dir {
            s.threads = self.single(p, "pids.current");
        }
        if let Some(u) = &dirs.unified {
            for (i, file) in ["cpu.pressure", "memory.pressure", "io.pressure"]
                .into_iter()
                .enumerate()
            {
                if self.read(u, file) {
                    let (some, full) = parse::psi_totals(&self.buf);
                    s.pressure[i].some_us = some;
                    s.pressure[i].full_us = full;
                }
            }
        }
    }

    /// Reads `cgroup.procs` of the first directory that has it: the number of processes and the
    /// first pid.
    pub(crate) fn procs(&mut self, dirs: &Dirs) -> Option<(u64, Option<u32>)> {
        let candidates = [
            dirs.pids.as_deref(),
            dirs.unified.as_deref(),
            dirs.cpu.as_deref(),
            dirs.cpuacct.as_deref(),
            dirs.memory.as_deref(),
            dirs.blkio.as_deref(),
        ];
        for dir in candidates.into_iter().flatten() {
            if self.read(dir, "cgroup.procs") {
                let mut n = 0;
                let mut first = None;
                for line in self.buf.split(|b| *b == b'\n') {
                    if let Some(pid) = parse::parse_u64(line) {
                        n += 1;
                        if first.is_none() {
                            first = u32::try_from(pid).ok();
                        }
                    }
                }
                return Some((n, first));
            }
        }
        None
    }

    /// The network namespace inode of `pid` (`/proc/<pid>/ns/net` → `net:[4026531992]`).
    pub(crate) fn netns(&mut self, proc_root: &Path, pid: u32) -> Option<u64> {
        self.path.clear();
        self.path.push(proc_root);
        self.path.push(pid.to_string());
        self.path.push("ns/net");
        netns_inode(&self.path)
    }

    /// Appends the interfaces of `/proc/<pid>/net/dev` to `s.net`, without those cAdvisor
    /// ignores (`lo`, `veth*`, `docker*`, `nerdctl*`: `ignoredDevicePrefixes`).
    pub(crate) fn net(&mut self, proc_root: &Path, pid: u32, s: &mut Stats) {
        self.path.clear();
        self.path.push(proc_root);
        self.path.push(pid.to_string());
        let dir = std::mem::take(&mut self.path);
        let ok = self.read(&dir, "net/dev");
        self.path = dir;
        if !ok {
            return;
        }
        parse::net_dev(&self.buf, |name, rx, tx| {
            let lower = name.to_ascii_lowercase();
            if ["lo", "veth", "docker", "nerdctl"]
                .iter()
                .any(|p| lower.starts_with(p))
            {
                return;
            }
            s.net.push(InterfaceNet {
                interface: name.to_owned(),
                rx_bytes: rx,
                tx_bytes: tx,
            });
        });
    }

    /// `/dev/<name>` of a block device, cached; `major:minor` when unknown.
    pub(crate) fn device_name(&mut self, dev: (u32, u32)) -> String {
        if let Some(n) = self.devices.get(&dev) {
            return n.clone();
        }
        let uevent = self
            .sys_dev_block
            .join(format!("{}:{}", dev.0, dev.1))
            .join("uevent");
        let name = std::fs::read_to_string(uevent)
            .ok()
            .and_then(|u| {
                u.lines()
                    .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
            })
            .unwrap_or_else(|| format!("{}:{}", dev.0, dev.1));
        self.devices.insert(dev, name.clone());
        name
    }
}

/// The inode in a namespace link's target (`net:[4026531992]`).
pub(crate) fn netns_inode(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let t = target.to_str()?;
    t.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

//! Which cgroup hierarchies a host has and where they are mounted: cgroup v1 controller mounts and
//! the v2 unified mount, from `/proc/self/mountinfo` (hybrid hosts have both).

use std::path::{Path, PathBuf};

/// The v1 controllers whose files the collector reads.
pub(crate) const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "blkio", "pids"];

/// The mounted hierarchies below a cgroup root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// v1 hierarchies: (controllers bound to it, mount point). A hierarchy appears once even if
    /// mounted twice.
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The v2 (unified) mount.
    pub unified: Option<PathBuf>,
}

impl Hierarchies {
    /// The mount point of the v1 hierarchy that `controller` is bound to.
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|c| c == controller))
            .map(|(_, p)| p.as_path())
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.unified.is_none()
    }

    /// The hierarchies mounted at or below `root` according to `mountinfo` (the text of
    /// `/proc/self/mountinfo`).
    pub fn from_mountinfo(mountinfo: &str, root: &Path) -> Hierarchies {
        let mut h = Hierarchies::default();
        for line in mountinfo.lines() {
            // id parent major:minor root mount-point options [optional…] - fstype source super-options
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = pre.split(' ').nth(4) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            if !mount_point.starts_with(root) {
                continue;
            }
            let mut post = post.split(' ');
            let fstype = post.next().unwrap_or_default();
            let super_opts = post.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" if h.unified.is_none() => h.unified = Some(mount_point),
                "cgroup" => {
                    let mut controllers: Vec<String> = super_opts
                        .split(',')
                        .filter(|o| is_controller(o))
                        .map(str::to_owned)
                        .collect();
                    controllers.sort();
                    if controllers.is_empty() || h.v1.iter().any(|(c, _)| *c == controllers) {
                        continue;
                    }
                    h.v1.push((controllers, mount_point));
                }
                _ => {}
            }
        }
        h
    }

    /// The hierarchies under `root` guessed from its layout, for a root that is not a mount
    /// (fixture trees, a copy of a host's tree): `root` itself is v2 when it has
    /// `cgroup.controllers`; otherwise each subdirectory named after v1 controllers
    /// (`cpu,cpuacct`, `memory`) is a v1 hierarchy and `unified` a v2 one.
    pub fn from_layout(root: &Path) -> Hierarchies {
        let mut h = Hierarchies::default();
        if root.join("cgroup.controllers").is_file() {
            h.unified = Some(root.to_path_buf());
            return h;
        }
        let Ok(dir) = std::fs::read_dir(root) else {
            return h;
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let path = root.join(&name);
            if name == "unified" && path.join("cgroup.controllers").is_file() {
                h.unified = Some(path);
                continue;
            }
            let mut controllers: Vec<String> = name
                .split(',')
                .filter(|c| is_controller(c))
                .map(str::to_owned)
                .collect();
            controllers.sort();
            if !controllers.is_empty() && !h.v1.iter().any(|(c, _)| *c == controllers) {
                h.v1.push((controllers, path));
            }
        }
        h
    }

    /// The hierarchies of this host under `root`: from `/proc/self/mountinfo`, else from the
    /// layout of `root`.
    pub fn detect(root: &Path) -> Hierarchies {
        let from_mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| Hierarchies::from_mountinfo(&m, root))
            .unwrap_or_default();
        if from_mounts.is_empty() {
            Hierarchies::from_layout(root)
        } else {
            from_mounts
        }
    }
}

fn is_controller(opt: &str) -> bool {
    matches!(
        opt,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "blkio"
            | "io"
            | "pids"
            | "devices"
            | "freezer"
            | "net_cls"
            | "net_prio"
            | "perf_event"
            | "hugetlb"
            | "rdma"
            | "misc"
    )
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = b.get(i + 1..i + 4).and_then(octal_byte)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte three octal digits spell (`040`), if they do (at most `377`).
fn octal_byte(digits: &[u8]) -> Option<u8> {
    let v = digits.iter().try_fold(0u16, |v, &c| {
        matches!(c, b'0'..=b'7').then(|| v * 8 + u16::from(c - b'0'))
    })?;
    u8::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `cgroup` fuzz target: `\999` overflowed (a panic in debug builds, a wrong
    /// byte in release ones). What is not an octal escape of a byte stays as it is.
    #[test]
    fn unescape_takes_only_octal_bytes() {
        assert_eq!(unescape(r"/a\040b\011c\134"), "/a b\tc\\");
        for kept in [r"\999", r"\400", r"\08", r"x\04"] {
            assert_eq!(unescape(kept), kept);
        }
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 80 0:32 / /host/sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_mountinfo() {
        let h = Hierarchies::from_mountinfo(HYBRID, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            h.v1_mount("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(h.v1_mount("cpu"), h.v1_mount("cpuacct"));
        assert_eq!(
            h.v1_mount("memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(h.v1_mount("pids"), None);
        assert_eq!(h.v1.len(), 2, "name=systemd is not a controller");
        assert_eq!(
            h.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        // A DaemonSet's view of the host's tree.
        let h = Hierarchies::from_mountinfo(HYBRID, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(
            h.v1_mount("memory"),
            Some(Path::new("/host/sys/fs/cgroup/memory"))
        );
        assert!(h.unified.is_none());
    }

    #[test]
    fn pure_v2_mountinfo() {
        let m = "25 20 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let h = Hierarchies::from_mountinfo(m, Path::new("/sys/fs/cgroup"));
        assert!(h.v1.is_empty());
        assert_eq!(h.unified.as_deref(), Some(Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn layouts() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("cpu,cpuacct")).unwrap();
        std::fs::create_dir_all(d.path().join("memory")).unwrap();
        std::fs::create_dir_all(d.path().join("unified")).unwrap();
        std::fs::write(d.path().join("unified/cgroup.controllers"), "").unwrap();
        let h = Hierarchies::from_layout(d.path());
        assert_eq!(h.v1.len(), 2);
        assert!(h.v1_mount("cpu").unwrap().ends_with("cpu,cpuacct"));
        assert!(h.unified.unwrap().ends_with("unified"));
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(
            Hierarchies::from_layout(v2.path()).unified.as_deref(),
            Some(v2.path())
        );
    }
}

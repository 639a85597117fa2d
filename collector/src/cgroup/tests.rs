//! Fixture trees in the real file formats (kernel `cgroup-v2.rst` / `cgroup-v1/*.rst` examples and
//! values as this kernel writes them).

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "1234abcd-56ef-7890-abcd-ef0123456789";

fn write(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// Series by name and extra labels, for one group.
fn values(g: &SeriesGroup) -> BTreeMap<String, f64> {
    g.series
        .iter()
        .map(|s| {
            let mut key = String::new();
            for l in &s.labels {
                if l.name == "__name__" {
                    key.insert_str(0, &l.value);
                } else if !g.identity.iter().any(|i| i.name == l.name) {
                    key.push_str(&format!("{{{}={}}}", l.name, l.value));
                }
            }
            (key, s.samples[0].value)
        })
        .collect()
}

fn label<'a>(g: &'a SeriesGroup, name: &str) -> Option<&'a str> {
    g.identity
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

fn v2_container(dir: &Path) {
    write(
        dir,
        &[
            ("cgroup.procs", "4242\n4243\n"),
            (
                "cpu.stat",
                "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnice_usec 0\ncore_sched.force_idle_usec 0\nnr_periods 100\nnr_throttled 25\nthrottled_usec 750000\nnr_bursts 0\nburst_usec 0\n",
            ),
            ("cpu.max", "50000 100000\n"),
            ("cpu.weight", "100\n"),
            ("memory.current", "104857600\n"),
            (
                "memory.stat",
                "anon 52428800\nfile 41943040\nkernel 1048576\nactive_anon 0\ninactive_anon 52428800\nactive_file 10485760\ninactive_file 31457280\nunevictable 0\n",
            ),
            ("memory.swap.current", "4096\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
            ),
            ("memory.max", "268435456\n"),
            ("pids.current", "7\n"),
            (
                "io.stat",
                "8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=0 dios=0\n",
            ),
            (
                "cpu.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=3000000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
            ),
            (
                "memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=250\n",
            ),
            (
                "io.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            ),
        ],
    );
}

fn fake_proc(root: &Path, pid: u32, netns: u64) {
    let d = root.join(pid.to_string());
    std::fs::create_dir_all(d.join("ns")).unwrap();
    std::fs::create_dir_all(d.join("net")).unwrap();
    std::os::unix::fs::symlink(format!("net:[{netns}]"), d.join("ns/net")).unwrap();
    std::fs::write(
        d.join("net/dev"),
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 5000 10 0 0 0 0 0 0 7000 12 0 0 0 0 0 0\n",
    )
    .unwrap();
}

#[test]
fn v2_kubernetes_tree() {
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    let proc_root = root.path().join("proc");
    write(
        &cg,
        &[("cgroup.controllers", "cpuset cpu io memory pids\n")],
    );
    let pod = cg.join(format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        UID.replace('-', "_")
    ));
    v2_container(&pod.join(format!("cri-containerd-{ID}.scope")));
    // The pod cgroup has no processes of its own.
    v2_container(&pod);
    std::fs::write(pod.join("cgroup.procs"), "").unwrap();
    // Other cgroups are not exported without all_cgroups.
    write(
        &cg.join("system.slice/sshd.service"),
        &[("cpu.stat", "usage_usec 1\n")],
    );
    fake_proc(&proc_root, 1, 4026531992);
    fake_proc(&proc_root, 4242, 4026532500);

    let h = Hierarchies::from_layout(&cg);
    assert_eq!(h.unified.as_deref(), Some(cg.as_path()));
    let mut src = CgroupSource::without_names(h, proc_root.clone(), false);
    let mut out = vec![];
    let c = src.collect(1_000, &mut out).unwrap();
    assert_eq!(c.exported, 2);
    assert_eq!(c.errors, 0);
    assert_eq!(out.len(), 2);
    // Reverse path order: the container, then its pod.
    let container = &out[0];
    assert_eq!(label(container, "container_id"), Some(ID));
    assert_eq!(label(container, "pod_uid"), Some(UID));
    assert!(label(container, "id").unwrap().ends_with(".scope"));
    let v = values(container);
    assert_eq!(v["container_cpu_usage_seconds_total{cpu=total}"], 2.5);
    assert_eq!(v["container_cpu_user_seconds_total"], 2.0);
    assert_eq!(v["container_cpu_system_seconds_total"], 0.5);
    assert_eq!(v["container_cpu_cfs_periods_total"], 100.0);
    assert_eq!(v["container_cpu_cfs_throttled_periods_total"], 25.0);
    assert_eq!(v["container_cpu_cfs_throttled_seconds_total"], 0.75);
    assert_eq!(v["container_spec_cpu_quota"], 50000.0);
    assert_eq!(v["container_spec_cpu_period"], 100000.0);
    assert_eq!(v["container_spec_cpu_shares"], 2597.0);
    assert_eq!(v["container_memory_usage_bytes"], 104857600.0);
    assert_eq!(
        v["container_memory_working_set_bytes"],
        (104857600 - 31457280) as f64
    );
    assert_eq!(v["container_memory_rss"], 52428800.0);
    assert_eq!(v["container_memory_cache"], 41943040.0);
    assert_eq!(v["container_memory_swap"], 4096.0);
    assert_eq!(v["container_memory_failcnt"], 0.0);
    assert_eq!(v["container_oom_events_total"], 1.0);
    assert_eq!(v["container_spec_memory_limit_bytes"], 268435456.0);
    assert_eq!(v["container_processes"], 2.0);
    assert_eq!(v["container_threads"], 7.0);
    // The device name comes from this host's /sys/dev/block (`8:0` if it has no such disk).
    assert!(
        v.iter().any(
            |(k, v)| k.starts_with("container_fs_reads_bytes_total{device=") && *v == 90430464.0
        )
    );
    assert!(
        v.keys()
            .any(|k| k.starts_with("container_fs_writes_bytes_total{device="))
    );
    assert_eq!(v["container_pressure_cpu_waiting_seconds_total"], 3.0);
    assert_eq!(v["container_pressure_cpu_stalled_seconds_total"], 1.0);
    assert_eq!(
        v["container_pressure_memory_stalled_seconds_total"],
        0.00025
    );
    assert_eq!(v["container_pressure_io_waiting_seconds_total"], 0.0);
    // Network is the pod's, not each container's.
    assert!(!v.keys().any(|k| k.starts_with("container_network")));
    let pod_row = &out[1];
    assert_eq!(label(pod_row, "container_id"), None);
    let pv = values(pod_row);
    assert_eq!(
        pv["container_network_receive_bytes_total{interface=eth0}"],
        5000.0
    );
    assert_eq!(
        pv["container_network_transmit_bytes_total{interface=eth0}"],
        7000.0
    );
    assert!(!pv.keys().any(|k| k.contains("interface=lo")));
    assert_eq!(pv["container_processes"], 0.0);
    for s in &container.series {
        assert!(
            s.labels.windows(2).all(|w| w[0].name < w[1].name),
            "sorted, unique"
        );
        assert_eq!(s.samples[0].timestamp, 1_000);
    }

    // The container goes away: its series stop; a new one appears.
    std::fs::remove_dir_all(pod.join(format!("cri-containerd-{ID}.scope"))).unwrap();
    let id2 = ID.replace('0', "f");
    v2_container(&pod.join(format!("crio-{id2}.scope")));
    let mut out = vec![];
    src.collect(2_000, &mut out).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(label(&out[0], "container_id"), Some(id2.as_str()));
    // The vanished container's series end with staleness markers, once.
    let gone = &out[2];
    assert_eq!(label(gone, "container_id"), Some(ID));
    assert_eq!(gone.series.len(), container.series.len());
    for s in &gone.series {
        assert_eq!(s.samples[0].value.to_bits(), STALE_NAN);
        assert_eq!(s.samples[0].timestamp, 2_000);
    }
    let mut out = vec![];
    src.collect(3_000, &mut out).unwrap();
    assert_eq!(out.len(), 2);
}

#[test]
fn v2_unlimited_and_missing_files() {
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    write(&cg, &[("cgroup.controllers", "cpu memory\n")]);
    let c = cg.join(format!("system.slice/docker-{ID}.scope"));
    write(
        &c,
        &[
            ("cpu.stat", "usage_usec 10\nuser_usec 5\nsystem_usec 5\n"),
            ("cpu.max", "max 100000\n"),
            ("memory.current", "100\n"),
            ("memory.stat", "anon 10\nfile 200\ninactive_file 150\n"),
            ("memory.max", "max\n"),
        ],
    );
    let mut src = CgroupSource::without_names(
        Hierarchies::from_layout(&cg),
        root.path().join("noproc"),
        false,
    );
    let mut out = vec![];
    let c = src.collect(0, &mut out).unwrap();
    assert_eq!(c.errors, 0, "missing files are not errors");
    let v = values(&out[0]);
    assert_eq!(label(&out[0], "container_id"), Some(ID));
    // Working set floors at 0 when inactive_file exceeds usage.
    assert_eq!(v["container_memory_working_set_bytes"], 0.0);
    assert_eq!(v["container_spec_memory_limit_bytes"], 0.0);
    assert_eq!(v["container_spec_cpu_period"], 100000.0);
    assert!(!v.contains_key("container_spec_cpu_quota"));
    assert!(!v.contains_key("container_cpu_cfs_periods_total"));
    assert!(!v.contains_key("container_threads"));
    assert!(!v.contains_key("container_pressure_cpu_waiting_seconds_total"));
}

#[test]
fn v1_tree_with_separate_controller_mounts() {
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    let rel = format!("kubepods/burstable/pod{UID}/{ID}");
    write(
        &cg.join("cpu,cpuacct").join(&rel),
        &[
            ("cgroup.procs", "77\n"),
            ("cpuacct.usage", "3000000000\n"),
            ("cpuacct.stat", "user 250\nsystem 50\n"),
            (
                "cpu.stat",
                "nr_periods 40\nnr_throttled 10\nthrottled_time 200000000\nnr_bursts 0\nburst_time 0\n",
            ),
            ("cpu.cfs_period_us", "100000\n"),
            ("cpu.cfs_quota_us", "-1\n"),
            ("cpu.shares", "512\n"),
        ],
    );
    write(
        &cg.join("memory").join(&rel),
        &[
            ("memory.usage_in_bytes", "1000000\n"),
            ("memory.use_hierarchy", "1\n"),
            (
                "memory.stat",
                "cache 1\nrss 2\nswap 3\ninactive_file 4\ntotal_cache 300000\ntotal_rss 600000\ntotal_swap 0\ntotal_inactive_file 250000\ntotal_active_file 50000\n",
            ),
            ("memory.failcnt", "5\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
        ],
    );
    write(
        &cg.join("blkio").join(&rel),
        &[
            ("blkio.io_service_bytes_recursive", "Total 0\n"),
            (
                "blkio.throttle.io_service_bytes_recursive",
                "259:0 Read 4096\n259:0 Write 8192\n259:0 Sync 0\n259:0 Async 12288\n259:0 Discard 0\n259:0 Total 12288\nTotal 12288\n",
            ),
        ],
    );
    write(&cg.join("pids").join(&rel), &[("pids.current", "3\n")]);
    let h = Hierarchies::from_layout(&cg);
    assert_eq!(h.v1.len(), 3 + 1);
    let mut src = CgroupSource::without_names(h, root.path().join("noproc"), false);
    let mut out = vec![];
    src.collect(0, &mut out).unwrap();
    assert_eq!(
        out.len(),
        1,
        "only the container; kubepods/burstable is not one"
    );
    let v = values(&out[0]);
    assert_eq!(v["container_cpu_usage_seconds_total{cpu=total}"], 3.0);
    assert_eq!(v["container_cpu_user_seconds_total"], 2.5);
    assert_eq!(v["container_cpu_system_seconds_total"], 0.5);
    assert_eq!(v["container_cpu_cfs_throttled_seconds_total"], 0.2);
    assert_eq!(v["container_cpu_cfs_throttled_periods_total"], 10.0);
    assert!(
        !v.contains_key("container_spec_cpu_quota"),
        "-1 is no quota"
    );
    assert_eq!(v["container_spec_cpu_period"], 100000.0);
    assert_eq!(v["container_spec_cpu_shares"], 512.0);
    assert_eq!(v["container_memory_usage_bytes"], 1_000_000.0);
    assert_eq!(v["container_memory_working_set_bytes"], 750_000.0);
    assert_eq!(v["container_memory_rss"], 600_000.0);
    assert_eq!(v["container_memory_cache"], 300_000.0);
    assert_eq!(v["container_memory_swap"], 0.0);
    assert_eq!(v["container_memory_failcnt"], 5.0);
    assert_eq!(v["container_oom_events_total"], 3.0);
    assert_eq!(v["container_spec_memory_limit_bytes"], 0.0, "unlimited");
    assert_eq!(v["container_threads"], 3.0);
    assert_eq!(v["container_processes"], 1.0);
    let reads: Vec<_> = v
        .iter()
        .filter(|(k, _)| k.starts_with("container_fs_reads_bytes_total"))
        .collect();
    assert_eq!(reads.len(), 1);
    assert_eq!(*reads[0].1, 4096.0);
    assert!(!v.keys().any(|k| k.starts_with("container_pressure")));
}

#[test]
fn v1_without_hierarchy_uses_local_counters() {
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    write(
        &cg.join(format!("memory/docker/{ID}")),
        &[
            ("memory.usage_in_bytes", "100\n"),
            ("memory.use_hierarchy", "0\n"),
            (
                "memory.stat",
                "cache 1\nrss 2\nswap 3\ntotal_cache 10\ntotal_rss 20\ntotal_inactive_file 40\n",
            ),
        ],
    );
    let mut src =
        CgroupSource::without_names(Hierarchies::from_layout(&cg), root.path().join("p"), false);
    let mut out = vec![];
    src.collect(0, &mut out).unwrap();
    let v = values(&out[0]);
    assert_eq!(v["container_memory_rss"], 2.0);
    assert_eq!(v["container_memory_cache"], 1.0);
    assert_eq!(v["container_memory_swap"], 3.0);
    assert_eq!(v["container_memory_working_set_bytes"], 60.0);
}

#[test]
fn all_cgroups_exports_every_cgroup_and_resolver_names_them() {
    #[derive(Debug)]
    struct Fixed;
    impl Identity for Fixed {
        fn refresh(&mut self, _: Instant) {}
        fn names(&mut self, id: &PathIdentity) -> crate::resolve::Names {
            crate::resolve::Names {
                name: id.container_id.as_ref().map(|_| "web".to_owned()),
                ..Default::default()
            }
        }
        fn generation(&self) -> u64 {
            1
        }
    }
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    write(
        &cg,
        &[("cgroup.controllers", ""), ("cpu.stat", "usage_usec 9\n")],
    );
    write(&cg.join("system.slice"), &[("cpu.stat", "usage_usec 5\n")]);
    write(
        &cg.join(format!("system.slice/docker-{ID}.scope")),
        &[("cpu.stat", "usage_usec 1\n")],
    );
    let mut src = CgroupSource::with_hierarchies(
        Hierarchies::from_layout(&cg),
        root.path().join("p"),
        true,
        Box::new(Fixed),
    );
    let mut out = vec![];
    let c = src.collect(0, &mut out).unwrap();
    assert_eq!(c.exported, 3);
    let ids: Vec<_> = out
        .iter()
        .map(|g| label(g, "id").unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"/".to_owned()));
    assert!(ids.contains(&"/system.slice".to_owned()));
    let docker = out
        .iter()
        .find(|g| label(g, "container_id").is_some())
        .unwrap();
    assert_eq!(label(docker, "name"), Some("web"));
}

#[test]
fn limits_are_reread_after_the_spec_refresh() {
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    write(&cg, &[("cgroup.controllers", "cpu memory\n")]);
    let c = cg.join(format!("docker/{ID}"));
    write(
        &c,
        &[
            ("cpu.stat", "usage_usec 1\n"),
            ("cpu.max", "20000 100000\n"),
            ("memory.current", "1\n"),
            ("memory.max", "1000\n"),
        ],
    );
    let mut src =
        CgroupSource::without_names(Hierarchies::from_layout(&cg), root.path().join("p"), false);
    let quota = |src: &mut CgroupSource, t: i64| {
        let mut out = vec![];
        src.collect(t, &mut out).unwrap();
        let v = values(&out[0]);
        (
            v["container_spec_cpu_quota"],
            v["container_spec_memory_limit_bytes"],
        )
    };
    assert_eq!(quota(&mut src, 0), (20000.0, 1000.0));
    write(
        &c,
        &[("cpu.max", "40000 100000\n"), ("memory.max", "2000\n")],
    );
    assert_eq!(quota(&mut src, 10_000), (20000.0, 1000.0), "cached");
    assert_eq!(quota(&mut src, 60_000), (40000.0, 2000.0), "re-read");
}

#[test]
fn a_hierarchy_created_after_discovery_is_picked_up() {
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    let rel = format!("docker/{ID}");
    write(
        &cg.join("cpu,cpuacct").join(&rel),
        &[("cpuacct.usage", "5\n")],
    );
    std::fs::create_dir_all(cg.join("memory")).unwrap();
    let mut src =
        CgroupSource::without_names(Hierarchies::from_layout(&cg), root.path().join("p"), false);
    let mut out = vec![];
    src.collect(0, &mut out).unwrap();
    assert!(!values(&out[0]).contains_key("container_memory_usage_bytes"));
    // The runtime creates the memory cgroup a moment later.
    write(
        &cg.join("memory").join(&rel),
        &[("memory.usage_in_bytes", "42\n")],
    );
    let mut out = vec![];
    src.collect(1, &mut out).unwrap();
    assert_eq!(values(&out[0])["container_memory_usage_bytes"], 42.0);
}

#[test]
fn crun_container_sub_cgroup_holds_the_processes() {
    let root = tempfile::tempdir().unwrap();
    let cg = root.path().join("cgroup");
    let proc_root = root.path().join("proc");
    write(&cg, &[("cgroup.controllers", "cpu memory pids\n")]);
    let scope = cg.join(format!(
        "kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
        UID.replace('-', "_")
    ));
    write(
        &scope,
        &[("cgroup.procs", ""), ("cpu.stat", "usage_usec 2000000\n")],
    );
    write(&scope.join("container"), &[("cgroup.procs", "4242\n")]);
    fake_proc(&proc_root, 1, 4026531992);
    fake_proc(&proc_root, 4242, 4026532500);
    let mut src = CgroupSource::without_names(Hierarchies::from_layout(&cg), proc_root, false);
    let mut out = vec![];
    src.collect(0, &mut out).unwrap();
    // The scope (not its `container` child) is the container; the pod gets the network.
    let container = out
        .iter()
        .find(|g| label(g, "container_id") == Some(ID))
        .unwrap();
    assert_eq!(values(container)["container_processes"], 1.0);
    assert_eq!(
        values(container)["container_cpu_usage_seconds_total{cpu=total}"],
        2.0
    );
    let pod = out
        .iter()
        .find(|g| label(g, "container_id").is_none())
        .unwrap();
    assert!(values(pod).contains_key("container_network_receive_bytes_total{interface=eth0}"));
    assert_eq!(out.len(), 2);
}

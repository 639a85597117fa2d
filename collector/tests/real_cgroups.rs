//! The cgroup source against this host's real cgroups: processes run inside cgroups created
//! here, and the collector's numbers are checked against the kernel's per-process accounting.
//!
//! Needs root and a writable cgroup hierarchy (v1 controllers, or v2); skips with a message
//! otherwise. Every cgroup created is removed at the end (processes killed first).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector::cgroup::{CgroupSource, Hierarchies};
use collector::{SeriesGroup, Source};

const ROOT: &str = "/sys/fs/cgroup";

/// A cgroup created at the same path in several hierarchies; removed on drop.
struct TestCgroup {
    rel: String,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl TestCgroup {
    /// Creates `rel` in every hierarchy of `mounts`; None (with a message) when not permitted.
    fn create(mounts: &[PathBuf], rel: &str) -> Option<TestCgroup> {
        let mut cg = TestCgroup {
            rel: rel.to_owned(),
            dirs: vec![],
            children: vec![],
        };
        for m in mounts {
            let d = m.join(rel.trim_start_matches('/'));
            match std::fs::create_dir_all(&d) {
                Ok(()) => cg.dirs.push(d),
                Err(e) => {
                    eprintln!(
                        "SKIP: cannot create cgroup {}: {e} (needs root and a writable cgroupfs)",
                        d.display()
                    );
                    return None;
                }
            }
        }
        Some(cg)
    }

    fn dir(&self, mount: &Path) -> PathBuf {
        mount.join(self.rel.trim_start_matches('/'))
    }

    fn set(&self, mount: &Path, file: &str, value: &str) {
        std::fs::write(self.dir(mount).join(file), value)
            .unwrap_or_else(|e| panic!("writing {file}: {e}"));
    }

    /// Starts `script` in a shell that first moves itself into the cgroup in every hierarchy.
    fn spawn(&mut self, script: &str) -> u32 {
        let join: String = self
            .dirs
            .iter()
            .map(|d| format!("echo $$ > '{}/cgroup.procs' || exit 97; ", d.display()))
            .collect();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{join}{script}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning sh");
        let pid = child.id();
        self.children.push(child);
        // Wait until the shell has joined the last hierarchy (it joins them in order).
        let procs = self.dirs.last().expect("a hierarchy").join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&procs)
            .is_ok_and(|p| p.lines().any(|l| l == pid.to_string()))
        {
            // A short-lived script may be done before it is seen.
            let done = self
                .children
                .last_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if done.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pid {pid} never joined {}",
                procs.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Children first (deepest paths first), in every hierarchy.
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// utime + stime of `pid`, in seconds (`/proc/<pid>/stat` fields 14 and 15, in USER_HZ = 100).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    // Fields counted from 3 (state) after the comm.
    let utime: f64 = f[11].parse().expect("utime");
    let stime: f64 = f[12].parse().expect("stime");
    (utime + stime) / 100.0
}

/// Waits until `pid` has used `seconds` of CPU in total (at most a minute).
fn wait_for_cpu(pid: u32, seconds: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while process_cpu_seconds(pid) < seconds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The samples of cgroup `id` in a collection: name{extra labels} → value.
fn collect_for(src: &mut CgroupSource, id: &str) -> BTreeMap<String, f64> {
    let mut out: Vec<SeriesGroup> = vec![];
    let c = src.collect(0, &mut out).expect("collect");
    assert!(c.scanned > 0);
    let g = out
        .iter()
        .find(|g| g.identity.iter().any(|l| l.name == "id" && l.value == id))
        .unwrap_or_else(|| panic!("cgroup {id} not exported"));
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

fn hierarchies() -> Option<Hierarchies> {
    let h = Hierarchies::detect(Path::new(ROOT));
    if h.is_empty() {
        eprintln!("SKIP: no cgroup hierarchy under {ROOT}");
        return None;
    }
    Some(h)
}

fn name(what: &str) -> String {
    format!("/sextant-test-{}-{what}", std::process::id())
}

#[test]
fn v1_cpu_usage_matches_the_process_and_quota_throttles() {
    let Some(h) = hierarchies() else { return };
    let (Some(cpu), Some(cpuacct)) = (h.v1_mount("cpu"), h.v1_mount("cpuacct")) else {
        eprintln!("SKIP: no v1 cpu/cpuacct controllers (pure v2 host: see the v2 test)");
        return;
    };
    let (cpu, cpuacct) = (cpu.to_path_buf(), cpuacct.to_path_buf());
    let mut mounts = vec![cpu.clone()];
    if cpuacct != cpu {
        mounts.push(cpuacct.clone());
    }
    // On a hybrid host, the v2 tree too: its PSI files are read beside the v1 stats.
    if let Some(u) = &h.unified {
        mounts.push(u.clone());
    }
    let rel = name("cpu");
    let Some(mut cg) = TestCgroup::create(&mounts, &rel) else {
        return;
    };
    // 50 ms per 100 ms: half a CPU.
    cg.set(&cpu, "cpu.cfs_period_us", "100000");
    cg.set(&cpu, "cpu.cfs_quota_us", "50000");
    // Four burners want four CPUs: the quota binds even when the machine is busy.
    let pids: Vec<u32> = (0..4).map(|_| cg.spawn("while :; do :; done")).collect();
    let cpu_of = || pids.iter().map(|p| process_cpu_seconds(*p)).sum::<f64>();

    let mut src = CgroupSource::without_names(h.clone(), "/proc".into(), true);
    let before = collect_for(&mut src, &rel);
    let p0 = cpu_of();
    let started = Instant::now();
    // Until the burners have had 2 s of CPU (longer on a busy machine).
    let deadline = Instant::now() + Duration::from_secs(60);
    while cpu_of() < p0 + 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = collect_for(&mut src, &rel);
    let p1 = cpu_of();
    let elapsed = started.elapsed().as_secs_f64();

    let key = "container_cpu_usage_seconds_total{cpu=total}";
    let cgroup_delta = after[key] - before[key];
    let process_delta = p1 - p0;
    eprintln!("cgroup cpu delta {cgroup_delta:.3}s, process cpu delta {process_delta:.3}s");
    // The loop above waited for 2 s of CPU; compare with slack for the float sums' rounding.
    assert!(process_delta >= 1.99, "the burner ran ({process_delta}s)");
    assert!(
        (cgroup_delta - process_delta).abs() <= 0.05 * process_delta,
        "cgroup {cgroup_delta} vs process {process_delta}"
    );
    // The quota held the group to at most half a CPU.
    assert!(
        process_delta < elapsed * 0.7,
        "quota applied: {process_delta}s in {elapsed}s"
    );
    // Throttling shows once the group has exceeded its quota in some period (on a busy machine
    // the burners may get less than the quota for a while), and throttled time is accounted when
    // a throttled group is unthrottled: wait until the kernel reports both, then the collector
    // must report at least what the file said before it collected.
    let raw = |field: &str| {
        let stat = std::fs::read_to_string(cg.dir(&cpu).join("cpu.stat")).unwrap();
        stat.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while (raw("nr_throttled") == 0 || raw("throttled_time") == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (raw_periods, raw_ns) = (raw("nr_throttled"), raw("throttled_time"));
    assert!(raw_periods > 0, "the kernel throttled the group");
    let again = collect_for(&mut src, &rel);
    assert!(again["container_cpu_cfs_throttled_periods_total"] >= raw_periods as f64);
    let ours_ns = again["container_cpu_cfs_throttled_seconds_total"] * 1e9;
    assert!(
        ours_ns + 1.0 >= raw_ns as f64,
        "collector {ours_ns} ns, kernel {raw_ns} ns before"
    );
    if raw_ns == 0 {
        eprintln!("note: the kernel reported no throttled time within 30 s");
    } else {
        assert!(ours_ns > 0.0);
    }
    assert!(after["container_cpu_cfs_periods_total"] > before["container_cpu_cfs_periods_total"]);
    assert_eq!(after["container_spec_cpu_quota"], 50000.0);
    assert_eq!(after["container_spec_cpu_period"], 100000.0);
    let user_sys =
        after["container_cpu_user_seconds_total"] + after["container_cpu_system_seconds_total"];
    assert!(
        (user_sys - after[key]).abs() < 0.1 * after[key] + 0.05,
        "user+system {user_sys} vs usage {}",
        after[key]
    );
    assert_eq!(after["container_processes"], 4.0);
    if h.unified.is_some() {
        assert!(after.contains_key("container_pressure_cpu_waiting_seconds_total"));
    }
}

#[test]
fn v2_cpu_usage_matches_the_process() {
    let Some(h) = hierarchies() else { return };
    let Some(unified) = h.unified.clone() else {
        eprintln!("SKIP: no cgroup v2 hierarchy");
        return;
    };
    let rel = name("v2");
    let Some(mut cg) = TestCgroup::create(std::slice::from_ref(&unified), &rel) else {
        return;
    };
    let pid = cg.spawn("while :; do :; done");
    // Only the v2 tree: cpu.stat's usage exists in every v2 cgroup, controllers or not.
    let v2_only = Hierarchies {
        v1: vec![],
        unified: Some(unified),
    };
    let mut src = CgroupSource::without_names(v2_only, "/proc".into(), true);
    let before = collect_for(&mut src, &rel);
    let p0 = process_cpu_seconds(pid);
    wait_for_cpu(pid, p0 + 1.0);
    let after = collect_for(&mut src, &rel);
    let p1 = process_cpu_seconds(pid);
    let key = "container_cpu_usage_seconds_total{cpu=total}";
    let (cd, pd) = (after[key] - before[key], p1 - p0);
    eprintln!("v2: cgroup cpu delta {cd:.3}s, process cpu delta {pd:.3}s");
    assert!(pd >= 0.99, "the burner ran ({pd}s)"); // slack for the float sums' rounding
    assert!((cd - pd).abs() <= 0.05 * pd, "cgroup {cd} vs process {pd}");
    assert!(after.contains_key("container_pressure_cpu_waiting_seconds_total"));
    assert!(after.contains_key("container_pressure_memory_stalled_seconds_total"));
}

#[test]
fn v1_memory_limit_oom_kill_is_counted() {
    let Some(h) = hierarchies() else { return };
    let Some(memory) = h.v1_mount("memory").map(Path::to_path_buf) else {
        eprintln!("SKIP: no v1 memory controller");
        return;
    };
    if !std::fs::read_to_string(memory.join("memory.oom_control"))
        .is_ok_and(|s| s.contains("oom_kill "))
    {
        eprintln!("SKIP: this kernel's memory.oom_control has no oom_kill (Linux < 4.13)");
        return;
    }
    let rel = name("mem");
    let Some(mut cg) = TestCgroup::create(std::slice::from_ref(&memory), &rel) else {
        return;
    };
    cg.set(&memory, "memory.limit_in_bytes", &(32u64 << 20).to_string());
    let _ = std::fs::write(cg.dir(&memory).join("memory.swappiness"), "0");
    let mut src = CgroupSource::without_names(h.clone(), "/proc".into(), true);
    let before = collect_for(&mut src, &rel);
    assert_eq!(before["container_oom_events_total"], 0.0);
    assert_eq!(
        before["container_spec_memory_limit_bytes"],
        (32u64 << 20) as f64
    );
    // `tail` keeps the one endless line of /dev/zero in memory until the OOM killer stops it.
    let shell = cg.spawn("head -c 268435456 /dev/zero | tail > /dev/null");
    let started = Instant::now();
    let status = cg.children.last_mut().expect("child").wait().expect("wait");
    eprintln!(
        "allocator exited with {status} after {:?} (shell pid {shell})",
        started.elapsed()
    );
    let after = collect_for(&mut src, &rel);
    assert!(
        after["container_oom_events_total"] >= 1.0,
        "oom kills counted: {after:?}"
    );
    assert!(after["container_memory_failcnt"] > 0.0);
}

/// Prints the collector's CPU time per scan of 100 real container cgroups (each with a sleeping
/// process). Measures, asserts nothing about time.
#[test]
fn cost_per_scan_of_100_cgroups() {
    let Some(h) = hierarchies() else { return };
    let mut mounts: Vec<PathBuf> = vec![];
    for c in ["cpu", "cpuacct", "memory", "blkio", "pids"] {
        if let Some(m) = h.v1_mount(c)
            && !mounts.iter().any(|x| x == m)
        {
            mounts.push(m.to_path_buf());
        }
    }
    if let Some(u) = &h.unified {
        mounts.push(u.clone());
    }
    let parent = name("bench");
    // Dropped in reverse order: the containers, then `docker`, then the parent.
    let Some(_top) = TestCgroup::create(&mounts, &parent) else {
        return;
    };
    let Some(_docker) = TestCgroup::create(&mounts, &format!("{parent}/docker")) else {
        return;
    };
    let mut groups = vec![];
    for i in 0..100u32 {
        let id = format!("{:064x}", 0xabc0_0000u64 + u64::from(i));
        let Some(mut cg) = TestCgroup::create(&mounts, &format!("{parent}/docker/{id}")) else {
            return;
        };
        cg.spawn("exec sleep 600");
        groups.push(cg);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut src = CgroupSource::without_names(h, "/proc".into(), false);
    let mut out = vec![];
    let c = src.collect(0, &mut out).expect("collect");
    let ours = out
        .iter()
        .filter(|g| {
            g.identity
                .iter()
                .any(|l| l.name == "id" && l.value.starts_with(&parent))
        })
        .count();
    assert_eq!(ours, 100, "every test container exported");
    let scans = 50;
    let cpu0 = thread_cpu_ns();
    let wall0 = Instant::now();
    let mut samples = 0;
    for _ in 0..scans {
        out.clear();
        samples = src.collect(0, &mut out).expect("collect").samples;
    }
    let cpu_ms = (thread_cpu_ns() - cpu0) as f64 / 1e6 / f64::from(scans);
    let wall_ms = wall0.elapsed().as_secs_f64() * 1e3 / f64::from(scans);
    let per_100 = cpu_ms * 100.0 / out.len() as f64;
    println!(
        "cgroup scan: {} cgroups exported ({} read), {samples} samples: {cpu_ms:.2} ms CPU ({wall_ms:.2} ms wall) per scan; {per_100:.2} ms CPU per 100 containers = {:.3}% of one core at a 10 s interval",
        out.len(),
        c.scanned,
        per_100 / 10_000.0 * 100.0
    );
    drop(groups);
}

/// CPU time of the calling thread (`/proc/thread-self/schedstat`, ns on CPU).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Network counters come from the container's own network namespace (`/proc/<pid>/net/dev`),
/// without `lo` and `veth*`.
#[test]
fn network_counters_from_the_containers_namespace() {
    let Some(h) = hierarchies() else { return };
    let Some(mount) = h
        .v1_mount("pids")
        .map(Path::to_path_buf)
        .or_else(|| h.unified.clone())
    else {
        eprintln!("SKIP: no pids or v2 hierarchy");
        return;
    };
    if Command::new("unshare").arg("--version").output().is_err()
        || Command::new("ip").arg("-V").output().is_err()
    {
        eprintln!("SKIP: needs unshare and ip");
        return;
    }
    let rel = name("net");
    let Some(mut cg) = TestCgroup::create(std::slice::from_ref(&mount), &rel) else {
        return;
    };
    // A new network namespace with a veth pair renamed so that it is not ignored; UDP to an
    // absent neighbour sends ARP out of eth0 into eth1.
    cg.spawn(
        "exec unshare -n bash -c 'ip link add eth0 type veth peer name eth1 && ip addr add 10.9.9.1/24 dev eth0 && ip link set eth0 up && ip link set eth1 up && for i in 1 2 3; do echo x > /dev/udp/10.9.9.2/9; done; exec sleep 600'",
    );
    let only = Hierarchies {
        v1: if h.unified.as_deref() == Some(mount.as_path()) {
            vec![]
        } else {
            vec![(vec!["pids".to_owned()], mount.clone())]
        },
        unified: h.unified.clone().filter(|u| *u == mount),
    };
    let mut src = CgroupSource::without_names(only, "/proc".into(), true);
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = collect_for(&mut src, &rel);
        let tx = v
            .get("container_network_transmit_bytes_total{interface=eth0}")
            .copied()
            .unwrap_or(0.0);
        if tx > 0.0 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        v["container_network_transmit_bytes_total{interface=eth0}"] > 0.0,
        "{v:?}"
    );
    assert!(v.contains_key("container_network_receive_bytes_total{interface=eth1}"));
    assert!(!v.keys().any(|k| k.contains("interface=lo")));
}

/// A process in the host's network namespace has no container network counters.
#[test]
fn host_network_namespace_is_not_exported() {
    let Some(h) = hierarchies() else { return };
    let Some(mount) = h.v1_mount("pids").map(Path::to_path_buf) else {
        eprintln!("SKIP: no v1 pids hierarchy");
        return;
    };
    let rel = name("hostnet");
    let Some(mut cg) = TestCgroup::create(std::slice::from_ref(&mount), &rel) else {
        return;
    };
    cg.spawn("exec sleep 600");
    let only = Hierarchies {
        v1: vec![(vec!["pids".to_owned()], mount)],
        unified: None,
    };
    let mut src = CgroupSource::without_names(only, "/proc".into(), true);
    let v = collect_for(&mut src, &rel);
    assert_eq!(v["container_processes"], 1.0);
    assert!(
        !v.keys().any(|k| k.starts_with("container_network")),
        "{v:?}"
    );
}

/// The same on a cgroup v2 memory controller (pure v2 hosts): `memory.events` `oom_kill`.
#[test]
fn v2_memory_max_oom_kill_is_counted() {
    let Some(h) = hierarchies() else { return };
    let Some(unified) = h.unified.clone() else {
        eprintln!("SKIP: no cgroup v2 hierarchy");
        return;
    };
    let rel = name("v2mem");
    let Some(mut cg) = TestCgroup::create(std::slice::from_ref(&unified), &rel) else {
        return;
    };
    if !cg.dir(&unified).join("memory.max").exists() {
        eprintln!(
            "SKIP: the v2 memory controller is not enabled here (bound to v1 on a hybrid host)"
        );
        return;
    }
    cg.set(&unified, "memory.max", &(32u64 << 20).to_string());
    let _ = std::fs::write(cg.dir(&unified).join("memory.swap.max"), "0");
    let v2_only = Hierarchies {
        v1: vec![],
        unified: Some(unified),
    };
    let mut src = CgroupSource::without_names(v2_only, "/proc".into(), true);
    let before = collect_for(&mut src, &rel);
    assert_eq!(before["container_oom_events_total"], 0.0);
    assert_eq!(
        before["container_spec_memory_limit_bytes"],
        (32u64 << 20) as f64
    );
    cg.spawn("head -c 268435456 /dev/zero | tail > /dev/null");
    let status = cg.children.last_mut().expect("child").wait().expect("wait");
    eprintln!("allocator exited with {status}");
    let after = collect_for(&mut src, &rel);
    assert!(after["container_oom_events_total"] >= 1.0, "{after:?}");
}

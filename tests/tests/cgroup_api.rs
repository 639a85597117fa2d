//! Container metrics end to end: `sextant run` collects a real cgroup every second, and the
//! query API answers what the kernel accounted.
//!
//! - A CPU burner runs 20 s in a `/docker/<id>` cgroup held to half a CPU by its quota:
//!   `rate(container_cpu_usage_seconds_total[10s])` from `/api/v1/query_range` matches the
//!   burner's own CPU time (utime + stime from `/proc/<pid>/stat`) within 5 %, and so does the
//!   counter's increase between the burner's start and end.
//! - A process allocates past the cgroup's 32 MiB limit: `container_oom_events_total` from the
//!   API counts the OOM kill.
//!
//! Needs root and a writable cgroupfs (as `scripts/test` runs in CI); skipped with a message
//! otherwise.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::Sextant;
use tests::procstat::cpu_seconds;

/// A `/docker/<id>` cgroup in the hierarchies the test needs (so the collector sees a Docker
/// container); its processes are killed and the directories removed on drop.
struct Container {
    id: String,
    /// (controller root, the cgroup's directory under it)
    dirs: Vec<(PathBuf, PathBuf)>,
    children: Vec<Child>,
}

impl Container {
    /// A container in every hierarchy a Docker container has (the collector finds containers
    /// in the CPU hierarchies); on a cgroup v2 host, the unified one. `tag` tells the tests'
    /// containers apart (tests of one process may start in the same millisecond).
    fn create(tag: u32) -> Option<Container> {
        let controllers = ["cpu", "cpuacct", "memory", "pids"];
        let hex = format!("{:08x}{tag:08x}{:048x}", std::process::id(), now_ms());
        let rel = format!("docker/{hex}");
        let base = PathBuf::from("/sys/fs/cgroup");
        let roots: Vec<PathBuf> = if base.join("cgroup.procs").exists() {
            vec![base]
        } else {
            // Each controller's own mount, or the combined `cpu,cpuacct` one.
            let mut roots: Vec<PathBuf> = Vec::new();
            for c in &controllers {
                let own = base.join(c);
                let combined = base.join("cpu,cpuacct");
                let root = if own.join("cgroup.procs").exists() && !own.is_symlink() {
                    own
                } else if matches!(*c, "cpu" | "cpuacct") && combined.join("cgroup.procs").exists()
                {
                    combined
                } else {
                    eprintln!("SKIP: no v1 {c} controller under {}", base.display());
                    return None;
                };
                if !roots.contains(&root) {
                    roots.push(root);
                }
            }
            roots
        };
        let mut c = Container {
            id: format!("/{rel}"),
            dirs: Vec::new(),
            children: Vec::new(),
        };
        for root in roots {
            let d = root.join(&rel);
            if let Err(e) = std::fs::create_dir_all(&d) {
                eprintln!("SKIP: cannot create {}: {e}", d.display());
                return None;
            }
            c.dirs.push((root, d));
        }
        if c.v2() {
            // The limits' files exist only where the parent delegates the controllers.
            for parent in ["/sys/fs/cgroup", "/sys/fs/cgroup/docker"] {
                let _ = std::fs::write(
                    Path::new(parent).join("cgroup.subtree_control"),
                    "+cpu +memory +pids",
                );
            }
        }
        Some(c)
    }

    fn v2(&self) -> bool {
        self.dirs.len() == 1 && self.dirs[0].0 == Path::new("/sys/fs/cgroup")
    }

    /// The cgroup's directory in `controller`'s hierarchy (the only one, on v2).
    fn dir(&self, controller: &str) -> &Path {
        self.dirs
            .iter()
            .find(|(root, _)| {
                self.v2()
                    || root
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller))
            })
            .map(|(_, d)| d.as_path())
            .expect("controller directory")
    }

    /// Writes `value` to `file` in `controller`'s directory.
    fn set(&self, controller: &str, file: &str, value: &str) {
        let dir = self.dir(controller);
        std::fs::write(dir.join(file), value)
            .unwrap_or_else(|e| panic!("writing {file} in {}: {e}", dir.display()));
    }

    /// Runs `script` with `sh` inside the cgroup (it joins every hierarchy first).
    fn spawn(&mut self, script: &str) -> u32 {
        let join: String = self
            .dirs
            .iter()
            .map(|(_, d)| format!("echo $$ > '{}/cgroup.procs' || exit 97; ", d.display()))
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
        pid
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (_, d) in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn now_s() -> f64 {
    now_ms() as f64 / 1000.0
}

/// `sextant run` collecting cgroups every second.
fn start_sextant(dir: &Path) -> Sextant {
    let config = dir.join("sextant.yaml");
    std::fs::write(&config, "collector:\n  interval: 1s\n").unwrap();
    let data = dir.join("data");
    Sextant::start(&data, &["--config", config.to_str().unwrap()]).unwrap()
}

fn api(s: &Sextant, path: &str, form: &[(&str, String)]) -> Value {
    let body: Value = reqwest::blocking::Client::new()
        .post(s.url(path))
        .form(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["status"], "success", "{path} {form:?}: {body}");
    body["data"]["result"].clone()
}

/// The value of the first series of an instant query at `t`, if any.
fn instant(s: &Sextant, q: &str, t: f64) -> Option<f64> {
    let r = api(
        s,
        "/api/v1/query",
        &[("query", q.to_owned()), ("time", format!("{t:.3}"))],
    );
    r[0]["value"][1].as_str().map(|v| v.parse().unwrap())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn cpu_rate_from_the_api_matches_the_process_cpu_time() {
    let Some(mut c) = Container::create(1) else {
        return;
    };
    if c.v2() {
        c.set("cpu", "cpu.max", "50000 100000");
    } else {
        c.set("cpu", "cpu.cfs_period_us", "100000");
        c.set("cpu", "cpu.cfs_quota_us", "50000");
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start_sextant(dir.path());
    let series = format!("container_cpu_usage_seconds_total{{id=\"{}\"}}", c.id);
    // A sleeper first, so the container exists (and its counter has a first sample) before
    // the burner starts.
    c.spawn("exec sleep 600");
    wait_for(
        "the container's first sample",
        Duration::from_secs(20),
        || instant(&s, &series, now_s()).is_some(),
    );

    let cpu_before_s = now_s();
    let burner = c.spawn("exec sh -c 'while :; do :; done'");
    let started = Instant::now();
    let cpu0 = cpu_seconds(burner).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    let cpu1 = cpu_seconds(burner).unwrap();
    let wall = started.elapsed().as_secs_f64();
    // Stopped at once, so that the counter's later samples add nothing.
    if let Some(b) = c.children.last_mut() {
        let _ = b.kill();
        let _ = b.wait();
    }
    let cpu_after_s = now_s();
    let burned = cpu1 - cpu0;
    // Let the last scans reach the store.
    std::thread::sleep(Duration::from_secs(3));

    // The quota held the burner to about half a CPU.
    assert!(
        burned > 0.3 * wall && burned < 0.6 * wall,
        "burner used {burned:.2}s in {wall:.2}s"
    );

    // The rate over 10 s windows lying wholly inside the burn, averaged.
    let r = api(
        &s,
        "/api/v1/query_range",
        &[
            ("query", format!("rate({series}[10s])")),
            ("start", format!("{:.3}", cpu_before_s + 11.0)),
            ("end", format!("{:.3}", cpu_after_s - 1.0)),
            ("step", "1".to_owned()),
        ],
    );
    let values: Vec<f64> = r[0]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no rate series: {r}"))
        .iter()
        .map(|p| p[1].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(values.len() >= 5, "rate points: {values:?}");
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let process_rate = burned / wall;
    eprintln!(
        "rate(…[10s]) mean {mean:.4} over {} steps, process {process_rate:.4} CPU ({burned:.3}s in {wall:.3}s)",
        values.len()
    );
    assert!(
        (mean - process_rate).abs() <= 0.05 * process_rate,
        "rate {mean} vs process {process_rate}"
    );

    // The counter's increase from the burner's start to its end.
    let before = instant(&s, &series, cpu_before_s).expect("counter before");
    let after = instant(&s, &series, cpu_after_s + 1.5).expect("counter after");
    let delta = after - before;
    eprintln!("counter delta {delta:.3}s, process {burned:.3}s");
    assert!(
        (delta - burned).abs() <= 0.05 * burned,
        "counter delta {delta} vs process {burned}"
    );
    s.stop().unwrap();
}

#[test]
fn an_oom_kill_is_counted_by_the_api() {
    let Some(mut c) = Container::create(2) else {
        return;
    };
    if !c.v2()
        && !std::fs::read_to_string(c.dir("memory").join("memory.oom_control"))
            .is_ok_and(|s| s.contains("oom_kill "))
    {
        eprintln!("SKIP: this kernel's memory.oom_control has no oom_kill (Linux < 4.13)");
        return;
    }
    let limit = (32u64 << 20).to_string();
    if c.v2() {
        c.set("memory", "memory.max", &limit);
        c.set("memory", "memory.swap.max", "0");
    } else {
        c.set("memory", "memory.limit_in_bytes", &limit);
        let _ = std::fs::write(c.dir("memory").join("memory.swappiness"), "0");
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start_sextant(dir.path());
    let series = format!("container_oom_events_total{{id=\"{}\"}}", c.id);
    c.spawn("exec sleep 600");
    wait_for(
        "the container's first sample",
        Duration::from_secs(20),
        || instant(&s, &series, now_s()).is_some(),
    );
    assert_eq!(instant(&s, &series, now_s()), Some(0.0));
    assert_eq!(
        instant(
            &s,
            &format!("container_spec_memory_limit_bytes{{id=\"{}\"}}", c.id),
            now_s()
        ),
        Some((32u64 << 20) as f64)
    );
    // `tail` keeps the one endless line of /dev/zero in memory until the OOM killer stops it.
    c.spawn("head -c 268435456 /dev/zero | tail > /dev/null");
    let status = c.children.last_mut().unwrap().wait().unwrap();
    eprintln!("allocator exited with {status}");
    wait_for("the OOM kill in the API", Duration::from_secs(20), || {
        instant(&s, &series, now_s()).is_some_and(|v| v >= 1.0)
    });
    s.stop().unwrap();
}

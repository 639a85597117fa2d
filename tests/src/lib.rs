//! Support for Sextant's cross-crate integration tests: the real `sextant` binary and real
//! peers (the tansu Kafka broker) started on free loopback ports, and stopped when dropped.
//!
//! Binaries are found next to the test executable's profile directory (`target/<profile>/`);
//! the README's test command builds them before the tests run.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod nginx;
pub mod peers;
pub mod procstat;
pub mod remote_write;
pub mod workload;

/// The profile directory holding the workspace's binaries (`target/debug` for `cargo test`):
/// the directory of the running executable, or its parent for test executables in `deps/`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("the executable has no directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        // target/<profile>/deps/<test> → target/<profile>
        dir.parent()
            .map(Path::to_owned)
            .context("test executable has no profile directory")
    } else {
        Ok(dir.to_owned())
    }
}

/// Path of a workspace binary, which must have been built (`cargo build --workspace --bins`).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let path = profile_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (cargo build --workspace --bins), as the README's test command does",
            path.display()
        );
    }
    Ok(path)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {timeout:?}")
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to a child process.
pub fn signal(child: &Child, signal: i32) -> Result<()> {
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // Through the kill command: the workspace denies unsafe code, which libc::kill would need.
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// Waits for a child to exit, for at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends `text` to `path`, creating it.
pub fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Every log batch on the logs topic of the embedded bus under `data_dir` (Sextant stopped), as
/// consumer group `group` reads it.
pub fn read_logs_topic(data_dir: &Path, group: &str) -> Result<Vec<bus::proto::LogsBatch>> {
    use bus::Bus;
    use prost::Message;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let bus = bus::embedded::EmbeddedBus::open(&data_dir.join("bus"), Default::default())?;
        let mut c = bus.consumer(group, &[bus::Topic::Logs]).await?;
        let mut batches = Vec::new();
        loop {
            let got = c.poll(1000, Duration::from_millis(500)).await?;
            if got.is_empty() {
                return Ok(batches);
            }
            for d in got {
                batches.push(bus::proto::LogsBatch::decode(&d.payload[..])?);
            }
        }
    })
}

/// A running `sextant run`, killed when dropped.
#[derive(Debug)]
pub struct Sextant {
    pub child: Child,
    pub addr: SocketAddr,
    /// Time from spawn to the bound address being printed.
    pub started_in: Duration,
    stderr_path: PathBuf,
}

impl Sextant {
    /// Starts `sextant run --listen 127.0.0.1:0 --data-dir DIR` plus `extra` arguments and waits
    /// for the address it prints.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<Sextant> {
        Sextant::start_command("run", data_dir, extra)
    }

    /// Starts `sextant collector --listen 127.0.0.1:0 --data-dir DIR` plus `extra` arguments (e.g.
    /// `--kafka BROKERS`) and waits for the address it prints.
    pub fn start_collector(data_dir: &Path, extra: &[&str]) -> Result<Sextant> {
        Sextant::start_command("collector", data_dir, extra)
    }

    fn start_command(command: &str, data_dir: &Path, extra: &[&str]) -> Result<Sextant> {
        let bin = workspace_bin("sextant")?;
        let stderr_path = data_dir.with_extension("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args([command, "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("spawning sextant")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("sextant listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            bail!("sextant printed {line:?} instead of its address; stderr:\n{log}");
        };
        let addr: SocketAddr = addr.parse().context("parsing the printed address")?;
        Ok(Sextant {
            child,
            addr,
            started_in: started.elapsed(),
            stderr_path,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the process with SIGTERM and fails unless it exits successfully within 30 s.
    pub fn stop(mut self) -> Result<()> {
        signal(&self.child, libc::SIGTERM)?;
        match wait_timeout(&mut self.child, Duration::from_secs(30))? {
            Some(status) if status.success() => Ok(()),
            status => bail!("sextant exited with {status:?}:\n{}", self.stderr()),
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Sextant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu Kafka broker on a free loopback port with sqlite storage (so it survives restarts),
/// killed when dropped.
#[derive(Debug)]
pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Tansu {
    /// The tansu binary: `$TANSU`, else `tansu` on PATH or in `~/.cargo/bin`.
    pub fn bin() -> Result<PathBuf> {
        if let Ok(p) = std::env::var("TANSU") {
            return Ok(PathBuf::from(p));
        }
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect())
            .unwrap_or_default();
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
        }
        candidates.into_iter().find(|p| p.exists()).context(
            "tansu is not installed: the README's test command installs it (cargo install tansu --version 0.6.0 --features dynostore,libsql --locked)",
        )
    }

    /// Starts a broker keeping its data in `dir/tansu.db` (its log in `dir/tansu.log`).
    pub fn start(dir: &Path) -> Result<Tansu> {
        let mut t = Tansu {
            child: None,
            port: free_port()?,
            dir: dir.to_owned(),
            log: dir.join("tansu.log"),
        };
        t.restart()?;
        Ok(t)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(Tansu::bin()?)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // tansu reads `sqlite://` URLs relative to its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning tansu")?;
        self.child = Some(child);
        wait_for_port(
            format!("127.0.0.1:{}", self.port).parse()?,
            Duration::from_secs(30),
        )
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
pub mod promql_diff;
pub mod promqltest;

//! Reference peers started as real processes on free loopback ports: Prometheus 2.42 and
//! VictoriaMetrics 1.79 from Debian (`apt-get install prometheus victoria-metrics`), for
//! differential tests and side-by-side benchmarks. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{free_port, signal, wait_timeout};

/// Which reference peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    Prometheus,
    VictoriaMetrics,
}

impl PeerKind {
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Prometheus => "Prometheus",
            PeerKind::VictoriaMetrics => "VictoriaMetrics",
        }
    }

    fn bin(self) -> &'static str {
        match self {
            PeerKind::Prometheus => "prometheus",
            PeerKind::VictoriaMetrics => "victoria-metrics",
        }
    }
}

/// A running peer.
#[derive(Debug)]
pub struct Peer {
    pub kind: PeerKind,
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
}

/// Finds a peer's binary on PATH, with the install hint in the error.
pub fn peer_bin(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .with_context(|| {
            format!("{name} is not installed: scripts/test installs it (apt-get install prometheus victoria-metrics)")
        })
}

impl Peer {
    /// Starts Prometheus with the remote-write receiver on, `config` as its configuration file
    /// (YAML), its data in `dir/data`.
    pub fn prometheus(dir: &Path, config: &str) -> Result<Peer> {
        Peer::prometheus_on(dir, config, free_port()?)
    }

    /// [`Peer::prometheus`] on a given port (for a configuration that names it, e.g. to scrape
    /// itself).
    pub fn prometheus_on(dir: &Path, config: &str, port: u16) -> Result<Peer> {
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let data_dir = dir.join("data");
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", data_dir.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".to_string(),
            "--web.enable-admin-api".to_string(),
            "--storage.tsdb.retention.time=100y".to_string(),
        ];
        Peer::spawn(PeerKind::Prometheus, dir, port, data_dir, &args)
    }

    /// Starts VictoriaMetrics single-node with its data in `dir/data`.
    pub fn victoria_metrics(dir: &Path) -> Result<Peer> {
        let port = free_port()?;
        let data_dir = dir.join("data");
        let args = vec![
            format!("-storageDataPath={}", data_dir.display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=100y".to_string(),
            // No rollup-result cache: repeated benchmark queries must do the work each time, as
            // they do in Prometheus and Sextant.
            "-search.disableCache".to_string(),
        ];
        Peer::spawn(PeerKind::VictoriaMetrics, dir, port, data_dir, &args)
    }

    fn spawn(
        kind: PeerKind,
        dir: &Path,
        port: u16,
        data_dir: PathBuf,
        args: &[String],
    ) -> Result<Peer> {
        let log = dir.join(format!("{}.log", kind.bin()));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(peer_bin(kind.bin())?)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {}", kind.bin()))?;
        let mut peer = Peer {
            kind,
            child: Some(child),
            port,
            data_dir,
            log,
        };
        peer.wait_ready(Duration::from_secs(60))?;
        Ok(peer)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let path = match self.kind {
            PeerKind::Prometheus => "/-/ready",
            PeerKind::VictoriaMetrics => "/health",
        };
        let url = self.url(path);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "{} exited with {status}: {}",
                    self.kind.name(),
                    self.log_text()
                );
            }
            if let Ok(r) = reqwest::blocking::get(&url)
                && r.status().is_success()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} not ready after {timeout:?}: {}",
            self.kind.name(),
            self.log_text()
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the peer logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the peer with SIGTERM (so it flushes), waiting up to `timeout`, then SIGKILL.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGTERM)?;
            if wait_timeout(&mut c, timeout)?.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! Real nginx (Debian's package) on a free loopback port under a private prefix, with a given
//! `log_format`, for access-log tests. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::free_port;

/// The nginx binary: `$NGINX`, else `nginx` on PATH, else `/usr/sbin/nginx`.
pub fn nginx_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("NGINX") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/sbin/nginx"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("nginx is not installed: `apt-get install -y nginx` (scripts/test does it)")
}

/// A running nginx: `/status` is `stub_status`, every other path answers 200 and is logged to
/// `logs/access.log` in the given format.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    pub prefix: PathBuf,
    pub port: u16,
}

impl Nginx {
    pub fn start(prefix: &Path, log_format: &str) -> Result<Nginx> {
        let port = free_port()?;
        for d in ["conf", "logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(d))?;
        }
        let p = prefix.display();
        let conf = format!(
            r#"worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    log_format sextant '{log_format}';
    access_log {p}/logs/access.log sextant;
    server {{
        listen 127.0.0.1:{port};
        server_name shop.test;
        location = /status {{ stub_status; access_log off; }}
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
        );
        std::fs::write(prefix.join("conf/nginx.conf"), conf)?;
        let child = Command::new(nginx_bin()?)
            .arg("-p")
            .arg(prefix)
            .args(["-c", "conf/nginx.conf", "-g", "daemon off;"])
            .spawn()
            .context("starting nginx")?;
        let n = Nginx {
            child,
            prefix: prefix.to_owned(),
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nginx did not start: {}", n.error_log())
    }

    /// The access log nginx writes.
    pub fn access_log(&self) -> PathBuf {
        self.prefix.join("logs/access.log")
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    /// Rotates the access log as logrotate does without copytruncate: `access.log.N` become
    /// `.N+1`, `access.log` becomes `access.log.1`, and nginx reopens its log (`-s reopen`).
    pub fn rotate(&self) -> Result<()> {
        let logs = self.prefix.join("logs");
        let mut n = 1;
        while logs.join(format!("access.log.{n}")).exists() {
            n += 1;
        }
        for i in (1..n).rev() {
            std::fs::rename(
                logs.join(format!("access.log.{i}")),
                logs.join(format!("access.log.{}", i + 1)),
            )?;
        }
        std::fs::rename(logs.join("access.log"), logs.join("access.log.1"))?;
        self.signal("reopen")
    }

    /// Requests nginx has handled, from `stub_status`, not counting the status request itself.
    pub fn requests_handled(&self) -> Result<u64> {
        let status =
            reqwest::blocking::get(format!("http://127.0.0.1:{}/status", self.port))?.text()?;
        // "Active connections: 1 \nserver accepts handled requests\n 5 5 3001 \n…"
        let requests: u64 = status
            .lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().nth(2))
            .context("malformed stub_status")?
            .parse()?;
        Ok(requests - 1)
    }

    fn signal(&self, s: &str) -> Result<()> {
        let status = Command::new(nginx_bin()?)
            .arg("-p")
            .arg(&self.prefix)
            .args(["-c", "conf/nginx.conf", "-s", s])
            .status()?;
        if !status.success() {
            bail!("nginx -s {s} failed: {}", self.error_log());
        }
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.signal("stop");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The `collector:` section of the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the node agent's container metrics (the `collector:` section).
///
/// ```yaml
/// collector:
///   interval: 10s
///   cgroup_root: /sys/fs/cgroup
///   proc_root: /proc
///   all_cgroups: false
///   tenant: ""
///   # kubelet:
///   #   url: https://127.0.0.1:10250/pods
///   #   bearer_token_file: /var/run/secrets/kubernetes.io/serviceaccount/token
///   #   insecure_skip_verify: true
///   #   refresh: 60s
///   # docker:
///   #   socket: /var/run/docker.sock
///   scrape:                # Prometheus targets, shipped through the bus
///     global: {scrape_interval: 1m, scrape_timeout: 10s}
///     tenant: default
///     scrape_configs: []
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// Whether `sextant run` runs the collector in-process (on by default: one process watches
    /// the node it runs on).
    pub enabled: bool,
    /// How often every source is collected (cAdvisor's housekeeping interval under the kubelet is
    /// 10 s). 1 s is affordable.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Where the cgroup hierarchies are mounted (`/host/sys/fs/cgroup` in a DaemonSet that mounts
    /// the host's). Mounts are found from `/proc/self/mountinfo` below this directory.
    pub cgroup_root: PathBuf,
    /// The host's `/proc` (for network counters, read from a process of each container).
    pub proc_root: PathBuf,
    /// Export every cgroup, not only those recognised as containers or pods (as cAdvisor's raw
    /// handler does); for plain hosts and tests.
    pub all_cgroups: bool,
    /// Tenant the samples are written for (empty: the default tenant).
    pub tenant: String,
    /// Pod and container names from the kubelet's `/pods` endpoint; without it the collector
    /// labels containers with what their cgroup paths tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfig>,
    /// Container names and images from the Docker Engine API on its unix socket (plain Docker,
    /// and Kubernetes with cri-dockerd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerConfig>,
    /// Router access logs tailed into log lines and RED metrics (off without sources).
    pub access_log: crate::accesslog::AccessLogConfig,
    /// Prometheus `/metrics` targets scraped by the collector and shipped through the bus
    /// (`prometheus.yml`'s `global` and `scrape_configs`, and the `tenant` the samples are
    /// stored under); no job by default. See [`crate::scrape`].
    pub scrape: tsdb::scrape::ScrapeSection,
    /// Container logs (kubelet's CRI files, Docker json-files) tailed into log lines.
    pub container_logs: crate::containerlog::ContainerLogConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            all_cgroups: false,
            tenant: String::new(),
            kubelet: None,
            access_log: crate::accesslog::AccessLogConfig::default(),
            container_logs: crate::containerlog::ContainerLogConfig::default(),
            docker: None,
            scrape: tsdb::scrape::ScrapeSection::default(),
        }
    }
}

/// The Docker Engine API, to name containers found by id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// The daemon's unix socket.
    pub socket: PathBuf,
    /// Time-out of one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long after a failed look-up a container is looked up again.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: PathBuf::from("/var/run/docker.sock"),
            timeout: Duration::from_secs(2),
            retry: Duration::from_secs(30),
        }
    }
}

impl DockerConfig {
    fn validate(&self) -> Result<(), String> {
        if !self.socket.is_absolute() {
            return Err(format!(
                "collector.docker.socket: {} is not an absolute path",
                self.socket.display()
            ));
        }
        if self.timeout.is_zero() {
            return Err("collector.docker.timeout: must be above 0".to_owned());
        }
        if self.retry.is_zero() {
            return Err("collector.docker.retry: must be above 0".to_owned());
        }
        Ok(())
    }
}

/// The kubelet's pods endpoint, to name pods and containers found by uid and container id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletConfig {
    /// The pods endpoint: `https://<node>:10250/pods` (with a token that may `get` `nodes/proxy`)
    /// or the read-only `http://127.0.0.1:10255/pods` where it is enabled.
    pub url: String,
    /// PEM file of the CA that signed the kubelet's serving certificate (added to the built-in
    /// roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Accept any kubelet certificate (self-signed serving certificates; metrics-server's
    /// `--kubelet-insecure-tls`).
    pub insecure_skip_verify: bool,
    /// A file holding a bearer token sent as `Authorization: Bearer …` (a service account token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// How long a fetched pod list is used before it is fetched again. An unknown pod uid or
    /// container id refreshes it earlier, at most once per `min_refresh`.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// The shortest time between two fetches.
    #[serde(with = "humantime_serde")]
    pub min_refresh: Duration,
    /// Time-out of one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            url: "https://127.0.0.1:10250/pods".to_owned(),
            ca_file: None,
            insecure_skip_verify: false,
            bearer_token_file: None,
            refresh: Duration::from_secs(60),
            min_refresh: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

impl CollectorConfig {
    /// Checks values that serde cannot; messages start with the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err(format!(
                "collector.interval: {} is below the minimum of 100ms",
                humantime::format_duration(self.interval)
            ));
        }
        if self.interval > Duration::from_secs(3600) {
            return Err("collector.interval: must be at most 1h".to_owned());
        }
        if !self.cgroup_root.is_absolute() {
            return Err(format!(
                "collector.cgroup_root: {} is not an absolute path",
                self.cgroup_root.display()
            ));
        }
        if !self.proc_root.is_absolute() {
            return Err(format!(
                "collector.proc_root: {} is not an absolute path",
                self.proc_root.display()
            ));
        }
        if let Some(k) = &self.kubelet {
            k.validate()?;
        }
        if let Some(d) = &self.docker {
            d.validate()?;
        }
        self.access_log
            .validate()
            .map_err(|e| format!("collector.{e}"))?;
        self.scrape.validate(crate::scrape::SCRAPE_KEY)?;
        self.container_logs
            .validate()
            .map_err(|e| format!("collector.{e}"))
    }
}

impl KubeletConfig {
    fn validate(&self) -> Result<(), String> {
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return Err(format!(
                    "collector.kubelet.url: scheme {:?} is not supported (use https or http)",
                    u.scheme()
                ));
            }
            Err(e) => return Err(format!("collector.kubelet.url: {e}")),
        }
        if self.min_refresh.is_zero() {
            return Err("collector.kubelet.min_refresh: must be above 0".to_owned());
        }
        if self.refresh < self.min_refresh {
            return Err("collector.kubelet.refresh: must be at least min_refresh".to_owned());
        }
        if self.timeout.is_zero() {
            return Err("collector.kubelet.timeout: must be above 0".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_an_empty_section() {
        let c = CollectorConfig::default();
        assert!(c.validate().is_ok());
        let parsed: CollectorConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, c);
        assert_eq!(c.interval, Duration::from_secs(10));
    }

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: CollectorConfig = serde_json::from_str(
            r#"{"interval":"1s","all_cgroups":true,"kubelet":{"url":"http://10.0.0.1:10255/pods","refresh":"30s"}}"#,
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_secs(1));
        assert!(c.all_cgroups);
        assert_eq!(c.kubelet.as_ref().unwrap().refresh, Duration::from_secs(30));
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<CollectorConfig>(r#"{"intervall":"1s"}"#).is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let c = CollectorConfig {
            interval: Duration::from_millis(10),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("collector.interval:"));
        let c = CollectorConfig {
            cgroup_root: "relative".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("collector.cgroup_root:")
        );
        let c = CollectorConfig {
            kubelet: Some(KubeletConfig {
                url: "ftp://x/pods".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("collector.kubelet.url:")
        );
        let c: CollectorConfig = serde_json::from_str(
            r#"{"scrape":{"scrape_configs":[{"job_name":"node","scrape_interval":"5s","scrape_timeout":"10s"}]}}"#,
        )
        .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("collector.scrape.scrape_configs[0].scrape_timeout:")
        );
    }
}

//! `scrape_configs` with Prometheus's YAML names, defaults and validation messages (prefixed
//! with the dotted key). [`http`]: the HTTP client settings (TLS, authentication).

mod http;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::relabel::{RelabelConfig, is_valid_label_name, validate_all};

pub use http::{Authorization, BasicAuth, ProxyUrl, Secret, TlsConfig, TlsVersion};

/// The scrape section: defaults, the tenant scraped series are stored under, and the jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeSection {
    /// Defaults of every job, as Prometheus's `global` section.
    pub global: GlobalConfig,
    /// The tenant whose store receives scraped samples.
    pub tenant: String,
    pub scrape_configs: Vec<ScrapeConfig>,
}

impl Default for ScrapeSection {
    fn default() -> ScrapeSection {
        ScrapeSection {
            global: GlobalConfig::default(),
            tenant: crate::DEFAULT_TENANT.to_string(),
            scrape_configs: Vec::new(),
        }
    }
}

/// Prometheus's `global` defaults: scrape every minute with a 10 s timeout.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    #[serde(with = "prom_duration")]
    pub scrape_interval: Duration,
    #[serde(with = "prom_duration")]
    pub scrape_timeout: Duration,
}

impl Default for GlobalConfig {
    fn default() -> GlobalConfig {
        GlobalConfig {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
        }
    }
}

/// One scrape job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    pub job_name: String,
    /// `global.scrape_interval` when unset.
    #[serde(
        with = "prom_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub scrape_interval: Option<Duration>,
    /// `global.scrape_timeout` (capped at the interval) when unset.
    #[serde(
        with = "prom_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub scrape_timeout: Option<Duration>,
    pub metrics_path: String,
    /// `http` or `https` (a target's `__scheme__` label overrides it).
    pub scheme: String,
    /// URL query parameters; a target's `__param_<name>` label overrides the first value.
    pub params: BTreeMap<String, Vec<String>>,
    /// Keep the scraped labels on conflicts with target labels (else they become
    /// `exported_<name>`).
    pub honor_labels: bool,
    /// Use the timestamps the target exposes (else the scrape's start time).
    pub honor_timestamps: bool,
    /// Ask for gzip.
    pub enable_compression: bool,
    pub static_configs: Vec<StaticConfig>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// More samples than this (after metric relabeling) fail the scrape; 0 = no limit.
    pub sample_limit: usize,
    /// More labels than this on a series fail the scrape; 0 = no limit.
    pub label_limit: usize,
    /// A longer label name fails the scrape; 0 = no limit.
    pub label_name_length_limit: usize,
    /// A longer label value fails the scrape; 0 = no limit.
    pub label_value_length_limit: usize,
    /// A larger (uncompressed) body fails the scrape; 0 = no limit.
    pub body_size_limit: ByteSize,
    /// TLS settings of `https` targets.
    pub tls_config: TlsConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// Legacy form of `authorization: {credentials: …}` (refused together with it).
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub bearer_token: Secret,
    /// Legacy form of `authorization: {credentials_file: …}`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bearer_token_file: String,
    /// Follow 3xx redirects (up to 10); else a redirect fails the scrape.
    pub follow_redirects: bool,
    /// Offer HTTP/2 to `https` targets (ALPN); plain `http` is always HTTP/1.1.
    pub enable_http2: bool,
    /// An HTTP(S) proxy for every request of the job; no proxy when unset (the environment's
    /// `HTTP_PROXY` is not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<ProxyUrl>,
}

impl Default for ScrapeConfig {
    fn default() -> ScrapeConfig {
        ScrapeConfig {
            job_name: String::new(),
            scrape_interval: None,
            scrape_timeout: None,
            metrics_path: "/metrics".to_string(),
            scheme: "http".to_string(),
            params: BTreeMap::new(),
            honor_labels: false,
            honor_timestamps: true,
            enable_compression: true,
            static_configs: Vec::new(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            body_size_limit: ByteSize(0),
            tls_config: TlsConfig::default(),
            basic_auth: None,
            authorization: None,
            bearer_token: Secret::default(),
            bearer_token_file: String::new(),
            follow_redirects: true,
            enable_http2: true,
            proxy_url: None,
        }
    }
}

/// Fixed targets sharing labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    /// `host:port` addresses.
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl ScrapeConfig {
    /// The interval in effect.
    pub fn interval(&self, global: &GlobalConfig) -> Duration {
        self.scrape_interval.unwrap_or(global.scrape_interval)
    }

    /// The timeout in effect: the global one is capped at the job's interval, as Prometheus
    /// does.
    pub fn timeout(&self, global: &GlobalConfig) -> Duration {
        self.scrape_timeout
            .unwrap_or_else(|| global.scrape_timeout.min(self.interval(global)))
    }
}

impl ScrapeSection {
    /// Checks the section; messages start with the dotted key below `prefix` (e.g. `tsdb`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let g = &self.global;
        if g.scrape_interval.is_zero() {
            return Err(format!("{prefix}.global.scrape_interval: must be positive"));
        }
        if g.scrape_timeout.is_zero() {
            return Err(format!("{prefix}.global.scrape_timeout: must be positive"));
        }
        if g.scrape_timeout > g.scrape_interval {
            return Err(format!(
                "{prefix}.global.scrape_timeout: global scrape timeout greater than scrape interval"
            ));
        }
        if self.tenant.is_empty() {
            return Err(format!("{prefix}.tenant: must not be empty"));
        }
        let mut jobs = HashSet::new();
        for (i, c) in self.scrape_configs.iter().enumerate() {
            let key = format!("{prefix}.scrape_configs[{i}]");
            c.validate(&key, g)?;
            if !jobs.insert(c.job_name.as_str()) {
                return Err(format!(
                    "{key}.job_name: found multiple scrape configs with job name {:?}",
                    c.job_name
                ));
            }
        }
        Ok(())
    }
}

impl ScrapeConfig {
    fn validate(&self, key: &str, global: &GlobalConfig) -> Result<(), String> {
        if self.job_name.is_empty() {
            return Err(format!("{key}.job_name: job_name is empty"));
        }
        let interval = self.interval(global);
        let timeout = self.timeout(global);
        if interval.is_zero() {
            return Err(format!("{key}.scrape_interval: must be positive"));
        }
        if timeout.is_zero() {
            return Err(format!("{key}.scrape_timeout: must be positive"));
        }
        if timeout > interval {
            return Err(format!(
                "{key}.scrape_timeout: scrape timeout greater than scrape interval for scrape config with job name {:?}",
                self.job_name
            ));
        }
        if !self.metrics_path.starts_with('/') {
            return Err(format!(
                "{key}.metrics_path: {:?} must start with '/'",
                self.metrics_path
            ));
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            return Err(format!(
                "{key}.scheme: {:?} is not a valid scheme (http, https)",
                self.scheme
            ));
        }
        self.validate_http(key)?;
        for (j, sc) in self.static_configs.iter().enumerate() {
            for (k, t) in sc.targets.iter().enumerate() {
                check_target_address(t)
                    .map_err(|e| format!("{key}.static_configs[{j}].targets[{k}]: {e}"))?;
            }
            for name in sc.labels.keys() {
                if !is_valid_label_name(name) {
                    return Err(format!(
                        "{key}.static_configs[{j}].labels: {name:?} is not a valid label name"
                    ));
                }
            }
        }
        validate_all(&self.relabel_configs, &format!("{key}.relabel_configs"))?;
        validate_all(
            &self.metric_relabel_configs,
            &format!("{key}.metric_relabel_configs"),
        )?;
        if usize::try_from(self.body_size_limit.as_u64()).is_err() {
            return Err(format!(
                "{key}.body_size_limit: too large for this platform"
            ));
        }
        Ok(())
    }
}

/// Prometheus's `CheckTargetAddress`: an address is `host:port`, never a URL.
pub fn check_target_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("target address is empty".to_string());
    }
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    Ok(())
}

/// Prometheus's duration notation (`model.Duration`) in configuration files: parsed by
/// [`crate::duration`], formatted as Prometheus prints it, and serde helpers.
pub mod prom_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::duration::{DurationError, UNITS, parse_ms};

    /// Parses `0`, `15s`, `1m30s`, `1h`, `500ms`, `2d`…; units must appear in decreasing order.
    pub fn parse(s: &str) -> Result<Duration, String> {
        match parse_ms(s) {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(DurationError::Overflow) => Err(format!("duration out of range: {s:?}")),
            Err(_) => Err(format!("not a valid duration string: {s:?}")),
        }
    }

    /// Formats as Prometheus does (`1m`, `1h30m`, `90d`, `0s`).
    pub fn format(d: Duration) -> String {
        let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return "0s".to_string();
        }
        let mut out = String::new();
        for (i, (name, mult)) in UNITS.iter().enumerate() {
            // Years and weeks only when exact: 90d reads better than 12w6d.
            if i < 2 && ms % mult != 0 {
                continue;
            }
            let v = ms / mult;
            if v > 0 {
                out.push_str(&format!("{v}{name}"));
                ms -= v * mult;
            }
        }
        out
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    /// For `Option<Duration>` fields.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&super::format(*d)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| super::parse(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> ScrapeSection {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn durations_as_prometheus_writes_them() {
        for (s, ms) in [
            ("0", 0),
            ("15s", 15_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
        ] {
            assert_eq!(
                prom_duration::parse(s),
                Ok(Duration::from_millis(ms)),
                "{s}"
            );
        }
        for bad in ["", "1", "s", "1m1h", "1.5s", "1 s", "-1s"] {
            assert!(prom_duration::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(prom_duration::format(Duration::from_secs(60)), "1m");
        assert_eq!(prom_duration::format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(
            prom_duration::format(Duration::from_secs(90 * 86400)),
            "90d"
        );
        assert_eq!(prom_duration::format(Duration::from_secs(14 * 86400)), "2w");
        assert_eq!(
            prom_duration::format(Duration::from_millis(1500)),
            "1s500ms"
        );
        assert_eq!(prom_duration::format(Duration::ZERO), "0s");
    }

    #[test]
    fn defaults_and_inheritance() {
        let s = section(
            "global: {scrape_interval: 15s}\nscrape_configs:\n- job_name: a\n  static_configs: [{targets: ['h:1']}]\n- job_name: b\n  scrape_interval: 5s",
        );
        s.validate("tsdb").unwrap();
        let (a, b) = (&s.scrape_configs[0], &s.scrape_configs[1]);
        assert_eq!(a.interval(&s.global), Duration::from_secs(15));
        assert_eq!(a.timeout(&s.global), Duration::from_secs(10));
        assert_eq!(a.metrics_path, "/metrics");
        assert!(a.honor_timestamps && !a.honor_labels);
        // the global timeout is capped at the job's interval
        assert_eq!(b.timeout(&s.global), Duration::from_secs(5));
        assert_eq!(s.tenant, crate::DEFAULT_TENANT);
    }

    #[test]
    fn validation_names_the_key() {
        let err = |yaml: &str| section(yaml).validate("tsdb").unwrap_err();
        assert_eq!(
            err(
                "scrape_configs: [{job_name: a}, {job_name: b}, {job_name: c, scrape_interval: 5s, scrape_timeout: 6s}]"
            ),
            "tsdb.scrape_configs[2].scrape_timeout: scrape timeout greater than scrape interval for scrape config with job name \"c\""
        );
        assert_eq!(
            err("scrape_configs: [{job_name: a}, {job_name: a}]"),
            "tsdb.scrape_configs[1].job_name: found multiple scrape configs with job name \"a\""
        );
        assert_eq!(
            err("scrape_configs: [{job_name: a, static_configs: [{targets: ['http://h:1']}]}]"),
            "tsdb.scrape_configs[0].static_configs[0].targets[0]: \"http://h:1\" is not a valid hostname"
        );
        assert_eq!(
            err(
                "scrape_configs: [{job_name: a, metric_relabel_configs: [{action: hashmod, target_label: x}]}]"
            ),
            "tsdb.scrape_configs[0].metric_relabel_configs[0]: relabel configuration for hashmod requires non-zero modulus"
        );
        assert_eq!(
            err("global: {scrape_interval: 5s}"),
            "tsdb.global.scrape_timeout: global scrape timeout greater than scrape interval"
        );
        assert!(
            err("scrape_configs: [{job_name: ''}]").starts_with("tsdb.scrape_configs[0].job_name")
        );
        let e = serde_yaml_ng::from_str::<ScrapeSection>(
            "scrape_configs: [{job_name: a, scrape_intreval: 1s}]",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unknown field `scrape_intreval`"),
            "{e}"
        );
    }
}

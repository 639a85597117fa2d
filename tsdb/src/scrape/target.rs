//! Scrape targets: their labels from `static_configs` and target relabeling (Prometheus's
//! `PopulateLabels`), their URL, and the `/api/v1/targets` snapshot.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use super::config::{GlobalConfig, ScrapeConfig, check_target_address, prom_duration};
use crate::labels::Labels;
use crate::relabel::{LabelsBuilder, process_builder};

pub const ADDRESS_LABEL: &str = "__address__";
pub const SCHEME_LABEL: &str = "__scheme__";
pub const METRICS_PATH_LABEL: &str = "__metrics_path__";
pub const SCRAPE_INTERVAL_LABEL: &str = "__scrape_interval__";
pub const SCRAPE_TIMEOUT_LABEL: &str = "__scrape_timeout__";
pub const PARAM_LABEL_PREFIX: &str = "__param_";
pub const META_LABEL_PREFIX: &str = "__meta_";
pub const JOB_LABEL: &str = "job";
pub const INSTANCE_LABEL: &str = "instance";

/// A target to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The job (scrape pool).
    pub job: String,
    /// Labels before target relabeling (the "discovered" labels).
    pub discovered: Labels,
    /// Labels after target relabeling, internal `__*` labels included.
    pub labels: Labels,
    pub interval: Duration,
    pub timeout: Duration,
}

/// A target that relabeling dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct DroppedTarget {
    pub job: String,
    pub discovered: Labels,
}

impl Target {
    /// The labels attached to scraped series: those not starting with `__`.
    pub fn public_labels(&self) -> Labels {
        self.labels.without(|n| n.starts_with("__"))
    }

    /// `scheme://address/path?params`, with `__param_<name>` labels overriding `params`.
    pub fn url(&self, cfg: &ScrapeConfig) -> Result<reqwest::Url, String> {
        let scheme = self.labels.get(SCHEME_LABEL).unwrap_or("http");
        let address = self.labels.get(ADDRESS_LABEL).unwrap_or("");
        let path = self.labels.get(METRICS_PATH_LABEL).unwrap_or("/metrics");
        let mut url = reqwest::Url::parse(&format!("{scheme}://{address}{path}"))
            .map_err(|e| format!("invalid target URL: {e}"))?;
        let mut params: BTreeMap<String, Vec<String>> = cfg.params.clone();
        for l in self.labels.iter() {
            if let Some(name) = l.name.strip_prefix(PARAM_LABEL_PREFIX) {
                let values = params.entry(name.to_string()).or_default();
                match values.first_mut() {
                    Some(first) => *first = l.value.to_string(),
                    None => values.push(l.value.to_string()),
                }
            }
        }
        if !params.is_empty() {
            let mut q = url.query_pairs_mut();
            for (name, values) in &params {
                for v in values {
                    q.append_pair(name, v);
                }
            }
        }
        Ok(url)
    }

    /// The identity of the target across configuration changes: its job, public labels and
    /// URL. Internal labels (`__scrape_interval__`, …) are left out so that changing them
    /// restarts the target's loop rather than replacing the target (which would mark its
    /// series stale). Also seeds the target's offset within the interval.
    pub fn key(&self, url: &reqwest::Url) -> u64 {
        xxhash_rust::xxh3::xxh3_64(
            format!("{}\u{0}{}\u{0}{}", self.job, self.public_labels(), url).as_bytes(),
        )
    }
}

/// The targets of one job: each static target's labels through target relabeling.
pub fn targets_of(
    cfg: &ScrapeConfig,
    global: &GlobalConfig,
) -> (Vec<Target>, Vec<DroppedTarget>, Vec<String>) {
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    let mut errors = Vec::new();
    for sc in &cfg.static_configs {
        for address in &sc.targets {
            // Target labels win over the group's labels.
            let mut pairs: Vec<(&str, &str)> = sc
                .labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            pairs.push((ADDRESS_LABEL, address));
            let group = Labels::from_pairs(pairs);
            match populate(cfg, global, &group) {
                Ok(Some(t)) => active.push(t),
                Ok(None) => dropped.push(DroppedTarget {
                    job: cfg.job_name.clone(),
                    discovered: with_defaults(cfg, global, &group).labels(),
                }),
                Err(e) => errors.push(format!("job {:?}, target {address:?}: {e}", cfg.job_name)),
            }
        }
    }
    (active, dropped, errors)
}

fn with_defaults(cfg: &ScrapeConfig, global: &GlobalConfig, group: &Labels) -> LabelsBuilder {
    let mut b = LabelsBuilder::new(group);
    let defaults = [
        (JOB_LABEL, cfg.job_name.clone()),
        (
            SCRAPE_INTERVAL_LABEL,
            prom_duration::format(cfg.interval(global)),
        ),
        (
            SCRAPE_TIMEOUT_LABEL,
            prom_duration::format(cfg.timeout(global)),
        ),
        (METRICS_PATH_LABEL, cfg.metrics_path.clone()),
        (SCHEME_LABEL, cfg.scheme.clone()),
    ];
    for (name, value) in defaults {
        if b.get(name).is_empty() {
            b.set(name, &value);
        }
    }
    for (name, values) in &cfg.params {
        let label = format!("{PARAM_LABEL_PREFIX}{name}");
        if let Some(first) = values.first()
            && b.get(&label).is_empty()
        {
            b.set(&label, first);
        }
    }
    b
}

/// Prometheus's `PopulateLabels`: `Ok(None)` when relabeling drops the target.
pub fn populate(
    cfg: &ScrapeConfig,
    global: &GlobalConfig,
    group: &Labels,
) -> Result<Option<Target>, String> {
    let mut b = with_defaults(cfg, global, group);
    let discovered = b.labels();
    if !process_builder(&mut b, &cfg.relabel_configs) {
        return Ok(None);
    }
    let address = b.get(ADDRESS_LABEL).to_string();
    if address.is_empty() {
        return Err("no address".to_string());
    }
    check_target_address(&address)?;
    let interval = prom_duration::parse(b.get(SCRAPE_INTERVAL_LABEL))
        .map_err(|e| format!("error parsing scrape interval: {e}"))?;
    if interval.is_zero() {
        return Err("scrape interval cannot be 0".to_string());
    }
    let timeout = prom_duration::parse(b.get(SCRAPE_TIMEOUT_LABEL))
        .map_err(|e| format!("error parsing scrape timeout: {e}"))?;
    if timeout.is_zero() {
        return Err("scrape timeout cannot be 0".to_string());
    }
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            b.get(SCRAPE_TIMEOUT_LABEL),
            b.get(SCRAPE_INTERVAL_LABEL)
        ));
    }
    // Meta labels are gone after relabeling; other internal labels stay on the target.
    b.retain(|n| !n.starts_with(META_LABEL_PREFIX));
    if b.get(INSTANCE_LABEL).is_empty() {
        b.set(INSTANCE_LABEL, &address);
    }
    Ok(Some(Target {
        job: cfg.job_name.clone(),
        discovered,
        labels: b.labels(),
        interval,
        timeout,
    }))
}

/// A target's health as `/api/v1/targets` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Up,
    Down,
}

/// One active target in `/api/v1/targets` (Prometheus's field names).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveTarget {
    #[serde(serialize_with = "ser_labels")]
    pub discovered_labels: Labels,
    #[serde(serialize_with = "ser_labels")]
    pub labels: Labels,
    pub scrape_pool: String,
    pub scrape_url: String,
    pub global_url: String,
    pub last_error: String,
    /// `0001-01-01T00:00:00Z` before the first scrape, as Prometheus renders it.
    #[serde(serialize_with = "ser_time")]
    pub last_scrape: Option<SystemTime>,
    /// Seconds.
    pub last_scrape_duration: f64,
    pub health: Health,
    pub scrape_interval: String,
    pub scrape_timeout: String,
}

/// One dropped target in `/api/v1/targets`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DroppedTargetStatus {
    #[serde(serialize_with = "ser_labels")]
    pub discovered_labels: Labels,
    pub scrape_pool: String,
}

/// The data of `/api/v1/targets`, sorted by pool and URL.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    pub active_targets: Vec<ActiveTarget>,
    pub dropped_targets: Vec<DroppedTargetStatus>,
}

impl Targets {
    /// The targets of several scrapers as one list, as Prometheus lists all its pools: active
    /// targets sorted by pool, URL and labels; dropped ones in the scrapers' order.
    pub fn merge(all: impl IntoIterator<Item = Targets>) -> Targets {
        let mut out = Targets::default();
        for t in all {
            out.active_targets.extend(t.active_targets);
            out.dropped_targets.extend(t.dropped_targets);
        }
        out.active_targets.sort_by(|a, b| {
            (&a.scrape_pool, &a.scrape_url, &a.labels).cmp(&(
                &b.scrape_pool,
                &b.scrape_url,
                &b.labels,
            ))
        });
        out
    }
}

fn ser_labels<S: Serializer>(l: &Labels, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(l.iter().map(|l| (&*l.name, &*l.value)))
}

fn ser_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => {
            let dt: chrono::DateTime<chrono::Utc> = (*t).into();
            s.serialize_str(&dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        None => s.serialize_str("0001-01-01T00:00:00Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> ScrapeConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn target_labels_and_url() {
        let cfg = job("job_name: node
metrics_path: /probe
params: {module: [http_2xx], extra: [a, b]}
static_configs:
- targets: ['h1:9100', 'h2:9100']
  labels: {env: prod, __meta_x: m}
relabel_configs:
- {source_labels: [__address__], regex: 'h2:.*', action: drop}
- {source_labels: [__meta_x], target_label: from_meta}
- {target_label: __param_module, replacement: tcp}");
        let (active, dropped, errors) = targets_of(&cfg, &GlobalConfig::default());
        assert!(errors.is_empty());
        assert_eq!(active.len(), 1);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].discovered.get(ADDRESS_LABEL), Some("h2:9100"));
        let t = &active[0];
        assert_eq!(
            t.public_labels(),
            Labels::from_pairs([
                ("env", "prod"),
                ("from_meta", "m"),
                ("instance", "h1:9100"),
                ("job", "node")
            ])
        );
        assert_eq!(t.labels.get("__meta_x"), None);
        assert_eq!(t.discovered.get("__meta_x"), Some("m"));
        assert_eq!(t.discovered.get(SCRAPE_INTERVAL_LABEL), Some("1m"));
        assert_eq!(
            t.url(&cfg).unwrap().as_str(),
            "http://h1:9100/probe?extra=a&extra=b&module=tcp"
        );
        assert_eq!(t.interval, Duration::from_secs(60));
        assert_eq!(t.timeout, Duration::from_secs(10));
    }

    #[test]
    fn relabeled_interval_and_errors() {
        let cfg = job("job_name: j
static_configs: [{targets: ['a:1']}]
relabel_configs:
- {target_label: __scrape_interval__, replacement: 5s}
- {target_label: __scrape_timeout__, replacement: 2s}
- {target_label: instance, replacement: mine}");
        let (active, _, _) = targets_of(&cfg, &GlobalConfig::default());
        assert_eq!(active[0].interval, Duration::from_secs(5));
        assert_eq!(active[0].timeout, Duration::from_secs(2));
        assert_eq!(active[0].labels.get("instance"), Some("mine"));

        let cfg = job("job_name: j
static_configs: [{targets: ['a:1']}]
relabel_configs: [{target_label: __scrape_interval__, replacement: 5s}]");
        let (active, _, errors) = targets_of(&cfg, &GlobalConfig::default());
        assert!(active.is_empty());
        assert!(
            errors[0].contains("scrape timeout cannot be greater than scrape interval"),
            "{errors:?}"
        );

        let cfg = job("job_name: j
static_configs: [{targets: ['a:1']}]
relabel_configs: [{target_label: __address__, replacement: 'x/y'}]");
        let (_, _, errors) = targets_of(&cfg, &GlobalConfig::default());
        assert!(errors[0].contains("is not a valid hostname"), "{errors:?}");
    }

    #[test]
    fn snapshot_json_uses_prometheus_names() {
        let t = ActiveTarget {
            discovered_labels: Labels::from_pairs([("__address__", "a:1")]),
            labels: Labels::from_pairs([("job", "j")]),
            scrape_pool: "j".into(),
            scrape_url: "http://a:1/metrics".into(),
            global_url: "http://a:1/metrics".into(),
            last_error: String::new(),
            last_scrape: None,
            last_scrape_duration: 0.5,
            health: Health::Unknown,
            scrape_interval: "1m".into(),
            scrape_timeout: "10s".into(),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["discoveredLabels"]["__address__"], "a:1");
        assert_eq!(v["scrapePool"], "j");
        assert_eq!(v["lastScrape"], "0001-01-01T00:00:00Z");
        assert_eq!(v["lastScrapeDuration"], 0.5);
        assert_eq!(v["health"], "unknown");
    }

    #[test]
    fn merged_pools_sort_by_pool_and_url() {
        let t = |pool: &str, url: &str| ActiveTarget {
            discovered_labels: Labels::empty(),
            labels: Labels::empty(),
            scrape_pool: pool.into(),
            scrape_url: url.into(),
            global_url: url.into(),
            last_error: String::new(),
            last_scrape: None,
            last_scrape_duration: 0.0,
            health: Health::Unknown,
            scrape_interval: "1m".into(),
            scrape_timeout: "10s".into(),
        };
        let dropped = |pool: &str| DroppedTargetStatus {
            discovered_labels: Labels::empty(),
            scrape_pool: pool.into(),
        };
        let server = Targets {
            active_targets: vec![t("b", "http://x/"), t("z", "http://x/")],
            dropped_targets: vec![dropped("b")],
        };
        let collector = Targets {
            active_targets: vec![t("a", "http://y/"), t("b", "http://a/")],
            dropped_targets: vec![dropped("a")],
        };
        let m = Targets::merge([server, collector]);
        let got: Vec<(&str, &str)> = m
            .active_targets
            .iter()
            .map(|a| (a.scrape_pool.as_str(), a.scrape_url.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "http://y/"),
                ("b", "http://a/"),
                ("b", "http://x/"),
                ("z", "http://x/")
            ]
        );
        assert_eq!(m.dropped_targets.len(), 2);
    }
}

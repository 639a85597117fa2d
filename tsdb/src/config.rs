//! `tsdb:` configuration: retention, the out-of-order window, the WAL, blocks and per-tenant
//! limits.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::labels::METRIC_NAME;
use crate::storage::{MatchOp, Matcher};

/// The store's configuration (the `tsdb:` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TsdbConfig {
    pub retention: RetentionConfig,
    /// How far behind a series' newest sample a late sample is still accepted.
    #[serde(with = "humantime_serde")]
    pub out_of_order_window: Duration,
    pub wal: WalConfig,
    /// Immutable on-disk blocks cut from the head and their compaction.
    pub blocks: BlocksConfig,
    pub limits: Limits,
    /// Exemplar storage (Prometheus's `storage.exemplars`).
    pub exemplars: ExemplarsConfig,
    /// The Prometheus-compatible HTTP API: query limits, admin switch, ingest body size.
    pub api: crate::api::ApiConfig,
    /// Prometheus-style scrape jobs (`global`, `scrape_configs`) written into a tenant.
    pub scrape: crate::scrape::ScrapeSection,
}

impl Default for TsdbConfig {
    fn default() -> Self {
        TsdbConfig {
            retention: RetentionConfig::default(),
            out_of_order_window: Duration::from_secs(10 * 60),
            wal: WalConfig::default(),
            blocks: BlocksConfig::default(),
            limits: Limits::default(),
            exemplars: ExemplarsConfig::default(),
            api: crate::api::ApiConfig::default(),
            scrape: crate::scrape::ScrapeSection::default(),
        }
    }
}

/// `tsdb.retention`: how long samples are kept (Prometheus's `--storage.tsdb.retention.time`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Chunks whose newest sample is older than this (behind the tenant's newest sample) are
    /// dropped, and older samples are rejected as too old. Prometheus's default, 15 days.
    #[serde(with = "humantime_serde")]
    pub time: Duration,
    /// The most bytes all tenants may use (compressed chunks, WAL and checkpoints); past it the
    /// oldest data of all tenants is dropped at the next checkpoint round. 0: no limit (as
    /// Prometheus's `--storage.tsdb.retention.size`).
    pub size: ByteSize,
    /// Per-metric retention: series matching a rule's selector keep samples for its time
    /// instead of `time` (the first matching rule wins). Longer or shorter than `time`.
    pub rules: Vec<RetentionRule>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            time: Duration::from_secs(15 * 24 * 3600),
            size: ByteSize::b(0),
            rules: Vec::new(),
        }
    }
}

/// One `tsdb.retention.rules` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// A series selector: `{__name__=~"debug_.*"}`, `slo_requests_total{env="prod"}`.
    #[serde(rename = "match")]
    pub selector: String,
    #[serde(with = "humantime_serde")]
    pub time: Duration,
}

/// The matchers of a series selector (`name{label op "value", …}`).
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, String> {
    let expr = crate::promql::parse_expr(s)?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a series selector"));
    };
    if !vs.matchers.or_matchers.is_empty() || vs.offset.is_some() || vs.at.is_some() {
        return Err(format!("{s:?}: only plain matchers are allowed"));
    }
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(
            Matcher::new(MatchOp::Equal, METRIC_NAME, name.as_str()).map_err(|e| e.to_string())?,
        );
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            promql_parser::label::MatchOp::Equal => MatchOp::Equal,
            promql_parser::label::MatchOp::NotEqual => MatchOp::NotEqual,
            promql_parser::label::MatchOp::Re(_) => MatchOp::Regex,
            promql_parser::label::MatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(op, m.name.as_str(), m.value.as_str()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// `tsdb.wal`: the write-ahead log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// A segment file is closed and a new one started past this size (Prometheus: 128 MiB).
    pub segment_size: ByteSize,
    /// How often the head is checkpointed and older segments removed (also on clean shutdown).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_size: ByteSize::mib(128),
            checkpoint_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// `tsdb.exemplars`: exemplars kept per tenant in a circular buffer (the oldest is overwritten
/// when full), durable in `<tenant>/exemplars.log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExemplarsConfig {
    /// Exemplars kept per tenant (Prometheus's `storage.exemplars.max_exemplars`, default
    /// 100000, about 100 bytes each); 0 disables exemplar storage.
    pub max_exemplars: usize,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig {
            max_exemplars: crate::exemplar::DEFAULT_MAX_EXEMPLARS,
        }
    }
}

/// `tsdb.blocks`: the head is cut into immutable blocks of `range` (Prometheus's
/// `--storage.tsdb.min-block-duration`), compacted level by level (3 × range, 9 × range, …)
/// up to `max_range`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlocksConfig {
    /// The time range of a block cut from the head; the head is cut once it spans 1.5 × this.
    /// Blocks are aligned to multiples of it (since the Unix epoch).
    #[serde(with = "humantime_serde")]
    pub range: Duration,
    /// The longest block compaction makes (Prometheus's `--storage.tsdb.max-block-duration`).
    /// 0: 10 % of `tsdb.retention.time` (at most 31 days), as Prometheus.
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
    /// Downsampling of old blocks (VictoriaMetrics's `-downsampling.period`): a block whose
    /// samples are all older than `age` (behind the newest sample) is rewritten at
    /// `resolution`, replacing its raw samples. Off by default (it discards data).
    pub downsampling: Vec<Downsampling>,
}

impl Default for BlocksConfig {
    fn default() -> Self {
        BlocksConfig {
            range: Duration::from_secs(2 * 3600),
            max_range: Duration::ZERO,
            downsampling: Vec::new(),
        }
    }
}

/// One `tsdb.blocks.downsampling` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Downsampling {
    #[serde(with = "humantime_serde")]
    pub age: Duration,
    #[serde(with = "humantime_serde")]
    pub resolution: Duration,
}

/// `tsdb.limits`: per-tenant limits (Mimir's names and label defaults). 0 disables a series
/// limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Active series of one tenant.
    pub max_series_per_tenant: usize,
    /// Active series of one metric name in one tenant (0: no limit, as Mimir's default).
    pub max_series_per_metric: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_labels_per_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Above Mimir's 150 000: a single tenant of a cluster store holds every container's
            // series; the issue sizes for 1 M active series.
            max_series_per_tenant: 2_000_000,
            max_series_per_metric: 0,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_labels_per_series: 30,
        }
    }
}

impl TsdbConfig {
    /// Checks what types cannot. Errors start with the dotted key, then `: `.
    pub fn validate(&self) -> Result<(), String> {
        if self.retention.time < Duration::from_secs(60) {
            return Err(format!(
                "tsdb.retention.time: {} is shorter than 1m",
                humantime::format_duration(self.retention.time)
            ));
        }
        for (i, r) in self.retention.rules.iter().enumerate() {
            if let Err(e) = parse_selector(&r.selector) {
                return Err(format!("tsdb.retention.rules[{i}].match: {e}"));
            }
            if r.time < Duration::from_secs(60) {
                return Err(format!("tsdb.retention.rules[{i}].time: shorter than 1m"));
            }
        }
        if self.out_of_order_window > self.retention.time {
            return Err("tsdb.out_of_order_window: longer than tsdb.retention.time".to_owned());
        }
        if self.wal.segment_size < ByteSize::kib(64) {
            return Err(format!(
                "tsdb.wal.segment_size: {} is smaller than 64 KiB",
                self.wal.segment_size
            ));
        }
        if self.wal.checkpoint_interval < Duration::from_secs(1) {
            return Err("tsdb.wal.checkpoint_interval: shorter than 1s".to_owned());
        }
        if self.blocks.range < Duration::from_secs(60) {
            return Err(format!(
                "tsdb.blocks.range: {} is shorter than 1m",
                humantime::format_duration(self.blocks.range)
            ));
        }
        if self.out_of_order_window > self.blocks.range / 2 {
            // The head keeps at least half a block range behind its newest sample after a cut:
            // a late sample inside the window never falls into a block.
            return Err(
                "tsdb.out_of_order_window: longer than half of tsdb.blocks.range".to_owned(),
            );
        }
        if !self.blocks.max_range.is_zero() && self.blocks.max_range < self.blocks.range {
            return Err("tsdb.blocks.max_range: shorter than tsdb.blocks.range".to_owned());
        }
        let mut last = (Duration::ZERO, Duration::ZERO);
        for (i, d) in self.blocks.downsampling.iter().enumerate() {
            let key = format!("tsdb.blocks.downsampling[{i}]");
            if d.resolution < Duration::from_secs(1) {
                return Err(format!("{key}.resolution: shorter than 1s"));
            }
            if d.age < d.resolution {
                return Err(format!("{key}.age: shorter than its resolution"));
            }
            if d.age <= last.0 || d.resolution <= last.1 {
                return Err(format!(
                    "{key}: ages and resolutions must grow from one entry to the next"
                ));
            }
            last = (d.age, d.resolution);
        }
        let l = &self.limits;
        for (key, v) in [
            ("max_label_name_length", l.max_label_name_length),
            ("max_label_value_length", l.max_label_value_length),
            ("max_labels_per_series", l.max_labels_per_series),
        ] {
            if v == 0 {
                return Err(format!("tsdb.limits.{key}: must be at least 1"));
            }
        }
        if self.exemplars.max_exemplars > u32::MAX as usize - 1 {
            return Err(format!(
                "tsdb.exemplars.max_exemplars: {} is more than {}",
                self.exemplars.max_exemplars,
                u32::MAX - 1
            ));
        }
        self.api.validate("tsdb.api")?;
        self.scrape.validate("tsdb.scrape")
    }

    pub(crate) fn ooo_window_ms(&self) -> i64 {
        i64::try_from(self.out_of_order_window.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn retention_ms(&self) -> i64 {
        ms(self.retention.time)
    }

    /// The block range in milliseconds (at least 1).
    pub(crate) fn block_range_ms(&self) -> i64 {
        ms(self.blocks.range).max(1)
    }

    /// The block ranges of the compaction levels: range, 3 × range, 9 × range, … up to the
    /// longest block (`max_range`, or 10 % of the retention, at most 31 days).
    pub(crate) fn block_ranges(&self) -> Vec<i64> {
        let base = self.block_range_ms();
        let max = if self.blocks.max_range.is_zero() {
            (self.retention_ms() / 10).min(31 * 86_400_000)
        } else {
            ms(self.blocks.max_range)
        };
        let mut out = vec![base];
        let mut r = base;
        while let Some(next) = r.checked_mul(3)
            && next <= max
        {
            out.push(next);
            r = next;
        }
        out
    }

    /// Downsampling as (age, resolution) in milliseconds, by growing age.
    pub(crate) fn downsampling_ms(&self) -> Vec<(i64, i64)> {
        self.blocks
            .downsampling
            .iter()
            .map(|d| (ms(d.age), ms(d.resolution).max(1)))
            .collect()
    }

    /// The valid retention rules as matchers and milliseconds.
    pub(crate) fn retention_rules(&self) -> Vec<(Vec<Matcher>, i64)> {
        self.retention
            .rules
            .iter()
            .filter_map(|r| match parse_selector(&r.selector) {
                Ok(m) => Some((m, ms(r.time))),
                Err(e) => {
                    tracing::error!(selector = %r.selector, error = %e, "tsdb: ignoring a retention rule");
                    None
                }
            })
            .collect()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_names_bad_ones() {
        let c: TsdbConfig = serde_yaml_ng::from_str(
            "retention: {time: 30d}\nout_of_order_window: 5m\nlimits: {max_series_per_metric: 10}\n",
        )
        .unwrap();
        assert_eq!(c.retention.time, Duration::from_secs(30 * 86400));
        assert_eq!(c.out_of_order_window, Duration::from_secs(300));
        assert_eq!(c.limits.max_series_per_metric, 10);
        assert_eq!(c.limits.max_labels_per_series, 30);
        c.validate().unwrap();
        assert!(serde_yaml_ng::from_str::<TsdbConfig>("retention: {bytes: 1}").is_err());
        let c: TsdbConfig = serde_yaml_ng::from_str("retention: {size: 10GiB}").unwrap();
        assert_eq!(c.retention.size, ByteSize::gib(10));
        let bad = TsdbConfig {
            out_of_order_window: Duration::from_secs(40 * 86400),
            ..TsdbConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("tsdb.out_of_order_window: ")
        );
        TsdbConfig::default().validate().unwrap();
        let c: TsdbConfig = serde_yaml_ng::from_str("exemplars: {max_exemplars: 0}").unwrap();
        assert_eq!(c.exemplars.max_exemplars, 0);
        c.validate().unwrap();
        assert_eq!(
            TsdbConfig::default().exemplars.max_exemplars,
            crate::exemplar::DEFAULT_MAX_EXEMPLARS
        );
        assert!(serde_yaml_ng::from_str::<TsdbConfig>("exemplars: {max: 1}").is_err());
        let mut big = TsdbConfig::default();
        big.exemplars.max_exemplars = usize::MAX;
        assert!(
            big.validate()
                .unwrap_err()
                .starts_with("tsdb.exemplars.max_exemplars: ")
        );
        let c: TsdbConfig = serde_yaml_ng::from_str(
            "retention:\n  rules:\n  - {match: 'debug_total{env=~\"dev|test\"}', time: 1d}\n",
        )
        .unwrap();
        c.validate().unwrap();
        let rules = c.retention_rules();
        assert_eq!(rules[0].0.len(), 2);
        assert_eq!(rules[0].1, 86_400_000);
        let mut bad = c.clone();
        bad.retention.rules[0].selector = "rate(x[5m])".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("tsdb.retention.rules[0].match: ")
        );
    }

    #[test]
    fn block_ranges_grow_by_three_up_to_a_tenth_of_retention() {
        let c = TsdbConfig::default();
        // 15 d retention: at most 1.5 d, so 2 h, 6 h, 18 h.
        assert_eq!(c.block_ranges(), [2, 6, 18].map(|h| h * 3_600_000).to_vec());
        let c: TsdbConfig = serde_yaml_ng::from_str("blocks: {range: 1h, max_range: 9h}").unwrap();
        c.validate().unwrap();
        assert_eq!(c.block_ranges(), [1, 3, 9].map(|h| h * 3_600_000).to_vec());
        let c: TsdbConfig = serde_yaml_ng::from_str(
            "blocks: {downsampling: [{age: 30d, resolution: 5m}, {age: 180d, resolution: 1h}]}",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.downsampling_ms()[1], (180 * 86_400_000, 3_600_000));
        let bad: TsdbConfig = serde_yaml_ng::from_str(
            "blocks: {downsampling: [{age: 30d, resolution: 1h}, {age: 180d, resolution: 5m}]}",
        )
        .unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("tsdb.blocks.downsampling[1]: ")
        );
        let bad: TsdbConfig =
            serde_yaml_ng::from_str("blocks: {range: 10m}\nout_of_order_window: 6m").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("tsdb.out_of_order_window: ")
        );
        let bad: TsdbConfig = serde_yaml_ng::from_str("blocks: {range: 10s}").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("tsdb.blocks.range: ")
        );
        let bad: TsdbConfig =
            serde_yaml_ng::from_str("blocks: {range: 2h, max_range: 1h}").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("tsdb.blocks.max_range: ")
        );
    }
}

//! The `access_log:` section: which router logs to tail, how to parse them, and the RED metrics.
//!
//! ```yaml
//! access_log:
//!   checkpoint_file: collector/access_log.checkpoint.json   # under the data dir
//!   buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
//!   sources:
//!     - name: ingress
//!       include: ["/var/log/nginx/access.log"]             # live files only
//!       labels: {job: ingress}
//!       service_field: service                              # e.g. set by an nginx `map`
//!       parsers:                                            # first match wins
//!         - nginx: '$remote_addr - [$time_local] $host "$request" $status $body_bytes_sent $request_time "$upstream_addr" "$upstream_response_time" $request_id "$http_traceparent" $service'
//!         - json
//!         - regex: '^(?P<remote_addr>\S+) (?P<method>[A-Z]+) (?P<uri>\S+) (?P<status>\d{3})'
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::format::LogFormat;
use super::parse::Parser;
use super::red::DEFAULT_BUCKETS;
use crate::tail::ReadFrom;

/// Settings of the access-log pipeline. No sources: the pipeline is off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConfig {
    pub sources: Vec<AccessLogSource>,
    /// The checkpoint file (file positions and RED counts); a relative path is under the data
    /// directory.
    pub checkpoint_file: PathBuf,
    /// Tenant the lines and samples are written for (empty: the default tenant).
    pub tenant: String,
    /// Upper bounds of the request duration histogram's buckets, in seconds.
    pub buckets: Vec<f64>,
    /// Whether RED series carry the `upstream` label (one series per upstream address: turn off
    /// when upstreams are many short-lived pods).
    pub upstream_label: bool,
    /// At most this many RED series; requests of further label sets are counted under
    /// `host`/`service`/`upstream` = `__overflow__`.
    pub max_series: usize,
    /// A RED series unchanged this long is dropped (and restarts at 0 if it comes back).
    #[serde(with = "humantime_serde")]
    pub series_ttl: Duration,
    /// Where files found at the first start, without a checkpoint, are read from.
    pub read_from: ReadFrom,
    /// How long a rotated file is kept open after it last grew (a writer may still append until
    /// it reopens its log).
    #[serde(with = "humantime_serde")]
    pub rotate_wait: Duration,
    /// Longer lines are cut to this many bytes.
    pub max_line_bytes: usize,
    /// Bytes read from one file per poll, at most; a backlog is read in consecutive polls.
    pub max_read_bytes: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            sources: Vec::new(),
            checkpoint_file: PathBuf::from("collector/access_log.checkpoint.json"),
            tenant: String::new(),
            buckets: DEFAULT_BUCKETS.to_vec(),
            upstream_label: true,
            max_series: 10_000,
            series_ttl: Duration::from_secs(3600),
            read_from: ReadFrom::Beginning,
            rotate_wait: Duration::from_secs(10),
            max_line_bytes: 256 * 1024,
            max_read_bytes: 4 << 20,
        }
    }
}

/// One set of log files with one format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogSource {
    /// Names the source in the checkpoint and in the collector's metrics.
    pub name: String,
    /// Globs of the files (only live files: a glob that also matches copytruncate's copies
    /// reads their lines twice).
    pub include: Vec<String>,
    /// Globs of files to skip.
    pub exclude: Vec<String>,
    /// Parsers tried in order; the first that matches a line wins. A line none matches is still
    /// shipped, without fields, and counted as malformed.
    pub parsers: Vec<ParserConfig>,
    /// Labels of the log streams and RED series (`job` defaults to `access-log`).
    pub labels: BTreeMap<String, String>,
    /// The field whose value is the `service` label (a variable set by an nginx `map`,
    /// `$proxy_host`…).
    pub service_field: String,
}

impl Default for AccessLogSource {
    fn default() -> Self {
        AccessLogSource {
            name: "nginx".to_owned(),
            include: Vec::new(),
            exclude: vec!["*.gz".to_owned()],
            parsers: vec![ParserConfig::Nginx("combined".to_owned())],
            labels: BTreeMap::new(),
            service_field: "service".to_owned(),
        }
    }
}

/// A line parser. In the file: `{nginx: '<log_format>'}`, `json`, `{regex: '<regex>'}` (single-key
/// maps, which every YAML parser reads the same, rather than YAML tags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ParserRepr", into = "ParserRepr")]
pub enum ParserConfig {
    /// An nginx `log_format` string (`$var` tokens), or `combined`.
    Nginx(String),
    /// One JSON object per line, keys named like nginx variables.
    Json,
    /// A regex whose named groups are named like nginx variables.
    Regex(String),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ParserRepr {
    Name(String),
    Map(BTreeMap<String, String>),
}

impl TryFrom<ParserRepr> for ParserConfig {
    type Error = String;

    fn try_from(r: ParserRepr) -> Result<Self, String> {
        match r {
            ParserRepr::Name(n) if n == "json" => Ok(ParserConfig::Json),
            ParserRepr::Map(m) if m.len() == 1 => match m.into_iter().next() {
                Some((k, v)) if k == "nginx" => Ok(ParserConfig::Nginx(v)),
                Some((k, v)) if k == "regex" => Ok(ParserConfig::Regex(v)),
                Some((k, _)) => Err(format!("unknown parser {k:?} (nginx, json, regex)")),
                None => Err("empty parser".to_owned()),
            },
            _ => Err("a parser is `json`, `{nginx: FORMAT}` or `{regex: REGEX}`".to_owned()),
        }
    }
}

impl From<ParserConfig> for ParserRepr {
    fn from(p: ParserConfig) -> Self {
        match p {
            ParserConfig::Json => ParserRepr::Name("json".to_owned()),
            ParserConfig::Nginx(f) => ParserRepr::Map([("nginx".to_owned(), f)].into()),
            ParserConfig::Regex(r) => ParserRepr::Map([("regex".to_owned(), r)].into()),
        }
    }
}

impl ParserConfig {
    /// The compiled parser; errors say what is wrong (without the key).
    pub fn compile(&self) -> Result<Parser, String> {
        match self {
            ParserConfig::Nginx(f) => LogFormat::compile(f).map(Parser::Nginx),
            ParserConfig::Json => Ok(Parser::Json),
            ParserConfig::Regex(r) => {
                let re = regex::Regex::new(r).map_err(|e| e.to_string())?;
                if re.capture_names().flatten().next().is_none() {
                    return Err("has no named group".to_owned());
                }
                Ok(Parser::Regex(re))
            }
        }
    }
}

impl AccessLogConfig {
    /// Checks what serde cannot; messages start with the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.checkpoint_file.as_os_str().is_empty() {
            return Err("access_log.checkpoint_file: must not be empty".to_owned());
        }
        if self.buckets.is_empty()
            || self.buckets.iter().any(|b| !b.is_finite())
            || self.buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(
                "access_log.buckets: must be finite and strictly increasing, at least one"
                    .to_owned(),
            );
        }
        if self.max_series == 0 {
            return Err("access_log.max_series: must be above 0".to_owned());
        }
        if self.series_ttl < Duration::from_secs(1) {
            return Err("access_log.series_ttl: must be at least 1s".to_owned());
        }
        if self.max_line_bytes < 64 {
            return Err("access_log.max_line_bytes: must be at least 64".to_owned());
        }
        if self.max_read_bytes < self.max_line_bytes.min(64 * 1024) {
            return Err(
                "access_log.max_read_bytes: must be at least 64KiB or max_line_bytes".to_owned(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("access_log.sources[{i}]");
            if s.name.is_empty() {
                return Err(format!("{key}.name: must not be empty"));
            }
            if !names.insert(&s.name) {
                return Err(format!("{key}.name: {:?} is used twice", s.name));
            }
            if s.include.is_empty() {
                return Err(format!("{key}.include: needs at least one glob"));
            }
            for (j, g) in s.include.iter().chain(&s.exclude).enumerate() {
                if let Err(e) = glob::Pattern::new(g) {
                    let which = if j < s.include.len() {
                        format!("include[{j}]")
                    } else {
                        format!("exclude[{}]", j - s.include.len())
                    };
                    return Err(format!("{key}.{which}: {e}"));
                }
            }
            for g in &s.include {
                if !std::path::Path::new(g).is_absolute() {
                    return Err(format!("{key}.include: {g:?} is not an absolute path"));
                }
            }
            if s.parsers.is_empty() {
                return Err(format!("{key}.parsers: needs at least one parser"));
            }
            for (j, p) in s.parsers.iter().enumerate() {
                p.compile()
                    .map_err(|e| format!("{key}.parsers[{j}]: {e}"))?;
            }
            for l in s.labels.keys() {
                if !crate::pipeline::valid_label_name(l) {
                    return Err(format!("{key}.labels: {l:?} is not a valid label name"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_an_empty_section() {
        let c = AccessLogConfig::default();
        assert!(c.validate().is_ok());
        let parsed: AccessLogConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, c);
    }

    /// The example in this module's documentation is a valid section.
    #[test]
    fn the_documented_example_parses_and_validates() {
        let doc = crate::testutil::documented_yaml(include_str!("config.rs"));
        let v: BTreeMap<String, AccessLogConfig> = serde_yaml_ng::from_str(&doc).unwrap();
        let c = &v["access_log"];
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(c.sources[0].parsers.len(), 3);
        assert_eq!(c.sources[0].parsers[1], ParserConfig::Json);
        assert_eq!(c.buckets, DEFAULT_BUCKETS.to_vec());
    }

    #[test]
    fn parses_sources_with_parser_chains() {
        let c: AccessLogConfig = serde_json::from_str(
            r#"{"sources":[{"name":"edge","include":["/var/log/nginx/*.log"],
                "parsers":[{"nginx":"$host \"$request\" $status"},"json",{"regex":"(?P<status>\\d+)"}],
                "labels":{"job":"edge"}}],"buckets":[0.1,1]}"#,
        )
        .unwrap();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(c.sources[0].parsers.len(), 3);
        assert_eq!(c.sources[0].parsers[1], ParserConfig::Json);
        assert!(serde_json::from_str::<AccessLogConfig>(r#"{"source":[]}"#).is_err());
        assert!(serde_json::from_str::<ParserConfig>(r#"{"grok":"x"}"#).is_err());
        assert!(serde_json::from_str::<ParserConfig>(r#""xml""#).is_err());
        let round: ParserConfig = serde_json::from_str(
            &serde_json::to_string(&ParserConfig::Nginx("$a".into())).unwrap(),
        )
        .unwrap();
        assert_eq!(round, ParserConfig::Nginx("$a".into()));
    }

    #[test]
    fn validation_names_the_key() {
        let src = |p: ParserConfig| AccessLogConfig {
            sources: vec![AccessLogSource {
                include: vec!["/x/*.log".into()],
                parsers: vec![p],
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = src(ParserConfig::Nginx("$a$b".into()))
            .validate()
            .unwrap_err();
        assert!(e.starts_with("access_log.sources[0].parsers[0]:"), "{e}");
        let e = src(ParserConfig::Regex("(\\d+)".into()))
            .validate()
            .unwrap_err();
        assert!(e.contains("named group"), "{e}");
        let c = AccessLogConfig {
            buckets: vec![1.0, 0.5],
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("access_log.buckets:"));
        let mut c = src(ParserConfig::Json);
        c.sources[0].include = vec!["relative/*.log".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("access_log.sources[0].include:")
        );
    }
}

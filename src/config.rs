//! The configuration file: typed sections, defaults in their `Default` impls, environment
//! overrides, and validation that names the offending key.
//!
//! Loading is layered: the YAML file (or nothing), then `SEXTANT__SECTION__KEY=value`
//! environment variables, then command-line flags (applied by the caller).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

/// The complete, commented example printed by `sextant config example`.
pub(crate) const EXAMPLE: &str = include_str!("../config/sextant.example.yaml");

/// Prefix of environment variables that override config keys, `__` separating levels.
pub(crate) const ENV_PREFIX: &str = "SEXTANT__";

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) log: LogConfig,
    pub(crate) bus: bus::BusConfig,
    pub(crate) tsdb: tsdb::TsdbConfig,
    pub(crate) collector: collector::CollectorConfig,
}

/// `server:`: the HTTP port and the data directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// `host:port` of the one HTTP port for every API.
    pub(crate) listen: String,
    /// Where data lives.
    pub(crate) data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:9700".to_owned(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// `log:`: Sextant's own logs (on stderr).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// An `EnvFilter` directive: `info`, `info,bus=debug`…
    pub(crate) level: String,
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Why a configuration was refused. Each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {message}")]
    Syntax { path: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Loads `path` (or the defaults when `None`) with environment overrides from `env`.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
            ),
            None => ("defaults".to_owned(), String::new()),
        };
        Config::from_yaml(&origin, &text, env)
    }

    /// Parses YAML `text` (named `origin` in errors) with environment overrides.
    pub(crate) fn from_yaml(
        origin: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: Value = if text.trim().is_empty() {
            Value::Mapping(Mapping::new())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
                path: origin.to_owned(),
                message: e.to_string(),
            })?
        };
        if value.is_null() {
            value = Value::Mapping(Mapping::new());
        }
        let mut env_vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env_vars.sort();
        // Without overrides the original text is typed, so that errors carry its line numbers;
        // with them, the overridden tree is written back to YAML first (serde_yaml_ng reads
        // externally tagged enums such as `bus: {kafka: …}` from text, not from a `Value`).
        let (origin, typed_text) = if env_vars.is_empty() {
            (origin.to_owned(), text.to_owned())
        } else {
            for (var, raw) in &env_vars {
                apply_env(&mut value, var, raw)?;
            }
            let text = serde_yaml_ng::to_string(&value).map_err(|e| ConfigError::Syntax {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
            (format!("{origin} (with {ENV_PREFIX}* overrides)"), text)
        };
        let typed_text = if typed_text.trim().is_empty() {
            "{}".to_owned()
        } else {
            typed_text
        };
        let deserializer = serde_yaml_ng::Deserializer::from_str(&typed_text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let mut message = e.into_inner().to_string();
            // serde_yaml_ng starts some messages with the path again (`server: unknown field…`).
            if let Some((prefix, rest)) = message.split_once(": ")
                && !prefix.contains(' ')
                && key.starts_with(prefix)
            {
                message = rest.to_owned();
            }
            ConfigError::Invalid {
                origin: origin.clone(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                message,
            }
        })?;
        config.validate().map_err(|message| {
            let (key, message) = message
                .split_once(": ")
                .map(|(k, m)| (k.to_owned(), m.to_owned()))
                .unwrap_or(("(config)".to_owned(), message));
            ConfigError::Invalid {
                origin,
                key,
                message,
            }
        })?;
        Ok(config)
    }

    /// Checks what types cannot. Errors start with the dotted key, then `: `.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let listen = &self.server.listen;
        let port_ok = listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "server.listen: {listen:?} is not host:port (e.g. 127.0.0.1:9700)"
            ));
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err("server.data_dir: must not be empty".to_owned());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(format!("log.level: {:?}: {e}", self.log.level));
        }
        self.bus.validate()?;
        self.tsdb.validate()?;
        self.collector.validate()?;
        // One process lists both in /api/v1/targets: a pool name must say which job it is.
        if self.collector.enabled {
            for (i, c) in self.collector.scrape.scrape_configs.iter().enumerate() {
                if self
                    .tsdb
                    .scrape
                    .scrape_configs
                    .iter()
                    .any(|t| t.job_name == c.job_name)
                {
                    return Err(format!(
                        "collector.scrape.scrape_configs[{i}].job_name: job {:?} is also in tsdb.scrape; job names must be unique",
                        c.job_name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Sets the key named by `SEXTANT__A__B` in `value` to `raw`, read as a YAML scalar.
fn apply_env(value: &mut Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: format!("expected {ENV_PREFIX}SECTION__KEY"),
        });
    }
    let parsed: Value =
        serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let mut node = value;
    for (i, key) in path.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            return Err(ConfigError::Env {
                var: var.to_owned(),
                message: format!("{} is not a section", path[..i].join(".")),
            });
        };
        let key = Value::String(key.clone());
        if i + 1 == path.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn example_is_the_defaults_and_round_trips() {
        let example = Config::from_yaml("example", EXAMPLE, no_env()).unwrap();
        let defaults = Config {
            bus: bus::BusConfig {
                embedded: Some(bus::embedded::EmbeddedConfig::default()),
                kafka: None,
            },
            ..Config::default()
        };
        assert_eq!(example, defaults);
        let yaml = serde_yaml_ng::to_string(&example).unwrap();
        let again = Config::from_yaml("round trip", &yaml, no_env()).unwrap();
        assert_eq!(again, example);
    }

    #[test]
    fn the_commented_kafka_block_is_valid_too() {
        // Drop the embedded block and uncomment the Kafka block that follows it.
        let mut out = Vec::new();
        let mut section = "";
        for line in EXAMPLE.lines() {
            if line.starts_with("  embedded:") {
                section = "embedded";
            } else if line.starts_with("  # To use Kafka") {
                section = "kafka";
                continue;
            } else if !line.is_empty() && !line.starts_with(' ') {
                section = ""; // the next top-level section or comment
            }
            match section {
                "embedded" => {}
                "kafka" => out.push(
                    line.strip_prefix("  # ")
                        .map_or(line.to_owned(), |l| format!("  {l}")),
                ),
                _ => out.push(line.to_owned()),
            }
        }
        let text = out.join("\n");
        let config = Config::from_yaml("kafka example", &text, no_env()).unwrap();
        assert_eq!(
            config.bus.choice(),
            bus::BusChoice::Kafka(bus::kafka::KafkaConfig::default())
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_yaml("f.yaml", "server:\n  listne: x:1\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.yaml"), "{err}");
        assert!(err.contains("listne"), "{err}");
        let err = Config::from_yaml(
            "f.yaml",
            "bus:\n  embedded:\n    segment_bytes: lots\n",
            no_env(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bus.embedded.segment_bytes"), "{err}");
        let err = Config::from_yaml("f.yaml", "bus:\n  rabbit: {}\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rabbit"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let err = Config::from_yaml("f.yaml", "server:\n  listen: nowhere\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = Config::from_yaml("f.yaml", "log:\n  level: \"info,=[\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
        let err = Config::from_yaml("f.yaml", "bus:\n  kafka:\n    partitions: 0\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bus.kafka.partitions"), "{err}");
    }

    #[test]
    fn a_job_in_both_scrape_sections_is_refused() {
        let job = "scrape_configs: [{job_name: node, static_configs: [{targets: ['a:1']}]}]";
        let text = format!("tsdb:\n  scrape: {{{job}}}\ncollector:\n  scrape: {{{job}}}\n");
        let err = Config::from_yaml("f.yaml", &text, no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("collector.scrape.scrape_configs[0].job_name"),
            "{err}"
        );
        let disabled = format!("{text}  enabled: false\n");
        assert!(Config::from_yaml("f.yaml", &disabled, no_env()).is_ok());
    }

    #[test]
    fn environment_overrides_keys() {
        let env = vec![
            (
                "SEXTANT__SERVER__LISTEN".to_owned(),
                "0.0.0.0:1234".to_owned(),
            ),
            (
                "SEXTANT__BUS__EMBEDDED__RETENTION".to_owned(),
                "6h".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = Config::from_yaml("f.yaml", "log:\n  format: json\n", env).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:1234");
        assert_eq!(config.log.format, LogFormat::Json);
        let bus::BusChoice::Embedded(e) = config.bus.choice() else {
            panic!("embedded expected")
        };
        assert_eq!(e.retention, std::time::Duration::from_secs(6 * 3600));
        let err = Config::from_yaml(
            "f.yaml",
            "",
            vec![("SEXTANT__SERVER__LISTN".to_owned(), "x".to_owned())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listn") && err.contains("SEXTANT__"), "{err}");
    }
}

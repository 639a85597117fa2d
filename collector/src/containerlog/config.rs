//! The `container_logs:` section: which container log files to tail and how.
//!
//! ```yaml
//! container_logs:
//!   enabled: true
//!   paths: ["/var/log/pods/*/*/*.log"]      # kubelet's files; a path that does not exist yields nothing
//!   exclude: ["*.gz", "*.tmp"]
//!   format: auto                            # auto (per file), cri or docker
//!   labels: {job: container-logs}
//!   max_line_bytes: 262144                  # a longer joined line is cut (and counted)
//!   partial_timeout: 5s
//!   checkpoint_file: collector/container_logs.checkpoint.json
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::parse::Format;
use crate::tail::ReadFrom;

/// Settings of the container-log pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerLogConfig {
    /// Whether `sextant run` tails container logs (on by default).
    pub enabled: bool,
    /// Globs of the log files: the kubelet's `/var/log/pods/*/*/*.log` (which
    /// `/var/log/containers/*.log` links to), Docker's
    /// `/var/lib/docker/containers/*/*-json.log`. A file matched by two globs is read once.
    pub paths: Vec<String>,
    /// Globs of files to skip.
    pub exclude: Vec<String>,
    /// The files' format; `auto` decides per file from its first line.
    pub format: Format,
    /// Labels of every stream (`job` defaults to `container-logs`).
    pub labels: BTreeMap<String, String>,
    /// A line joined from partial lines, or a single line, longer than this is cut here.
    pub max_line_bytes: usize,
    /// How long a partial line waits for the rest before it is shipped as it is.
    #[serde(with = "humantime_serde")]
    pub partial_timeout: Duration,
    /// The checkpoint file (file positions and pending partial lines); a relative path is under
    /// the data directory.
    pub checkpoint_file: PathBuf,
    /// Tenant the lines are written for (empty: the default tenant).
    pub tenant: String,
    /// Where files found at the first start, without a checkpoint, are read from.
    pub read_from: ReadFrom,
    /// How long a rotated file is kept open after it last grew.
    #[serde(with = "humantime_serde")]
    pub rotate_wait: Duration,
    /// Bytes read from one file per poll, at most; a backlog is read in consecutive polls.
    pub max_read_bytes: usize,
}

impl Default for ContainerLogConfig {
    fn default() -> Self {
        ContainerLogConfig {
            enabled: true,
            paths: vec!["/var/log/pods/*/*/*.log".to_owned()],
            exclude: vec!["*.gz".to_owned(), "*.tmp".to_owned()],
            format: Format::Auto,
            labels: BTreeMap::new(),
            max_line_bytes: 256 * 1024,
            partial_timeout: Duration::from_secs(5),
            checkpoint_file: PathBuf::from("collector/container_logs.checkpoint.json"),
            tenant: String::new(),
            read_from: ReadFrom::Beginning,
            rotate_wait: Duration::from_secs(10),
            max_read_bytes: 4 << 20,
        }
    }
}

impl ContainerLogConfig {
    /// Checks what serde cannot; messages start with the offending key.
    pub fn validate(&self) -> Result<(), String> {
        for (i, g) in self.paths.iter().enumerate() {
            if let Err(e) = glob::Pattern::new(g) {
                return Err(format!("container_logs.paths[{i}]: {e}"));
            }
            if !std::path::Path::new(g).is_absolute() {
                return Err(format!(
                    "container_logs.paths[{i}]: {g:?} is not an absolute path"
                ));
            }
        }
        for (i, g) in self.exclude.iter().enumerate() {
            if let Err(e) = glob::Pattern::new(g) {
                return Err(format!("container_logs.exclude[{i}]: {e}"));
            }
        }
        if self.enabled && self.paths.is_empty() {
            return Err("container_logs.paths: needs at least one glob when enabled".to_owned());
        }
        if self.max_line_bytes < 1024 {
            return Err("container_logs.max_line_bytes: must be at least 1024".to_owned());
        }
        if self.partial_timeout.is_zero() {
            return Err("container_logs.partial_timeout: must be above 0".to_owned());
        }
        if self.checkpoint_file.as_os_str().is_empty() {
            return Err("container_logs.checkpoint_file: must not be empty".to_owned());
        }
        if self.max_read_bytes < 64 * 1024 {
            return Err("container_logs.max_read_bytes: must be at least 64KiB".to_owned());
        }
        for l in self.labels.keys() {
            if !crate::pipeline::valid_label_name(l) {
                return Err(format!(
                    "container_logs.labels: {l:?} is not a valid label name"
                ));
            }
        }
        Ok(())
    }

    /// The tailer's limit for one physical line: room for a whole joined line, and at least for
    /// a Docker entry of 16 KiB whose characters all needed JSON escapes (6 bytes each). A
    /// physical line cut there is still shipped, cut.
    pub(crate) fn physical_line_bytes(&self) -> usize {
        self.max_line_bytes.max(128 * 1024) + 4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_an_empty_section() {
        let c = ContainerLogConfig::default();
        assert!(c.validate().is_ok());
        let parsed: ContainerLogConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, c);
        assert!(c.enabled);
    }

    /// The example in this module's documentation is a valid section.
    #[test]
    fn the_documented_example_parses_and_validates() {
        let doc = crate::testutil::documented_yaml(include_str!("config.rs"));
        let v: BTreeMap<String, ContainerLogConfig> = serde_yaml_ng::from_str(&doc).unwrap();
        let c = &v["container_logs"];
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(c.format, Format::Auto);
        assert_eq!(c.labels["job"], "container-logs");
    }

    #[test]
    fn validation_names_the_key() {
        let bad = |f: fn(&mut ContainerLogConfig)| {
            let mut c = ContainerLogConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(
            bad(|c| c.paths = vec!["relative/*.log".into()])
                .starts_with("container_logs.paths[0]:")
        );
        assert!(bad(|c| c.paths = vec!["/a/[.log".into()]).starts_with("container_logs.paths[0]:"));
        assert!(bad(|c| c.paths.clear()).starts_with("container_logs.paths:"));
        assert!(bad(|c| c.max_line_bytes = 10).starts_with("container_logs.max_line_bytes:"));
        assert!(
            bad(|c| c.partial_timeout = Duration::ZERO)
                .starts_with("container_logs.partial_timeout:")
        );
        assert!(
            bad(|c| {
                c.labels.insert("bad-name".into(), "x".into());
            })
            .starts_with("container_logs.labels:")
        );
        assert!(serde_json::from_str::<ContainerLogConfig>(r#"{"format":"syslog"}"#).is_err());
        assert!(serde_json::from_str::<ContainerLogConfig>(r#"{"path":[]}"#).is_err());
        let c: ContainerLogConfig =
            serde_json::from_str(r#"{"format":"docker","partial_timeout":"1s"}"#).unwrap();
        assert_eq!(c.format, Format::Docker);
        assert_eq!(c.partial_timeout, Duration::from_secs(1));
    }
}

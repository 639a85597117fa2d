//! The API's configuration: query limits, the admin switch and ingest body limits.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Limits and switches of the HTTP API. Defaults are Prometheus's (`query.timeout` 2 m,
/// `query.max-samples` 50 M, `query.max-concurrency` 20, `query.lookback-delta` 5 m, admin APIs
/// off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Longest a query may run, queueing included; a request's `timeout` can only lower it.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Most samples one query may hold in memory.
    pub max_samples: usize,
    /// Queries evaluated at once; further queries wait for a slot (within their timeout).
    pub max_concurrency: usize,
    /// How far back an instant selector looks; a request's `lookback_delta` overrides it.
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Experimental PromQL functions and syntax (Prometheus's `promql-experimental-functions`,
    /// `promql-duration-expr` and `promql-extended-range-selectors`).
    pub experimental_functions: bool,
    /// `/api/v1/admin/*` (delete_series); off as in Prometheus.
    pub enable_admin_api: bool,
    /// Largest remote_write or import body, compressed and decompressed alike.
    pub max_write_body: ByteSize,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            query_timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            max_concurrency: 20,
            lookback_delta: Duration::from_secs(300),
            experimental_functions: false,
            enable_admin_api: false,
            max_write_body: ByteSize::mib(64),
        }
    }
}

impl ApiConfig {
    /// Checks the values; messages start with the dotted key below `prefix` (e.g. `tsdb.api`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if self.query_timeout.is_zero() {
            return Err(format!("{prefix}.query_timeout: must be positive"));
        }
        if self.max_samples == 0 {
            return Err(format!("{prefix}.max_samples: must be positive"));
        }
        if self.max_concurrency == 0 {
            return Err(format!("{prefix}.max_concurrency: must be positive"));
        }
        if self.lookback_delta.is_zero() {
            return Err(format!("{prefix}.lookback_delta: must be positive"));
        }
        if self.max_write_body.as_u64() < 1024 {
            return Err(format!("{prefix}.max_write_body: must be at least 1 KiB"));
        }
        if usize::try_from(self.max_write_body.as_u64()).is_err() {
            return Err(format!(
                "{prefix}.max_write_body: too large for this platform"
            ));
        }
        Ok(())
    }

    /// `max_write_body` in bytes.
    pub(crate) fn max_body(&self) -> usize {
        usize::try_from(self.max_write_body.as_u64()).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = ApiConfig::default();
        assert!(c.validate("tsdb.api").is_ok());
        let c: ApiConfig =
            serde_json::from_str(r#"{"query_timeout":"30s","enable_admin_api":true}"#).unwrap();
        assert_eq!(c.query_timeout, Duration::from_secs(30));
        assert!(c.enable_admin_api);
        assert_eq!(c.max_samples, 50_000_000);
        assert!(serde_json::from_str::<ApiConfig>(r#"{"nope":1}"#).is_err());
        let bad = ApiConfig {
            max_concurrency: 0,
            ..ApiConfig::default()
        };
        assert_eq!(
            bad.validate("tsdb.api").unwrap_err(),
            "tsdb.api.max_concurrency: must be positive"
        );
    }
}

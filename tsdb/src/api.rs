//! The Prometheus-compatible HTTP API: queries, metadata, status, admin, and the remote_write
//! and text-import ingest paths, over per-tenant stores.
//!
//! Every call takes its tenant from `X-Scope-OrgID` ([`DEFAULT_TENANT`] when absent), so one
//! tenant never sees another's series. Answers use Prometheus's envelope, error types and status
//! codes ([`response`]).

mod compress;
pub mod config;
mod import;
mod meta;
pub mod params;
mod query;
pub mod remote_decode;
pub mod remote_proto;
pub mod response;
mod targets;
pub(crate) mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;

pub use crate::metadata::Metadata;
pub use config::ApiConfig;
pub use response::{ApiError, ApiSuccess, ErrorType};

use crate::metrics;
use crate::scrape::{Scraper, Targets};
use crate::storage::{Store, Tenants};

/// The tenant of requests without `X-Scope-OrgID` (the same as the bus consumer's).
pub use crate::DEFAULT_TENANT;

/// The header naming the tenant.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// The `version` reported by `/api/v1/status/buildinfo`: the Prometheus API level we implement,
/// so that Grafana enables the matching features (label APIs with `match[]`, `limit`).
pub const PROMETHEUS_COMPAT_VERSION: &str = "2.53.0";

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: Arc<dyn Tenants>,
    config: ApiConfig,
    start_time: SystemTime,
    storage_retention: String,
    /// Query slots (Prometheus's active query tracker).
    slots: Arc<Semaphore>,
    /// The scrape loops whose targets `/api/v1/targets` shows (the server's and the
    /// in-process collector's), merged as Prometheus merges its pools.
    scrapers: Vec<Arc<Scraper>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.config)
            .field("start_time", &self.start_time)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The API over `tenants`; `start_time` is the process start reported by runtimeinfo.
    pub fn new(tenants: Arc<dyn Tenants>, config: ApiConfig, start_time: SystemTime) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                tenants,
                slots: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
                config,
                start_time,
                storage_retention: String::new(),
                scrapers: Vec::new(),
            }),
        }
    }

    /// Sets the retention text shown by runtimeinfo (e.g. `15d`); call before sharing.
    pub fn with_storage_retention(self, retention: impl Into<String>) -> ApiState {
        let retention = retention.into();
        self.edit(|i| i.storage_retention = retention)
    }

    /// Shows `scraper`'s targets on `/api/v1/targets`, beside those of scrapers added before;
    /// call before sharing.
    pub fn with_scraper(self, scraper: Arc<Scraper>) -> ApiState {
        self.edit(|i| i.scrapers.push(scraper))
    }

    /// Changes settings while the state is not shared yet (a shared state is left as it is).
    fn edit(self, f: impl FnOnce(&mut Inner)) -> ApiState {
        match Arc::try_unwrap(self.inner) {
            Ok(mut i) => {
                f(&mut i);
                ApiState { inner: Arc::new(i) }
            }
            Err(shared) => ApiState { inner: shared },
        }
    }

    /// The scrape targets of every scraper (none without a scrape loop).
    fn targets(&self) -> Targets {
        Targets::merge(self.inner.scrapers.iter().map(|s| s.targets()))
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// The store of the request's tenant.
    fn store(&self, headers: &HeaderMap) -> Result<(String, Arc<dyn Store>), ApiError> {
        let tenant = tenant_of(headers)?;
        let store = self.inner.tenants.tenant(&tenant)?;
        Ok((tenant, store))
    }
}

/// The tenant named by `X-Scope-OrgID`, validated as Cortex does (at most 150 characters of
/// `[A-Za-z0-9!-_.*'()]`, not `.` or `..`).
pub fn tenant_of(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get(TENANT_HEADER) else {
        return Ok(DEFAULT_TENANT.to_string());
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::bad_data("invalid X-Scope-OrgID: not ASCII"))?
        .trim();
    if v.is_empty() {
        return Ok(DEFAULT_TENANT.to_string());
    }
    let ok = v.len() <= 150
        && v != "."
        && v != ".."
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
        });
    if !ok {
        return Err(ApiError::bad_data(format!(
            "invalid X-Scope-OrgID {v:?}: at most 150 characters of [A-Za-z0-9!-_.*'()]"
        )));
    }
    Ok(v.to_string())
}

/// The API's routes. Mount at the root of the HTTP port (paths start with `/api/v1`).
pub fn router(state: ApiState) -> Router {
    let body_limit = state.config().max_body();
    Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route(
            "/api/v1/query_exemplars",
            get(query::exemplars).post(query::exemplars),
        )
        .route(
            "/api/v1/format_query",
            get(query::format).post(query::format),
        )
        .route("/api/v1/series", get(meta::series).post(meta::series))
        .route("/api/v1/labels", get(meta::labels).post(meta::labels))
        .route("/api/v1/label/{name}/values", get(meta::label_values))
        .route("/api/v1/metadata", get(meta::metadata))
        .route("/api/v1/status/buildinfo", get(meta::buildinfo))
        .route("/api/v1/status/runtimeinfo", get(meta::runtimeinfo))
        .route("/api/v1/status/tsdb", get(meta::tsdb_status))
        .route("/api/v1/targets", get(targets::targets))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(meta::delete_series).put(meta::delete_series),
        )
        .route("/api/v1/write", post(write::remote_write))
        .route("/api/v1/import/prometheus", post(import::import))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(compress::gzip))
        .with_state(state)
}

/// Runs storage work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("storage task failed: {e}")))?
}

/// Counts and times one read call and turns its result into the answer; internal errors are
/// logged (the others are the client's business).
fn respond(endpoint: &str, started: Instant, result: Result<ApiSuccess, ApiError>) -> Response {
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) => e.kind.as_str(),
    };
    metrics::QUERIES
        .with_label_values(&[endpoint, outcome])
        .inc();
    metrics::QUERY_SECONDS
        .with_label_values(&[endpoint])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(s) => s.into_response(),
        Err(e) => {
            if e.kind == ErrorType::Internal {
                tracing::warn!(endpoint, error = %e.message, "api call failed");
            }
            e.into_response()
        }
    }
}

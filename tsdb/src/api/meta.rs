//! `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`, `/api/v1/metadata`, the
//! `status/*` endpoints and `admin/tsdb/delete_series`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Instant, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::params::{MAX_TIME_MS, MIN_TIME_MS, Params, parse_match_sets, unescape_label_name};
use super::response::{
    ApiError, ApiSuccess, ErrorType, TRUNCATED_WARNING, json_string, push_labels, push_string_array,
};
use super::{ApiState, PROMETHEUS_COMPAT_VERSION, blocking, respond};
use crate::labels::Labels;

fn string_list(items: &[String], truncated: bool) -> ApiSuccess {
    let mut out = String::new();
    push_string_array(&mut out, items.iter().map(String::as_str));
    let s = ApiSuccess::data(out);
    if truncated {
        s.warn(TRUNCATED_WARNING)
    } else {
        s
    }
}

fn truncate<T>(v: &mut Vec<T>, limit: usize) -> bool {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
        true
    } else {
        false
    }
}

pub(super) async fn series(
    State(state): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let started = Instant::now();
    let r = async {
        let selectors = p.all("match[]");
        if selectors.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let limit = p.limit()?;
        let start = p.time_or("start", MIN_TIME_MS)?;
        let end = p.time_or("end", MAX_TIME_MS)?;
        let sets =
            parse_match_sets(&selectors).map_err(|e| ApiError::invalid_param("match[]", e))?;
        let (_, store) = state.store(&headers)?;
        let mut series = blocking(move || {
            let mut all: BTreeSet<Labels> = BTreeSet::new();
            for set in &sets {
                all.extend(store.series(set, start, end)?);
            }
            Ok(all.into_iter().collect::<Vec<_>>())
        })
        .await?;
        let truncated = truncate(&mut series, limit);
        let mut out = String::from("[");
        for (i, l) in series.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_labels(&mut out, l);
        }
        out.push(']');
        let s = ApiSuccess::data(out);
        Ok(if truncated {
            s.warn(TRUNCATED_WARNING)
        } else {
            s
        })
    }
    .await;
    respond("series", started, r)
}

pub(super) async fn labels(
    State(state): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let started = Instant::now();
    let r = async {
        let limit = p.limit()?;
        let start = p.time_or("start", MIN_TIME_MS)?;
        let end = p.time_or("end", MAX_TIME_MS)?;
        let sets = parse_match_sets(&p.all("match[]")).map_err(ApiError::bad_data)?;
        let (_, store) = state.store(&headers)?;
        let mut names = blocking(move || {
            if sets.is_empty() {
                return Ok(store.label_names(&[], start, end)?);
            }
            let mut all = BTreeSet::new();
            for set in &sets {
                all.extend(store.label_names(set, start, end)?);
            }
            Ok(all.into_iter().collect::<Vec<_>>())
        })
        .await?;
        let truncated = truncate(&mut names, limit);
        Ok(string_list(&names, truncated))
    }
    .await;
    respond("labels", started, r)
}

/// Whether `name` is a valid label name under Prometheus 3's UTF-8 validation.
fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
}

pub(super) async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let started = Instant::now();
    let r = async {
        let name = unescape_label_name(&name)
            .filter(|n| valid_label_name(n))
            .ok_or_else(|| ApiError::bad_data(format!("invalid label name: {name:?}")))?;
        let limit = p.limit()?;
        let start = p.time_or("start", MIN_TIME_MS)?;
        let end = p.time_or("end", MAX_TIME_MS)?;
        let sets = parse_match_sets(&p.all("match[]")).map_err(ApiError::bad_data)?;
        let (_, store) = state.store(&headers)?;
        let mut values = blocking(move || {
            if sets.is_empty() {
                return Ok(store.label_values(&name, &[], start, end)?);
            }
            let mut all = BTreeSet::new();
            for set in &sets {
                all.extend(store.label_values(&name, set, start, end)?);
            }
            Ok(all.into_iter().collect::<Vec<_>>())
        })
        .await?;
        let truncated = truncate(&mut values, limit);
        Ok(string_list(&values, truncated))
    }
    .await;
    respond("label_values", started, r)
}

pub(super) async fn metadata(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let p = Params::from_request(&Method::GET, &uri, &headers, &[]);
    let r = (|| {
        let num = |key: &str| -> Result<i64, ApiError> {
            let v = p.get(key);
            if v.is_empty() {
                return Ok(-1);
            }
            v.parse()
                .map_err(|_| ApiError::bad_data(format!("{key} must be a number")))
        };
        let limit = num("limit")?;
        let limit_per_metric = num("limit_per_metric")?;
        let (_, store) = state.store(&headers)?;
        let metric = Some(p.get("metric")).filter(|m| !m.is_empty());
        let families = store.metadata(metric, limit, limit_per_metric)?;
        let mut out = String::from("{");
        for (i, (family, entries)) in families.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_string(family));
            out.push_str(":[");
            for (j, m) in entries.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#"{{"type":{},"help":{},"unit":{}}}"#,
                    json_string(&m.kind),
                    json_string(&m.help),
                    json_string(&m.unit)
                );
            }
            out.push(']');
        }
        out.push('}');
        Ok(ApiSuccess::data(out))
    })();
    respond("metadata", started, r)
}

pub(super) async fn buildinfo() -> Response {
    let data = serde_json::json!({
        "version": PROMETHEUS_COMPAT_VERSION,
        "revision": option_env!("SEXTANT_GIT_SHA").unwrap_or(""),
        "branch": "",
        "buildUser": "sextant",
        "buildDate": "",
        "goVersion": concat!("sextant ", env!("CARGO_PKG_VERSION")),
    });
    ApiSuccess::data(data.to_string()).into_response()
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    chrono::DateTime::from_timestamp(i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

pub(super) async fn runtimeinfo(State(state): State<ApiState>) -> Response {
    let start = rfc3339(state.inner.start_time);
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    let procs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = serde_json::json!({
        "startTime": start,
        "CWD": cwd,
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        "serverTime": rfc3339(std::time::SystemTime::now()),
        "reloadConfigSuccess": true,
        "lastConfigTime": start,
        "corruptionCount": 0,
        "goroutineCount": tasks,
        "GOMAXPROCS": procs,
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": state.inner.storage_retention,
    });
    ApiSuccess::data(data.to_string()).into_response()
}

pub(super) async fn tsdb_status(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    const MAX_LIMIT: usize = 10_000;
    let started = Instant::now();
    let p = Params::from_request(&Method::GET, &uri, &headers, &[]);
    let r = async {
        let mut limit = 10;
        let v = p.get("limit");
        if !v.is_empty() {
            limit = v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| ApiError::bad_data("limit must be a positive number"))?;
            if limit > MAX_LIMIT {
                return Err(ApiError::bad_data(format!(
                    "limit must not exceed {MAX_LIMIT}"
                )));
            }
        }
        let (_, store) = state.store(&headers)?;
        let s = blocking(move || {
            store
                .stats(limit)
                .map_err(|e| ApiError::new(ErrorType::Internal, e.to_string()))
        })
        .await?;
        let table = |rows: &[(String, u64)]| -> serde_json::Value {
            rows.iter()
                .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                .collect()
        };
        let data = serde_json::json!({
            "headStats": {
                "numSeries": s.num_series,
                "numLabelPairs": s.num_label_pairs,
                "chunkCount": s.chunk_count,
                "minTime": s.min_time.unwrap_or(i64::MAX),
                "maxTime": s.max_time.unwrap_or(i64::MIN),
            },
            "seriesCountByMetricName": table(&s.series_count_by_metric_name),
            "labelValueCountByLabelName": table(&s.label_value_count_by_label_name),
            "memoryInBytesByLabelName": table(&s.memory_in_bytes_by_label_name),
            "seriesCountByLabelValuePair": table(&s.series_count_by_label_value_pair),
        });
        Ok(ApiSuccess::data(data.to_string()))
    }
    .await;
    respond("status_tsdb", started, r)
}

pub(super) async fn delete_series(
    State(state): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let started = Instant::now();
    let r = async {
        if !state.config().enable_admin_api {
            return Err(ApiError::new(ErrorType::Unavailable, "admin APIs disabled"));
        }
        let selectors = p.all("match[]");
        if selectors.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let start = p.time_or("start", MIN_TIME_MS)?;
        let end = p.time_or("end", MAX_TIME_MS)?;
        let mut sets = Vec::new();
        for sel in selectors {
            sets.extend(
                super::params::parse_selector(sel)
                    .map_err(|e| ApiError::invalid_param("match[]", e))?,
            );
        }
        let (tenant, store) = state.store(&headers)?;
        blocking(move || {
            for set in &sets {
                store
                    .delete(set, start, end)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            Ok(())
        })
        .await?;
        tracing::info!(tenant, start, end, "deleted series");
        Ok(ApiSuccess::no_content())
    }
    .await;
    respond("delete_series", started, r)
}

//! `/api/v1/query`, `/api/v1/query_range`, `/api/v1/query_exemplars` and
//! `/api/v1/format_query`, with the query limits: a concurrency cap (queries beyond it wait, as
//! behind Prometheus's active query tracker), a timeout covering the wait, the sample limit, and
//! cancellation when the client goes away. Queries run on the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};

use super::params::{MAX_TIME_MS, MIN_TIME_MS, Params, parse_duration, selector_matcher_sets};
use super::response::{
    ApiError, ApiSuccess, TRUNCATED_WARNING, json_string, push_labels, push_timestamp, push_value,
    render_query_body,
};
use super::{ApiState, blocking, respond};
use crate::exemplar::SeriesExemplars;
use crate::metrics;
use crate::promql::{self, QueryError, QueryOptions, QueryOutput, Value};
use crate::storage::Matcher;

/// Prometheus's cap on points per series of a range query (web/api/v1/api.go).
pub(super) const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Now in milliseconds since the epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) async fn instant(
    State(state): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let started = Instant::now();
    let r = instant_query(&state, &headers, &p).await;
    respond("query", started, r)
}

async fn instant_query(
    state: &ApiState,
    headers: &HeaderMap,
    p: &Params,
) -> Result<ApiSuccess, ApiError> {
    let limit = p.limit()?;
    let t = p.time_or("time", now_ms())?;
    let timeout = timeout_param(p)?;
    let opts = query_options(state, p)?;
    let (_, store) = state.store(headers)?;
    let expr = p.get("query").to_string();
    let out = run(state, timeout, opts, move |o| {
        promql::instant_query(&*store, &expr, t, o)
    })
    .await?;
    Ok(render(out, limit))
}

pub(super) async fn range(
    State(state): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let started = Instant::now();
    let r = range_query(&state, &headers, &p).await;
    respond("query_range", started, r)
}

async fn range_query(
    state: &ApiState,
    headers: &HeaderMap,
    p: &Params,
) -> Result<ApiSuccess, ApiError> {
    let limit = p.limit()?;
    let start = super::params::parse_time(p.get("start"))
        .map_err(|e| ApiError::invalid_param("start", e))?;
    let end =
        super::params::parse_time(p.get("end")).map_err(|e| ApiError::invalid_param("end", e))?;
    if end < start {
        return Err(ApiError::invalid_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step = parse_duration(p.get("step")).map_err(|e| ApiError::invalid_param("step", e))?;
    if step <= 0 {
        return Err(ApiError::invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let timeout = timeout_param(p)?;
    let opts = query_options(state, p)?;
    let (_, store) = state.store(headers)?;
    let expr = p.get("query").to_string();
    let out = run(state, timeout, opts, move |o| {
        promql::range_query(&*store, &expr, start, end, step, o)
    })
    .await?;
    Ok(render(out, limit))
}

fn timeout_param(p: &Params) -> Result<Option<Duration>, ApiError> {
    let v = p.get("timeout");
    if v.is_empty() {
        return Ok(None);
    }
    let ms = parse_duration(v).map_err(|e| ApiError::invalid_param("timeout", e))?;
    Ok(Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
}

fn query_options(state: &ApiState, p: &Params) -> Result<QueryOptions, ApiError> {
    let c = state.config();
    let mut lookback = i64::try_from(c.lookback_delta.as_millis()).unwrap_or(i64::MAX);
    let v = p.get("lookback_delta");
    if !v.is_empty() {
        let d = parse_duration(v).map_err(|e| {
            ApiError::bad_data(format!("error parsing lookback delta duration: {e}"))
        })?;
        if d > 0 {
            lookback = d;
        }
    }
    Ok(QueryOptions {
        lookback_delta_ms: lookback,
        max_samples: c.max_samples,
        deadline: None,
        cancel: None,
        experimental: c.experimental_functions,
    })
}

fn render(mut out: QueryOutput, limit: usize) -> ApiSuccess {
    let mut truncated = false;
    if limit > 0 {
        match &mut out.value {
            Value::Vector(v) if v.len() > limit => {
                v.truncate(limit);
                truncated = true;
            }
            Value::Matrix(m) if m.len() > limit => {
                m.sort_by(|a, b| a.labels.cmp(&b.labels));
                m.truncate(limit);
                truncated = true;
            }
            _ => {}
        }
    }
    let mut s = ApiSuccess::enveloped(render_query_body(&mut out.value));
    s.warnings = out.warnings;
    s.infos = out.infos;
    if truncated {
        s.warnings.push(TRUNCATED_WARNING.into());
    }
    s
}

/// Sets the query's cancel flag when dropped: a client that goes away drops the handler.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Keeps a gauge raised while alive.
struct GaugeGuard(&'static prometheus::IntGauge);

impl GaugeGuard {
    fn new(g: &'static prometheus::IntGauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs `eval` under the limits: waits for a slot and evaluates on the blocking pool, all within
/// the timeout (the config's, lowered by the request's). The slot stays taken until `eval`
/// returns, even when the answer has already gone out as a timeout.
pub(super) async fn run<F>(
    state: &ApiState,
    timeout: Option<Duration>,
    mut opts: QueryOptions,
    eval: F,
) -> Result<QueryOutput, ApiError>
where
    F: FnOnce(&QueryOptions) -> Result<QueryOutput, QueryError> + Send + 'static,
{
    let budget = match timeout {
        Some(t) => t.min(state.config().query_timeout),
        None => state.config().query_timeout,
    };
    let deadline = Instant::now() + budget;
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancel.clone());

    let permit = {
        let _queued = GaugeGuard::new(&metrics::QUERIES_QUEUED);
        let slots = state.inner.slots.clone();
        match tokio::time::timeout_at(deadline.into(), slots.acquire_owned()).await {
            Err(_) => return Err(QueryError::Timeout("query queue").into()),
            Ok(Err(_)) => return Err(ApiError::internal("query slots closed")),
            Ok(Ok(p)) => p,
        }
    };
    opts.deadline = Some(deadline);
    opts.cancel = Some(cancel.clone());
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _running = GaugeGuard::new(&metrics::QUERIES_RUNNING);
        eval(&opts)
    });
    match tokio::time::timeout_at(deadline.into(), task).await {
        Err(_) => {
            cancel.store(true, Ordering::Release);
            Err(QueryError::Timeout("expression evaluation").into())
        }
        Ok(Err(e)) => Err(ApiError::internal(format!("query task failed: {e}"))),
        Ok(Ok(r)) => r.map_err(ApiError::from),
    }
}

/// The parse context of endpoints that parse but do not evaluate.
const ANY_SYNTAX: promql::ParseContext = promql::ParseContext {
    step_ms: 0,
    range_ms: 0,
    experimental: true,
};

pub(super) async fn format(p: Params) -> Response {
    let started = Instant::now();
    // Formatting and selector extraction accept every syntax the engine knows, whether or not
    // it is enabled for evaluation (duration expressions are printed evaluated, `step()` and
    // `range()` as 0).
    let r = promql::parse_query(p.get("query"), &ANY_SYNTAX)
        .map(|q| ApiSuccess::data(json_string(&q.expr.prettify())))
        .map_err(|e| ApiError::invalid_param("query", e));
    respond("format_query", started, r)
}

/// The matcher sets of every selector in an expression (Prometheus's `ExtractSelectors`).
struct Selectors(Vec<Vec<Matcher>>, Option<String>);

impl ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        match selector_matcher_sets(vs) {
            Ok(sets) => self.0.extend(sets),
            Err(e) => {
                self.1.get_or_insert(e);
            }
        }
        Ok(true)
    }
}

/// `/api/v1/query_exemplars`: the exemplars in `start..=end` of the series the query's
/// selectors match, as Prometheus answers: a query without selectors is 204.
pub(super) async fn exemplars(
    State(state): State<ApiState>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let started = Instant::now();
    let r = exemplars_query(&state, &headers, &p).await;
    respond("query_exemplars", started, r)
}

async fn exemplars_query(
    state: &ApiState,
    headers: &HeaderMap,
    p: &Params,
) -> Result<ApiSuccess, ApiError> {
    let start = p.time_or("start", MIN_TIME_MS)?;
    let end = p.time_or("end", MAX_TIME_MS)?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start timestamp",
        ));
    }
    let expr = promql::parse_query(p.get("query"), &ANY_SYNTAX)
        .map_err(|e| ApiError::bad_data(e.to_string()))?
        .expr;
    let mut v = Selectors(Vec::new(), None);
    let _ = walk_expr(&mut v, &expr);
    if let Some(e) = v.1 {
        return Err(ApiError::bad_data(e));
    }
    let (_, store) = state.store(headers)?;
    if v.0.is_empty() {
        return Ok(ApiSuccess::no_content());
    }
    let sets = v.0;
    let found = blocking(move || Ok(store.select_exemplars(&sets, start, end)?)).await?;
    Ok(ApiSuccess::data(render_exemplars(&found)))
}

/// `[{"seriesLabels":{…},"exemplars":[{"labels":{…},"value":"…","timestamp":…}]}]`.
pub(super) fn render_exemplars(found: &[SeriesExemplars]) -> String {
    let mut out = String::from("[");
    for (i, s) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"seriesLabels\":");
        push_labels(&mut out, &s.labels);
        out.push_str(",\"exemplars\":[");
        for (j, e) in s.exemplars.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"labels\":");
            push_labels(&mut out, &e.labels);
            out.push_str(",\"value\":\"");
            push_value(&mut out, e.value);
            out.push_str("\",\"timestamp\":");
            push_timestamp(&mut out, e.t);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

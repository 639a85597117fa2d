//! The PromQL engine: parses with `promql-parser` and evaluates against a [`Queryable`].
//!
//! Entry points are [`instant_query`] and [`range_query`]; both honour [`QueryOptions`] (lookback
//! delta, sample limit, deadline, cancellation). Results are [`Value`]s, which the HTTP API
//! renders in Prometheus's JSON shape.

mod aggregate;
mod binary;
mod eval;
mod functions;
mod heap;
mod literals;
mod memo;
mod steps;
pub mod value;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;
use rustc_hash::FxHashMap;

pub use value::{Value, VectorSample};

use crate::labels::{Labels, METRIC_NAME};
use crate::storage::{Queryable, Sample as Sample2, SeriesSamples, StorageError};
use eval::{Evaluator, Sample, Val};

/// Limits and knobs of one query. `Default` holds Prometheus's defaults.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5 m).
    pub lookback_delta_ms: i64,
    /// Most samples a query may hold in memory at once (Prometheus: 50 M).
    pub max_samples: usize,
    /// The query fails with [`QueryError::Timeout`] once this instant has passed.
    pub deadline: Option<Instant>,
    /// The query fails with [`QueryError::Canceled`] once this is set.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Experimental functions and syntax (Prometheus's `--enable-feature=promql-experimental-functions`).
    pub experimental: bool,
}

impl Default for QueryOptions {
    fn default() -> QueryOptions {
        QueryOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            deadline: None,
            cancel: None,
            experimental: false,
        }
    }
}

/// What a query returns besides its value.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryOutput {
    pub value: Value,
    /// Prometheus's warning annotations (e.g. "metric might not be a counter").
    pub warnings: Vec<String>,
    /// Prometheus's info annotations.
    pub infos: Vec<String>,
}

/// Why a query failed. Each variant maps to one Prometheus `errorType` (in parentheses).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The expression does not parse or is invalid for the query (`bad_data`, 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed, e.g. many-to-many matching (`execution`, 422).
    #[error("{0}")]
    Execution(String),
    /// More samples than [`QueryOptions::max_samples`] (`execution`, 422).
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The deadline passed (`timeout`, 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query was canceled (`canceled`, 499).
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// Reading the store failed (`internal`, 500; `bad_data` for a bad matcher).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Subquery step when none is given (Prometheus's default evaluation interval).
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// A parsed query: the `promql-parser` AST (which callers may rewrite, e.g. to add `@`
/// modifiers) and what the AST cannot hold about the query text.
#[derive(Clone, Debug)]
pub struct ParsedQuery {
    pub expr: Expr,
    /// String literals whose Go decoding is invalid UTF-8 (see `literals.rs`).
    invalid_utf8: Vec<(String, String)>,
}

/// Parses a query; syntax errors are [`QueryError::BadData`].
pub fn parse_query(text: &str) -> Result<ParsedQuery, QueryError> {
    Ok(ParsedQuery {
        expr: promql_parser::parser::parse(text).map_err(QueryError::BadData)?,
        invalid_utf8: literals::invalid_utf8_literals(text),
    })
}

/// Evaluates `expr` at `t` (milliseconds since the epoch).
pub fn instant_query(
    q: &dyn Queryable,
    expr: &str,
    t: i64,
    opts: &QueryOptions,
) -> Result<QueryOutput, QueryError> {
    instant_query_parsed(q, &parse_query(expr)?, t, opts)
}

/// Evaluates `expr` at every `step` from `start` to `end` inclusive (milliseconds); the result is
/// a matrix (or an error for string expressions, as in Prometheus).
pub fn range_query(
    q: &dyn Queryable,
    expr: &str,
    start: i64,
    end: i64,
    step: i64,
    opts: &QueryOptions,
) -> Result<QueryOutput, QueryError> {
    range_query_parsed(q, &parse_query(expr)?, start, end, step, opts)
}

/// The labels Prometheus drops with the metric name: `__name__`, `__type__`, `__unit__`.
pub(crate) fn is_metadata_label(n: &str) -> bool {
    n == METRIC_NAME || n == "__type__" || n == "__unit__"
}

/// Drops `__name__` where the delayed name removal asked for it and rejects duplicate series.
fn finish_vector(v: Vec<Sample>) -> Result<Vec<(Labels, f64)>, QueryError> {
    let mut out = Vec::with_capacity(v.len());
    let mut seen = HashSet::with_capacity(v.len());
    for s in v {
        let l = if s.drop_name {
            s.labels.without(is_metadata_label)
        } else {
            Arc::unwrap_or_clone(s.labels)
        };
        if !seen.insert(l.clone()) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        out.push((l, s.v));
    }
    Ok(out)
}

/// [`instant_query`] on a parsed query.
pub fn instant_query_parsed(
    q: &dyn Queryable,
    p: &ParsedQuery,
    t: i64,
    opts: &QueryOptions,
) -> Result<QueryOutput, QueryError> {
    let expr = &p.expr;
    let mut ev = Evaluator::new(q, opts, t, t, DEFAULT_SUBQUERY_STEP_MS)
        .with_text(expr.to_string())
        .with_invalid_utf8(p.invalid_utf8.clone());
    ev.plan(expr, t, t);
    ev.check_done()?;
    let value = match ev.eval(expr, t)? {
        Val::Scalar(v) => Value::Scalar { t, v },
        Val::Str(s) => Value::String { t, s },
        Val::Vector(v) => Value::Vector(
            finish_vector(v)?
                .into_iter()
                .map(|(labels, v)| VectorSample { labels, t, v })
                .collect(),
        ),
        Val::Matrix(m) => {
            let mut out: Vec<SeriesSamples> = Vec::with_capacity(m.len());
            let mut seen = HashSet::new();
            for s in m {
                let labels = if s.drop_name {
                    s.labels.without(is_metadata_label)
                } else {
                    Arc::unwrap_or_clone(s.labels)
                };
                if !seen.insert(labels.clone()) {
                    return Err(QueryError::Execution(
                        "vector cannot contain metrics with the same labelset".into(),
                    ));
                }
                out.push(SeriesSamples {
                    labels,
                    samples: s.points.to_vec(),
                });
            }
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Value::Matrix(out)
        }
    };
    Ok(QueryOutput {
        value,
        warnings: ev.warnings,
        infos: ev.infos,
    })
}

/// [`range_query`] on a parsed query.
pub fn range_query_parsed(
    q: &dyn Queryable,
    p: &ParsedQuery,
    start: i64,
    end: i64,
    step: i64,
    opts: &QueryOptions,
) -> Result<QueryOutput, QueryError> {
    let expr = &p.expr;
    match expr.value_type() {
        ValueType::Scalar | ValueType::Vector => {}
        ValueType::Matrix => {
            return Err(QueryError::BadData(
                "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
            ));
        }
        ValueType::String => {
            return Err(QueryError::BadData(
                "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
            ));
        }
    }
    if step <= 0 {
        return Err(QueryError::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if end < start {
        return Err(QueryError::BadData(
            "end timestamp must not be before start time".into(),
        ));
    }
    let mut ev = Evaluator::new(q, opts, start, end, DEFAULT_SUBQUERY_STEP_MS)
        .with_text(expr.to_string())
        .with_invalid_utf8(p.invalid_utf8.clone());
    ev.step = step;
    ev.plan(expr, start, end);
    // One hash lookup per output sample: the index finds the series, and the step a series
    // last got a sample at detects duplicate label sets within a step.
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::new();
    // Most series keep the same shared label set from step to step: find them by address
    // first (a miss falls back to the label contents).
    let mut by_ptr: FxHashMap<usize, usize> = FxHashMap::default();
    // Label sets without their name, derived once per label set reaching the top.
    let mut stripped = memo::KeyMemo::default();
    let mut series: Vec<(Arc<Labels>, Vec<Sample2>, i64)> = Vec::new();
    let mut total = 0usize;
    let mut t = start;
    let mut push = |labels: Arc<Labels>, t: i64, v: f64| -> Result<(), QueryError> {
        let ptr = Arc::as_ptr(&labels) as usize;
        let i = match by_ptr.get(&ptr) {
            Some(i) if Arc::ptr_eq(&series[*i].0, &labels) => *i,
            _ => {
                let i = match index.get(&labels) {
                    Some(i) => *i,
                    None => {
                        index.insert(labels.clone(), series.len());
                        series.push((labels.clone(), Vec::new(), i64::MIN));
                        series.len() - 1
                    }
                };
                if Arc::ptr_eq(&series[i].0, &labels) {
                    by_ptr.insert(ptr, i);
                }
                i
            }
        };
        let (_, samples, last) = &mut series[i];
        if *last == t {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        *last = t;
        samples.push(Sample2 { t, v });
        Ok(())
    };
    while t <= end {
        ev.check_done()?;
        ev.cur_samples = total;
        match ev.eval(expr, t)? {
            Val::Scalar(v) => {
                push(Arc::new(Labels::empty()), t, v)?;
                total += 1;
            }
            Val::Vector(v) => {
                total += v.len();
                for s in v {
                    let labels =
                        if s.drop_name && s.labels.iter().any(|l| is_metadata_label(&l.name)) {
                            let (slot, _) =
                                stripped.get(&s.labels, |l| (l.without(is_metadata_label), None));
                            stripped.key(slot)
                        } else {
                            s.labels
                        };
                    push(labels, t, s.v)?;
                }
                stripped.end_call();
            }
            _ => {
                return Err(QueryError::Execution(
                    "range query over an expression that is not a scalar or instant vector".into(),
                ));
            }
        }
        if total > opts.max_samples {
            return Err(QueryError::TooManySamples("query execution"));
        }
        t += step;
    }
    let mut out: Vec<SeriesSamples> = series
        .into_iter()
        .map(|(labels, samples, _)| SeriesSamples {
            labels: Arc::unwrap_or_clone(labels),
            samples,
        })
        .collect();
    out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
    Ok(QueryOutput {
        value: Value::Matrix(out),
        warnings: ev.warnings,
        infos: ev.infos,
    })
}

#[cfg(test)]
mod tests;

//! The PromQL engine: parses with `promql-parser` and evaluates against a [`Queryable`].
//!
//! Entry points are [`instant_query`] and [`range_query`]; both honour [`QueryOptions`] (lookback
//! delta, sample limit, deadline, cancellation). Results are [`Value`]s, which the HTTP API
//! renders in Prometheus's JSON shape.

pub mod value;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub use value::{Value, VectorSample};

use crate::storage::{Queryable, StorageError};

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

/// Evaluates `expr` at `t` (milliseconds since the epoch).
pub fn instant_query(
    q: &dyn Queryable,
    expr: &str,
    t: i64,
    opts: &QueryOptions,
) -> Result<QueryOutput, QueryError> {
    let _ = (q, expr, t, opts);
    Err(QueryError::Execution(
        "the PromQL engine is being built".into(),
    ))
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
    let _ = (q, expr, start, end, step, opts);
    Err(QueryError::Execution(
        "the PromQL engine is being built".into(),
    ))
}

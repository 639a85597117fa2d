//! The PromQL engine: parses with `promql-parser` (behind a front end for the experimental
//! syntax it lacks, `syntax`) and evaluates against a [`Queryable`].
//!
//! Entry points are [`instant_query`] and [`range_query`]; both honour [`QueryOptions`] (lookback
//! delta, sample limit, deadline, cancellation). Results are [`Value`]s, which the HTTP API
//! renders in Prometheus's JSON shape.

mod aggregate;
mod binary;
mod calls;
mod direct;
mod eval;
mod extended;
mod functions;
mod heap;
mod literals;
mod memo;
mod steps;
mod syntax;
pub mod value;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;
use rustc_hash::FxHashMap;

pub use syntax::RangeModifier;
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
    /// Experimental functions and syntax (Prometheus's `--enable-feature=` flags
    /// `promql-experimental-functions`, `promql-duration-expr` and
    /// `promql-extended-range-selectors`).
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

/// What parsing a query depends on besides its text: duration expressions read the query's
/// step and range (`step()`, `range()`), and experimental syntax must be enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseContext {
    /// The range query's step; 0 for instant queries (as Prometheus has it).
    pub step_ms: i64,
    /// The range query's `end - start`; 0 for instant queries.
    pub range_ms: i64,
    /// [`QueryOptions::experimental`]: duration expressions and `anchored`/`smoothed`.
    pub experimental: bool,
}

impl ParseContext {
    /// The context of an instant query.
    pub fn instant(opts: &QueryOptions) -> ParseContext {
        ParseContext {
            step_ms: 0,
            range_ms: 0,
            experimental: opts.experimental,
        }
    }

    /// The context of a range query.
    pub fn range(start: i64, end: i64, step: i64, opts: &QueryOptions) -> ParseContext {
        ParseContext {
            step_ms: step,
            range_ms: end - start,
            experimental: opts.experimental,
        }
    }
}

/// A parsed query: the `promql-parser` AST (which callers may rewrite, e.g. to add `@`
/// modifiers, keeping its selectors) and what the AST cannot hold about the query text.
#[derive(Clone, Debug)]
pub struct ParsedQuery {
    pub expr: Expr,
    /// String literals whose Go decoding is invalid UTF-8 (see `literals.rs`).
    invalid_utf8: Vec<(String, String)>,
    /// The `anchored`/`smoothed` modifier of each selector, by its ordinal in
    /// `syntax::selectors` order; empty when the query has none.
    modifiers: Vec<Option<RangeModifier>>,
    /// `(step, range)` when duration expressions read them: the query is only valid for them.
    context: Option<(i64, i64)>,
    /// Whether the query uses experimental syntax.
    experimental: bool,
    /// The parse error Prometheus gives while experimental functions are off, if the query
    /// calls one (see `calls.rs`).
    experimental_call: Option<String>,
}

impl ParsedQuery {
    /// Refuses experimental functions unless `opts` enables them, as Prometheus's parser does.
    fn check_enabled(&self, opts: &QueryOptions) -> Result<(), QueryError> {
        match &self.experimental_call {
            Some(msg) if !opts.experimental => Err(QueryError::BadData(msg.clone())),
            _ => Ok(()),
        }
    }

    /// Whether the parse depended on the query's step or range (`step()`, `range()` in a
    /// duration expression), so it only serves queries with the step and range it was
    /// parsed for.
    pub fn uses_query_context(&self) -> bool {
        self.context.is_some()
    }

    /// The modifier of each selector by its ordinal among the query's selectors (pre-order,
    /// children in written order); empty when the query has none.
    pub fn modifiers(&self) -> &[Option<RangeModifier>] {
        &self.modifiers
    }

    fn check_context(&self, step_ms: i64, range_ms: i64) -> Result<(), QueryError> {
        match self.context {
            Some(c) if c != (step_ms, range_ms) => Err(QueryError::BadData(
                "the query's duration expressions were evaluated for another step or range".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Parses a query; syntax errors are [`QueryError::BadData`].
/// The syntax front end (`syntax`) first rewrites what `promql-parser` lacks; the call checks
/// (`calls`) then run on the rewritten text.
pub fn parse_query(text: &str, ctx: &ParseContext) -> Result<ParsedQuery, QueryError> {
    let rw = syntax::rewrite(
        text,
        syntax::Context {
            step_ms: ctx.step_ms,
            range_ms: ctx.range_ms,
            experimental: ctx.experimental,
        },
    )
    .map_err(QueryError::BadData)?;
    let rewritten = rw.text.as_deref().unwrap_or(text);
    let sites = calls::call_sites(rewritten);
    let expr = calls::parse(rewritten, &sites).map_err(QueryError::BadData)?;
    if let Some(e) = rw.deferred_error {
        return Err(QueryError::BadData(e));
    }
    calls::check_calls(rewritten, &expr, &sites).map_err(QueryError::BadData)?;
    Ok(ParsedQuery {
        modifiers: syntax::bind(&expr, &rw).map_err(QueryError::BadData)?,
        experimental_call: calls::experimental_error(rewritten, &expr, &sites),
        expr,
        invalid_utf8: literals::invalid_utf8_literals(text),
        context: rw.uses_query_context.then_some((ctx.step_ms, ctx.range_ms)),
        experimental: rw.experimental,
    })
}

/// A cached parse: one for every context, or one per `(step, range)` when duration
/// expressions read them.
enum Cached {
    Fixed(Arc<ParsedQuery>),
    PerContext(FxHashMap<(i64, i64), Arc<ParsedQuery>>),
}

/// `promql-parser`'s parse, with a panic taken as a syntax error: 0.11 panics on some input
/// (a range of `[1e50]` seconds overflows a `Duration`; found by fuzzing), which must fail
/// the query, not the request.
pub(crate) fn parse_expr(text: &str) -> Result<Expr, String> {
    std::panic::catch_unwind(|| promql_parser::parser::parse(text))
        .unwrap_or_else(|_| Err(format!("cannot parse {text:?}: the parser failed")))
}

/// Parsed queries by their text. Dashboards send the same few queries at every refresh, and
/// parsing one (`promql-parser` also compiles its regexes) costs a tenth of evaluating a small
/// query. Evaluation only reads the AST, so one parse serves concurrent queries.
static PARSE_CACHE: LazyLock<Mutex<FxHashMap<String, Cached>>> = LazyLock::new(Default::default);

/// Queries kept in [`PARSE_CACHE`]; it is emptied when full (dashboards refill it quickly).
const PARSE_CACHE_SIZE: usize = 512;

/// Parses of one query text for different steps and ranges kept in [`PARSE_CACHE`].
const PARSE_CACHE_CONTEXTS: usize = 16;

/// Longest query text that is cached (longer ones are generated, rarely repeated).
const PARSE_CACHE_MAX_LEN: usize = 4096;

/// [`parse_query`] through [`PARSE_CACHE`]; errors are not cached. The key is the text, and
/// the step and range for the queries whose rewrite read them; a parse of experimental syntax
/// serves only contexts that enable it (else the query is parsed again, for its error).
fn parse_cached(text: &str, ctx: &ParseContext) -> Result<Arc<ParsedQuery>, QueryError> {
    if text.len() > PARSE_CACHE_MAX_LEN {
        return parse_query(text, ctx).map(Arc::new);
    }
    let cache = || PARSE_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let hit = match cache().get(text) {
        Some(Cached::Fixed(p)) => Some(p.clone()),
        Some(Cached::PerContext(m)) => m.get(&(ctx.step_ms, ctx.range_ms)).cloned(),
        None => None,
    };
    if let Some(p) = hit {
        if p.experimental && !ctx.experimental {
            return parse_query(text, ctx).map(Arc::new);
        }
        return Ok(p);
    }
    let p = Arc::new(parse_query(text, ctx)?);
    let mut c = cache();
    if c.len() >= PARSE_CACHE_SIZE {
        c.clear();
    }
    match p.context {
        None => {
            c.insert(text.to_owned(), Cached::Fixed(p.clone()));
        }
        Some(k) => {
            let e = c
                .entry(text.to_owned())
                .or_insert_with(|| Cached::PerContext(FxHashMap::default()));
            if let Cached::PerContext(m) = e {
                if m.len() >= PARSE_CACHE_CONTEXTS {
                    m.clear();
                }
                m.insert(k, p.clone());
            }
        }
    }
    Ok(p)
}

/// Evaluates `expr` at `t` (milliseconds since the epoch).
pub fn instant_query(
    q: &dyn Queryable,
    expr: &str,
    t: i64,
    opts: &QueryOptions,
) -> Result<QueryOutput, QueryError> {
    instant_query_parsed(
        q,
        &*parse_cached(expr, &ParseContext::instant(opts))?,
        t,
        opts,
    )
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
    check_range(start, end, step)?;
    let ctx = ParseContext::range(start, end, step, opts);
    range_query_parsed(q, &*parse_cached(expr, &ctx)?, start, end, step, opts)
}

/// A range query's step and time range, checked as Prometheus's API does.
fn check_range(start: i64, end: i64, step: i64) -> Result<(), QueryError> {
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
    Ok(())
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
    p.check_enabled(opts)?;
    let expr = &p.expr;
    p.check_context(0, 0)?;
    let mut ev = Evaluator::new(q, opts, t, t, DEFAULT_SUBQUERY_STEP_MS)
        .with_text(expr.to_string())
        .with_invalid_utf8(p.invalid_utf8.clone())
        .with_modifiers(expr, &p.modifiers);
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
    range_query_with(q, p, (start, end, step), opts, true)
}

/// [`range_query_parsed`], with the series-major evaluation of `promql/direct.rs` where it
/// applies if `series_major` (tests turn it off to compare it with the step-wise path).
fn range_query_with(
    q: &dyn Queryable,
    p: &ParsedQuery,
    (start, end, step): (i64, i64, i64),
    opts: &QueryOptions,
    series_major: bool,
) -> Result<QueryOutput, QueryError> {
    p.check_enabled(opts)?;
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
    check_range(start, end, step)?;
    p.check_context(step, end - start)?;
    let mut ev = Evaluator::new(q, opts, start, end, DEFAULT_SUBQUERY_STEP_MS)
        .with_text(expr.to_string())
        .with_invalid_utf8(p.invalid_utf8.clone())
        .with_modifiers(expr, &p.modifiers);
    ev.step = step;
    ev.plan(expr, start, end);
    if series_major && let Some(d) = ev.series_major(expr)? {
        return Ok(QueryOutput {
            value: Value::Matrix(direct::finish(d, start, step, opts.max_samples)?),
            warnings: ev.warnings,
            infos: ev.infos,
        });
    }
    let mut out = RangeOutput {
        steps: usize::try_from((end - start) / step + 1).unwrap_or(1),
        ..RangeOutput::default()
    };
    let mut total = 0usize;
    let mut t = start;
    while t <= end {
        ev.check_done()?;
        ev.cur_samples = total;
        match ev.eval(expr, t)? {
            Val::Scalar(v) => {
                out.push_scalar(t, v)?;
                total += 1;
            }
            Val::Vector(v) => {
                total += v.len();
                for s in v {
                    out.push(s, t)?;
                }
                out.end_step();
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
    let series = out.series;
    let mut out: Vec<SeriesSamples> = series
        .into_iter()
        .map(|(labels, samples, _)| SeriesSamples { labels, samples })
        .collect();
    out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
    Ok(QueryOutput {
        value: Value::Matrix(out),
        warnings: ev.warnings,
        infos: ev.infos,
    })
}

/// Entries past which [`RangeOutput`]'s map by address is emptied when a step mostly missed
/// (label sets built afresh at every step, e.g. by a binary operator).
const MAX_BY_PTR: usize = 50_000;

/// The series of a range query's result as its steps arrive.
#[derive(Default)]
struct RangeOutput {
    /// Each output series: its labels (name dropped where asked), samples, and the last step
    /// it got a sample at (a second sample in one step is a duplicate label set).
    series: Vec<(Labels, Vec<Sample2>, i64)>,
    /// The query's steps: the most samples a series gets.
    steps: usize,
    /// Output series by label set.
    index: FxHashMap<Labels, usize>,
    /// Output series by the address of the step's shared label set and whether the name is
    /// dropped: most series reach the top with the same `Arc` at every step, so one lookup
    /// finds them. Holds the `Arc`, so that its address is not reused while the entry lives.
    by_ptr: FxHashMap<(usize, bool), (Arc<Labels>, usize)>,
    hits: usize,
    misses: usize,
}

impl RangeOutput {
    fn push(&mut self, s: Sample, t: i64) -> Result<(), QueryError> {
        let key = (Arc::as_ptr(&s.labels) as usize, s.drop_name);
        let i = match self.by_ptr.get(&key) {
            Some((src, i)) if Arc::ptr_eq(src, &s.labels) => {
                self.hits += 1;
                *i
            }
            _ => {
                self.misses += 1;
                let labels = if s.drop_name && s.labels.iter().any(|l| is_metadata_label(&l.name)) {
                    s.labels.without(is_metadata_label)
                } else {
                    (*s.labels).clone()
                };
                let i = self.slot(labels);
                self.by_ptr.insert(key, (s.labels, i));
                i
            }
        };
        self.add(i, t, s.v)
    }

    fn push_scalar(&mut self, t: i64, v: f64) -> Result<(), QueryError> {
        let i = self.slot(Labels::empty());
        self.add(i, t, v)
    }

    fn slot(&mut self, labels: Labels) -> usize {
        match self.index.get(&labels) {
            Some(i) => *i,
            None => {
                let i = self.series.len();
                self.index.insert(labels.clone(), i);
                // Most series have a sample at most steps; the cap bounds what sparse series
                // of long queries reserve.
                let cap = self.steps.min(1024);
                self.series
                    .push((labels, Vec::with_capacity(cap), i64::MIN));
                i
            }
        }
    }

    fn add(&mut self, i: usize, t: i64, v: f64) -> Result<(), QueryError> {
        let Some((_, samples, last)) = self.series.get_mut(i) else {
            return Ok(());
        };
        if *last == t {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        *last = t;
        samples.push(Sample2 { t, v });
        Ok(())
    }

    /// After each step: a map that mostly missed and has grown large is emptied.
    fn end_step(&mut self) {
        if self.misses > self.hits && self.by_ptr.len() > MAX_BY_PTR {
            self.by_ptr.clear();
        }
        self.hits = 0;
        self.misses = 0;
    }
}

#[cfg(test)]
mod tests;

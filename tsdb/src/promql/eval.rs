//! The expression walker. Each expression is evaluated one step at a time (`eval(expr, t)`);
//! selectors read their series once per query (over the whole span the query needs, computed
//! up front) and then slice per step, so range queries never materialise intermediate
//! matrices beyond the current step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::functions::info::{Grid, InfoSteps};
use super::syntax::{RangeModifier, selectors};
use super::{QueryError, QueryOptions};
use crate::labels::{Labels, METRIC_NAME};
use crate::storage::{MatchOp, Matcher, Queryable, Sample as Point, SeriesSamples, is_stale_nan};

/// One element of an instant vector during evaluation. `drop_name` is Prometheus 3.x's
/// delayed `__name__` removal: the name is dropped when the result leaves the engine.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// Shared: most operations pass a series' labels through unchanged.
    pub(crate) labels: Arc<Labels>,
    pub(crate) v: f64,
    pub(crate) drop_name: bool,
}

/// One series of a range vector during evaluation.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) labels: Arc<Labels>,
    pub(crate) points: Points,
    pub(crate) drop_name: bool,
}

/// The samples of a range-vector series: a window into a selector's series (no copy) or
/// owned (subqueries).
#[derive(Clone, Debug)]
pub(crate) enum Points {
    Owned(Vec<Point>),
    Window {
        store: Arc<Vec<Stored>>,
        series: usize,
        lo: usize,
        hi: usize,
    },
}

impl std::ops::Deref for Points {
    type Target = [Point];

    fn deref(&self) -> &[Point] {
        match self {
            Points::Owned(v) => v,
            Points::Window {
                store,
                series,
                lo,
                hi,
            } => &store[*series].floats()[*lo..*hi],
        }
    }
}

/// A value during evaluation.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

/// A selected series as the evaluator keeps it for the whole query.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) labels: Arc<Labels>,
    pub(crate) samples: Vec<Point>,
    /// `samples` without staleness markers, when it has any (range windows skip them).
    no_stale: Option<Vec<Point>>,
}

impl Stored {
    /// The samples range windows see.
    pub(crate) fn floats(&self) -> &[Point] {
        self.no_stale.as_deref().unwrap_or(&self.samples)
    }
}

impl Evaluator<'_> {
    /// Checks the deadline and cancellation flag inside long one-pass computations.
    pub(crate) fn check_deadline(&self) -> EvalResult<()> {
        check_deadline(self.opts)
    }
}

/// Fails once the query's deadline has passed or it was canceled (for work off the
/// evaluator's thread, which holds only the options).
pub(crate) fn check_deadline(opts: &QueryOptions) -> EvalResult<()> {
    if let Some(c) = &opts.cancel
        && c.load(Ordering::Relaxed)
    {
        return Err(QueryError::Canceled("expression evaluation"));
    }
    if let Some(d) = opts.deadline
        && Instant::now() >= d
    {
        return Err(QueryError::Timeout("expression evaluation"));
    }
    Ok(())
}

pub(crate) type EvalResult<T> = Result<T, QueryError>;

pub(crate) fn exec_err<T>(msg: impl Into<String>) -> EvalResult<T> {
    Err(QueryError::Execution(msg.into()))
}

/// A key for per-node caches: the node's address, stable while the AST is borrowed.
pub(crate) fn key<T>(n: &T) -> usize {
    n as *const T as usize
}

pub(crate) fn duration_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
        None => 0,
    }
}

pub(crate) fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub(crate) struct Evaluator<'a> {
    pub(crate) q: &'a dyn Queryable,
    pub(crate) opts: &'a QueryOptions,
    /// The query's start and end (for `@ start()`/`@ end()`) and its step.
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) interval: i64,
    bounds: HashMap<usize, (i64, i64)>,
    cache: HashMap<usize, Arc<Vec<Stored>>>,
    subquery_cache: HashMap<(usize, i64), Val>,
    /// Outputs of nodes that a range query computes for all its steps at once, by node.
    pub(crate) step_values: HashMap<usize, super::steps::StepValues>,
    /// Grouping keys of aggregations and `histogram_quantile`, by node.
    pub(crate) key_memos: HashMap<usize, super::memo::KeyMemo>,
    pub(crate) warnings: Vec<String>,
    pub(crate) infos: Vec<String>,
    /// Samples held by the current step.
    pub(crate) cur_samples: usize,
    steps: usize,
    /// The query text, for annotation positions.
    text: String,
    pub(crate) sort_warned: bool,
    /// The range query's step (0 for instant queries), for `step()`.
    pub(crate) step: i64,
    /// String literals Prometheus would read as invalid UTF-8: (decoded value, literal).
    invalid_utf8: Vec<(String, String)>,
    /// While planning: the evaluation times of the subquery being planned (`None`: the
    /// query's own steps).
    plan_grid: Option<Grid>,
    /// The evaluation times of each `info()` call, by node.
    pub(crate) info_grids: HashMap<usize, Grid>,
    /// `info()` results computed for all of a call's evaluation times at once, by node.
    pub(crate) info_steps: HashMap<usize, InfoSteps>,
    /// The `anchored`/`smoothed` selectors, by the address of their `VectorSelector`.
    modifiers: HashMap<usize, RangeModifier>,
}

impl<'a> Evaluator<'a> {
    /// Attaches the query's `anchored`/`smoothed` modifiers (by selector ordinal, see
    /// `ParsedQuery`) to the selectors of `expr`, the AST this evaluator will walk.
    pub(crate) fn with_modifiers(
        mut self,
        expr: &Expr,
        by_ordinal: &[Option<RangeModifier>],
    ) -> Evaluator<'a> {
        if by_ordinal.is_empty() {
            return self;
        }
        for ((vs, _), m) in selectors(expr).into_iter().zip(by_ordinal) {
            if let Some(m) = m {
                self.modifiers.insert(key(vs), *m);
            }
        }
        self
    }

    /// The modifier of a selector of the AST being evaluated.
    pub(crate) fn modifier(&self, vs: &VectorSelector) -> Option<RangeModifier> {
        if self.modifiers.is_empty() {
            return None;
        }
        self.modifiers.get(&key(vs)).copied()
    }

    pub(crate) fn with_invalid_utf8(mut self, v: Vec<(String, String)>) -> Evaluator<'a> {
        self.invalid_utf8 = v;
        self
    }

    /// Whether `name` is a valid label name as Prometheus 3 checks it (non-empty UTF-8).
    pub(crate) fn valid_label_name(&self, name: &str) -> bool {
        !name.is_empty() && !self.invalid_utf8.iter().any(|(d, _)| d == name)
    }

    /// How Prometheus prints a string literal with this value in an error.
    pub(crate) fn quoted(&self, s: &str) -> String {
        match self.invalid_utf8.iter().find(|(d, _)| d == s) {
            Some((_, raw)) => raw.clone(),
            None => format!("{s:?}"),
        }
    }

    pub(crate) fn with_text(mut self, text: String) -> Evaluator<'a> {
        self.text = text;
        self
    }

    pub(crate) fn new(
        q: &'a dyn Queryable,
        opts: &'a QueryOptions,
        start: i64,
        end: i64,
        interval: i64,
    ) -> Evaluator<'a> {
        Evaluator {
            q,
            opts,
            start,
            end,
            interval,
            bounds: HashMap::new(),
            cache: HashMap::new(),
            subquery_cache: HashMap::new(),
            step_values: HashMap::new(),
            key_memos: HashMap::new(),
            warnings: Vec::new(),
            infos: Vec::new(),
            cur_samples: 0,
            steps: 0,
            text: String::new(),
            sort_warned: false,
            step: 0,
            invalid_utf8: Vec::new(),
            plan_grid: None,
            info_grids: HashMap::new(),
            info_steps: HashMap::new(),
            modifiers: HashMap::new(),
        }
    }

    /// ` (line:col)` of a node in the query text, as Prometheus appends to annotations.
    pub(crate) fn pos(&self, node: &Expr) -> String {
        let needle = node.to_string();
        match self.text.find(&needle) {
            Some(off) => {
                let before = &self.text[..off];
                let line = before.matches('\n').count() + 1;
                let col = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" ({line}:{col})")
            }
            None => String::new(),
        }
    }

    pub(crate) fn warn_at(&mut self, msg: String, node: &Expr) {
        let p = self.pos(node);
        self.warn(format!("{msg}{p}"));
    }

    pub(crate) fn info_at(&mut self, msg: String, node: &Expr) {
        let p = self.pos(node);
        self.info(format!("{msg}{p}"));
    }

    pub(crate) fn warn(&mut self, msg: String) {
        let msg = format!("PromQL warning: {msg}");
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    pub(crate) fn info(&mut self, msg: String) {
        let msg = format!("PromQL info: {msg}");
        if !self.infos.contains(&msg) {
            self.infos.push(msg);
        }
    }

    /// Checks the deadline and cancellation flag; called once per step.
    pub(crate) fn check_done(&mut self) -> EvalResult<()> {
        self.steps += 1;
        self.check_deadline()
    }

    pub(crate) fn add_samples(&mut self, n: usize) -> EvalResult<()> {
        self.cur_samples += n;
        if self.cur_samples > self.opts.max_samples {
            return Err(QueryError::TooManySamples("query execution"));
        }
        Ok(())
    }

    pub(crate) fn resolve_at(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.start),
            Some(AtModifier::End) => Some(self.end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// Records, for every selector, the time span it will read over all steps `[s, e]`.
    pub(crate) fn plan(&mut self, e: &Expr, s: i64, en: i64) {
        match e {
            Expr::VectorSelector(vs) => self.plan_selector(vs, 0, s, en),
            Expr::MatrixSelector(ms) => self.plan_selector(&ms.vs, duration_ms(&ms.range), s, en),
            Expr::Subquery(sq) => {
                let (lo, hi) = match self.resolve_at(&sq.at) {
                    Some(a) => (a, a),
                    None => (s, en),
                };
                let off = offset_ms(&sq.offset);
                let range = duration_ms(&sq.range);
                // The subquery's expression is evaluated at its steps in (lo - range, hi].
                let outer = self.plan_grid.replace(Grid::subquery(
                    lo - off - range,
                    hi - off,
                    self.subquery_step(sq),
                ));
                self.plan(&sq.expr, lo - off - range, hi - off);
                self.plan_grid = outer;
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.plan(p, s, en);
                }
                self.plan(&a.expr, s, en);
            }
            Expr::Unary(u) => self.plan(&u.expr, s, en),
            Expr::Binary(b) => {
                self.plan(&b.lhs, s, en);
                self.plan(&b.rhs, s, en);
            }
            Expr::Paren(p) => self.plan(&p.expr, s, en),
            Expr::Call(c) if c.func.name == "info" => {
                // Only the first argument is evaluated; the second is a label selector.
                let grid = self
                    .plan_grid
                    .unwrap_or_else(|| Grid::range(self.start, self.end, self.step));
                self.info_grids.insert(key(c), grid);
                if let Some(a) = c.args.args.first() {
                    self.plan(a, s, en);
                }
            }
            Expr::Call(c) => c.args.args.iter().for_each(|a| self.plan(a, s, en)),
            _ => {}
        }
    }

    fn plan_selector(&mut self, vs: &VectorSelector, range: i64, s: i64, e: i64) {
        let (lo, hi) = match self.resolve_at(&vs.at) {
            Some(a) => (a, a),
            None => (s, e),
        };
        let off = offset_ms(&vs.offset);
        let lookback = self.opts.lookback_delta_ms;
        // Anchored windows reach a lookback further back for the sample at their start;
        // smoothed ones also a lookback forward, for the sample after their end.
        let (back, ahead) = match (self.modifier(vs), range > 0) {
            (None, true) => (range, 0),
            (None, false) => (lookback, 0),
            (Some(RangeModifier::Anchored), _) => (range + lookback, 0),
            (Some(RangeModifier::Smoothed), _) => (range + lookback, lookback),
        };
        let b = (lo - off - back + 1, hi - off + ahead);
        let entry = self.bounds.entry(key(vs)).or_insert(b);
        entry.0 = entry.0.min(b.0);
        entry.1 = entry.1.max(b.1);
    }

    pub(crate) fn series_of(&mut self, vs: &VectorSelector) -> EvalResult<Arc<Vec<Stored>>> {
        if let Some(c) = self.cache.get(&key(vs)) {
            return Ok(c.clone());
        }
        let (mint, maxt) = self
            .bounds
            .get(&key(vs))
            .copied()
            .unwrap_or((i64::MIN, i64::MAX));
        let groups: Vec<Vec<&promql_parser::label::Matcher>> = if vs.matchers.or_matchers.is_empty()
        {
            vec![vs.matchers.matchers.iter().collect()]
        } else {
            vs.matchers
                .or_matchers
                .iter()
                .map(|g| vs.matchers.matchers.iter().chain(g.iter()).collect())
                .collect()
        };
        let mut selected: Vec<SeriesSamples> = Vec::new();
        let single = groups.len() == 1;
        let mut merged: BTreeMap<Labels, SeriesSamples> = BTreeMap::new();
        for g in groups {
            let mut ms = Vec::with_capacity(g.len() + 1);
            if let Some(n) = &vs.name {
                ms.push(Matcher::new(MatchOp::Equal, METRIC_NAME, n.as_str())?);
            }
            for m in g {
                let (op, value) = match &m.op {
                    PMatchOp::Equal => (MatchOp::Equal, m.value.clone()),
                    PMatchOp::NotEqual => (MatchOp::NotEqual, m.value.clone()),
                    PMatchOp::Re(_) => (MatchOp::Regex, m.value.clone()),
                    PMatchOp::NotRe(_) => (MatchOp::NotRegex, m.value.clone()),
                };
                ms.push(Matcher::new(op, m.name.as_str(), value)?);
            }
            let found = self.q.select(&ms, mint, maxt)?;
            if single {
                // One matcher set: the store's answer is sorted and distinct already.
                selected = found;
            } else {
                for s in found {
                    merged.entry(s.labels.clone()).or_insert(s);
                }
            }
        }
        if !single {
            selected = merged.into_values().collect();
        }
        let v = Arc::new(
            selected
                .into_iter()
                .map(|s| {
                    let no_stale = s.samples.iter().any(|p| is_stale_nan(p.v)).then(|| {
                        s.samples
                            .iter()
                            .filter(|p| !is_stale_nan(p.v))
                            .copied()
                            .collect()
                    });
                    Stored {
                        labels: Arc::new(s.labels),
                        samples: s.samples,
                        no_stale,
                    }
                })
                .collect::<Vec<_>>(),
        );
        self.cache.insert(key(vs), v.clone());
        Ok(v)
    }

    /// The instant vector of a selector at `t`.
    pub(crate) fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> EvalResult<Vec<Sample>> {
        if self.modifier(vs) == Some(RangeModifier::Smoothed) {
            return self.smoothed_selector(vs, t);
        }
        if let Some(v) = self.stepped_selector(vs, t)? {
            return Ok(v);
        }
        let ts = self.resolve_at(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let series = self.series_of(vs)?;
        let lookback = self.opts.lookback_delta_ms;
        let mut out = Vec::new();
        for s in series.iter() {
            let idx = s.samples.partition_point(|p| p.t <= ts);
            if idx == 0 {
                continue;
            }
            let p = s.samples[idx - 1];
            if p.t <= ts - lookback || is_stale_nan(p.v) {
                continue;
            }
            out.push(Sample {
                labels: s.labels.clone(),
                v: p.v,
                drop_name: false,
            });
        }
        self.add_samples(out.len())?;
        Ok(out)
    }

    /// Like [`Evaluator::vector_selector`], with each sample's own timestamp.
    pub(crate) fn vector_selector_ts(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> EvalResult<Vec<(Sample, i64)>> {
        let ts = self.resolve_at(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let series = self.series_of(vs)?;
        let lookback = self.opts.lookback_delta_ms;
        let mut out = Vec::new();
        for s in series.iter() {
            let idx = s.samples.partition_point(|p| p.t <= ts);
            if idx == 0 {
                continue;
            }
            let p = s.samples[idx - 1];
            if p.t <= ts - lookback || is_stale_nan(p.v) {
                continue;
            }
            out.push((
                Sample {
                    labels: s.labels.clone(),
                    v: p.v,
                    drop_name: false,
                },
                p.t,
            ));
        }
        self.add_samples(out.len())?;
        Ok(out)
    }

    /// The range vector of a selector at `t`: samples in `(t - range, t]`.
    pub(crate) fn matrix_selector(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> EvalResult<Vec<Series>> {
        if let Some(m) = self.modifier(vs) {
            return self.extended_matrix(vs, range, m, t);
        }
        let ts = self.resolve_at(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let series = self.series_of(vs)?;
        let mut out = Vec::new();
        let mut n = 0;
        for (i, s) in series.iter().enumerate() {
            let floats = s.floats();
            let lo = floats.partition_point(|p| p.t <= ts - range);
            let hi = floats.partition_point(|p| p.t <= ts);
            if lo == hi {
                continue;
            }
            n += hi - lo;
            out.push(Series {
                labels: s.labels.clone(),
                points: Points::Window {
                    store: series.clone(),
                    series: i,
                    lo,
                    hi,
                },
                drop_name: false,
            });
        }
        self.add_samples(n)?;
        Ok(out)
    }

    /// A subquery's step: its own, or the default evaluation interval.
    fn subquery_step(&self, sq: &SubqueryExpr) -> i64 {
        match &sq.step {
            // At least a millisecond (the front end refuses shorter steps).
            Some(s) if !s.is_zero() => duration_ms(s).max(1),
            _ => self.interval.max(1),
        }
    }

    /// The range vector of a subquery at `t`.
    pub(crate) fn subquery(&mut self, sq: &SubqueryExpr, t: i64) -> EvalResult<Vec<Series>> {
        let ts = self.resolve_at(&sq.at).unwrap_or(t) - offset_ms(&sq.offset);
        let range = duration_ms(&sq.range);
        let step = self.subquery_step(sq);
        let first = Grid::subquery(ts - range, ts, step).first;
        let mut by_labels: BTreeMap<Arc<Labels>, (Vec<Point>, bool)> = BTreeMap::new();
        let mut it = first;
        let mut n = 0;
        while it <= ts {
            self.check_done()?;
            let k = (key(sq), it);
            let v = match self.subquery_cache.get(&k) {
                Some(v) => v.clone(),
                None => {
                    let v = self.eval(&sq.expr, it)?;
                    self.subquery_cache.insert(k, v.clone());
                    v
                }
            };
            match v {
                Val::Scalar(f) => {
                    n += 1;
                    by_labels
                        .entry(Arc::new(Labels::empty()))
                        .or_insert_with(|| (Vec::new(), false))
                        .0
                        .push(Point { t: it, v: f });
                }
                Val::Vector(vec) => {
                    for s in vec {
                        n += 1;
                        let e = by_labels
                            .entry(s.labels)
                            .or_insert_with(|| (Vec::new(), false));
                        e.1 |= s.drop_name;
                        e.0.push(Point { t: it, v: s.v });
                    }
                }
                _ => return exec_err("subquery over a non-instant expression"),
            }
            it += step;
        }
        self.add_samples(n)?;
        Ok(by_labels
            .into_iter()
            .map(|(labels, (points, drop_name))| Series {
                labels,
                points: Points::Owned(points),
                drop_name,
            })
            .collect())
    }

    /// Evaluates `e` at time `t`.
    pub(crate) fn eval(&mut self, e: &Expr, t: i64) -> EvalResult<Val> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.vector_selector(vs, t)?)),
            Expr::MatrixSelector(ms) => Ok(Val::Matrix(self.matrix_selector(
                &ms.vs,
                duration_ms(&ms.range),
                t,
            )?)),
            Expr::Subquery(sq) => Ok(Val::Matrix(self.subquery(sq, t)?)),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(f) => Ok(Val::Scalar(-f)),
                Val::Vector(mut v) => {
                    for s in &mut v {
                        s.v = -s.v;
                        s.drop_name = true;
                    }
                    Ok(Val::Vector(v))
                }
                _ => exec_err("unary minus on a non-numeric value"),
            },
            Expr::Binary(b) => self.binary(b, t),
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Call(c) => self.call(c, t),
            Expr::Extension(_) => exec_err("extension expressions are not supported"),
        }
    }

    pub(crate) fn eval_scalar(&mut self, e: &Expr, t: i64) -> EvalResult<f64> {
        match self.eval(e, t)? {
            Val::Scalar(f) => Ok(f),
            _ => exec_err("expected a scalar"),
        }
    }

    pub(crate) fn eval_vector(&mut self, e: &Expr, t: i64) -> EvalResult<Vec<Sample>> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            _ => exec_err("expected an instant vector"),
        }
    }

    pub(crate) fn eval_matrix(&mut self, e: &Expr, t: i64) -> EvalResult<Vec<Series>> {
        match self.eval(e, t)? {
            Val::Matrix(v) => Ok(v),
            _ => exec_err("expected a range vector"),
        }
    }
}

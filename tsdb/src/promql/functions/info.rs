//! `info()`, experimental in Prometheus 3.x: adds to each series of its first argument the data
//! labels of the info series that share its identifying labels (`instance`, `job`), as upstream's
//! `promql/info.go` does:
//!
//! - Info series are `target_info`, or those the second argument's `__name__` matchers select
//!   (all of them must match; with only negative ones, names must also end in `_info`). Series
//!   of the first argument that are info series themselves pass through unchanged.
//! - The second argument's other matchers select info series and name the data labels to
//!   copy; without them every label of a matching info series is copied. Labels the series
//!   already has are never overwritten.
//! - A series and an info series match when the identifying labels each has are equal (a
//!   missing label must be missing on both). Per info metric, the info series with the newest
//!   sample (within the lookback delta) wins; two with the same timestamp are an error, and so
//!   are two info metrics giving one label different values.
//! - A series no info series matches is kept unchanged, unless a data matcher refuses the empty
//!   string (then it is dropped).
//! - The info series are read as of the first argument's first selector: its `@` (or that of
//!   the innermost enclosing subquery) and offsets (its own plus the enclosing subqueries' up
//!   to the `@`), so `info(m @ T)` is enriched as of `T` at every step.
//!
//! Which info series are candidates depends on the identifying values of every series the
//! first argument has over all of the call's evaluation times, as upstream evaluates the call
//! over its whole range at once. So does this: the first time a call is evaluated it computes
//! every step of its grid (the query's steps, or a subquery's) and then hands them out.

use std::sync::Arc;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr, SubqueryExpr, VectorSelector};
use rustc_hash::{FxHashMap, FxHashSet};

use super::super::QueryError;
use super::super::eval::{EvalResult, Evaluator, Sample, Val, exec_err, key, offset_ms};
use crate::labels::{Labels, METRIC_NAME};
use crate::storage::{MatchOp, Matcher, Sample as Point, is_stale_nan};

/// The info metric when the second argument names none.
const TARGET_INFO: &str = "target_info";

/// Labels that identify the target an info series describes (hard-coded upstream too).
const IDENTIFYING: [&str; 2] = ["instance", "job"];

/// Identifying values up to which info series are selected by a regex of them (as upstream);
/// past it they are selected by name and data matchers and filtered here, as an alternation of
/// thousands of values costs the store more than it saves.
const MAX_PUSHDOWN_VALUES: usize = 256;

/// Evaluation times: `len` times `step` apart from `first`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Grid {
    pub(crate) first: i64,
    step: i64,
    len: usize,
}

impl Grid {
    /// One time.
    pub(crate) fn single(t: i64) -> Grid {
        Grid {
            first: t,
            step: 1,
            len: 1,
        }
    }

    /// A range query's steps (`step` 0: an instant query at `start`).
    pub(crate) fn range(start: i64, end: i64, step: i64) -> Grid {
        if step <= 0 || end <= start {
            return Grid::single(start);
        }
        Grid {
            first: start,
            step,
            len: usize::try_from((end - start) / step + 1).unwrap_or(1),
        }
    }

    /// A subquery's steps in `(lo, hi]`: the multiples of `step` there.
    pub(crate) fn subquery(lo: i64, hi: i64, step: i64) -> Grid {
        let step = step.max(1);
        let mut first = lo.div_euclid(step) * step;
        if first <= lo {
            first += step;
        }
        let len = if hi >= first {
            usize::try_from((hi - first) / step + 1).unwrap_or(0)
        } else {
            0
        };
        Grid { first, step, len }
    }

    /// The index of `t` among the times, if it is one.
    pub(crate) fn index(&self, t: i64) -> Option<usize> {
        let d = t.checked_sub(self.first)?;
        if d < 0 || d % self.step != 0 {
            return None;
        }
        usize::try_from(d / self.step)
            .ok()
            .filter(|i| *i < self.len)
    }

    pub(crate) fn time(&self, i: usize) -> i64 {
        self.first + i as i64 * self.step
    }

    fn last(&self) -> i64 {
        self.time(self.len.saturating_sub(1))
    }
}

/// A call's vectors at each time of its grid, taken as they are handed out.
#[derive(Debug)]
pub(crate) struct InfoSteps {
    grid: Grid,
    out: Vec<Option<Vec<Sample>>>,
}

/// What the second argument asks for.
#[derive(Debug)]
struct Selector {
    /// The `__name__` matchers an info series satisfies (upstream's effective ones).
    names: Vec<Matcher>,
    /// The other matchers: they select info series and name the data labels to copy.
    data: Vec<Matcher>,
}

impl Selector {
    fn new(arg: Option<&Expr>) -> EvalResult<Selector> {
        let mut names = Vec::new();
        let mut data = Vec::new();
        match arg {
            None => {}
            Some(Expr::VectorSelector(vs)) => {
                for m in &vs.matchers.matchers {
                    let op = match m.op {
                        PMatchOp::Equal => MatchOp::Equal,
                        PMatchOp::NotEqual => MatchOp::NotEqual,
                        PMatchOp::Re(_) => MatchOp::Regex,
                        PMatchOp::NotRe(_) => MatchOp::NotRegex,
                    };
                    let m = Matcher::new(op, m.name.as_str(), m.value.as_str())?;
                    if m.name == METRIC_NAME {
                        names.push(m);
                    } else {
                        data.push(m);
                    }
                }
            }
            // The parser refuses anything else (see `calls.rs`).
            Some(_) => return exec_err("expected label selectors only"),
        }
        Ok(Selector {
            names: effective_names(names)?,
            data,
        })
    }

    /// Whether a series is an info series (and so is not enriched).
    fn is_info(&self, l: &Labels) -> bool {
        let name = l.metric_name().unwrap_or("");
        self.names.iter().all(|m| m.matches(name))
    }

    /// Whether label `name` of an info series is a data label to copy.
    fn copies(&self, name: &str) -> bool {
        self.data.is_empty() || self.data.iter().any(|m| m.name == name)
    }

    /// Whether a series no info series matches is kept: every data matcher accepts "".
    fn keeps_unmatched(&self) -> bool {
        self.data.iter().all(|m| m.matches(""))
    }
}

/// Upstream's `effectiveInfoNameMatchers`: the given `__name__` matchers when one is positive;
/// only negative ones are narrowed to names ending in `_info`; none means `target_info`.
fn effective_names(ms: Vec<Matcher>) -> EvalResult<Vec<Matcher>> {
    if ms
        .iter()
        .any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Regex))
    {
        return Ok(ms);
    }
    let first = if ms.is_empty() {
        Matcher::new(MatchOp::Equal, METRIC_NAME, TARGET_INFO)?
    } else {
        Matcher::new(MatchOp::Regex, METRIC_NAME, ".+_info")?
    };
    Ok(std::iter::once(first).chain(ms).collect())
}

/// One info series.
#[derive(Debug)]
struct InfoSeries {
    labels: Labels,
    /// Index of its metric name in [`InfoSet::metrics`].
    metric: usize,
    samples: Vec<Point>,
}

/// The candidate info series of a call.
#[derive(Debug, Default)]
struct InfoSet {
    /// The info metric names, sorted.
    metrics: Vec<String>,
    series: Vec<InfoSeries>,
}

/// What an info series and a series match on: the info metric and the identifying labels.
type Sig<'a> = (usize, Option<&'a str>, Option<&'a str>);

fn sig_of(metric: usize, l: &Labels) -> Sig<'_> {
    (metric, l.get(IDENTIFYING[0]), l.get(IDENTIFYING[1]))
}

impl InfoSet {
    fn new(found: Vec<(Labels, Vec<Point>)>) -> InfoSet {
        let mut metrics: Vec<String> = found
            .iter()
            .filter_map(|(l, _)| l.metric_name().map(str::to_string))
            .collect();
        metrics.sort_unstable();
        metrics.dedup();
        let series = found
            .into_iter()
            .filter_map(|(labels, samples)| {
                let metric = metrics
                    .binary_search_by(|m| m.as_str().cmp(labels.metric_name().unwrap_or("")))
                    .ok()?;
                Some(InfoSeries {
                    labels,
                    metric,
                    samples,
                })
            })
            .collect();
        InfoSet { metrics, series }
    }

    /// `base` with the data labels of the info series `matched`; `None` when it gains none.
    fn enrich(
        &self,
        sel: &Selector,
        matched: &[usize],
        base: &Labels,
    ) -> Result<Option<Labels>, String> {
        let mut added: Vec<(&Arc<str>, &Arc<str>)> = Vec::new();
        for s in matched.iter().filter_map(|j| self.series.get(*j)) {
            for l in s.labels.iter() {
                if &*l.name == METRIC_NAME || !sel.copies(&l.name) {
                    continue;
                }
                if let Some((_, v)) = added.iter().find(|(n, _)| **n == l.name) {
                    if **v != l.value {
                        return Err(format!("conflicting label: {}", l.name));
                    }
                    continue;
                }
                if base.get(&l.name).is_some() {
                    continue;
                }
                added.push((&l.name, &l.value));
            }
        }
        if added.is_empty() {
            return Ok(None);
        }
        Ok(Some(Labels::from_pairs(
            base.iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .chain(added.into_iter().map(|(n, v)| (n.clone(), v.clone()))),
        )))
    }
}

/// Which info series is current, per match key, as the steps advance.
#[derive(Debug)]
struct InfoIndex<'a> {
    set: &'a InfoSet,
    /// A slot per distinct match key of the info series.
    slots: FxHashMap<Sig<'a>, usize>,
    /// Each series' slot.
    slot_of: Vec<usize>,
    /// Each series' samples at or before the last time asked for.
    cursors: Vec<usize>,
    last_t: i64,
    /// Per slot, the current info series and its sample's timestamp.
    current: Vec<Option<(usize, i64)>>,
}

impl<'a> InfoIndex<'a> {
    fn new(set: &'a InfoSet) -> InfoIndex<'a> {
        let mut slots: FxHashMap<Sig<'a>, usize> = FxHashMap::default();
        let slot_of = set
            .series
            .iter()
            .map(|s| {
                let n = slots.len();
                *slots.entry(sig_of(s.metric, &s.labels)).or_insert(n)
            })
            .collect();
        InfoIndex {
            current: vec![None; slots.len()],
            slots,
            slot_of,
            cursors: vec![0; set.series.len()],
            last_t: i64::MIN,
            set,
        }
    }

    /// Makes current the info series at `t`: per match key, the one with the newest sample
    /// within the lookback delta; two with the same timestamp are a conflict.
    fn advance(&mut self, t: i64, lookback: i64) -> Result<(), String> {
        self.current.iter_mut().for_each(|c| *c = None);
        let back = t < self.last_t;
        self.last_t = t;
        for (j, s) in self.set.series.iter().enumerate() {
            let Some(cur) = self.cursors.get_mut(j) else {
                continue;
            };
            if back {
                *cur = s.samples.partition_point(|p| p.t <= t);
            } else {
                // Steps move forward: so does each series' position.
                while s.samples.get(*cur).is_some_and(|p| p.t <= t) {
                    *cur += 1;
                }
            }
            let Some(p) = cur.checked_sub(1).and_then(|i| s.samples.get(i)) else {
                continue;
            };
            if p.t <= t - lookback || is_stale_nan(p.v) {
                continue;
            }
            let Some(slot) = self.slot_of.get(j).and_then(|k| self.current.get_mut(*k)) else {
                continue;
            };
            match *slot {
                None => *slot = Some((j, p.t)),
                Some((_, kt)) if kt < p.t => *slot = Some((j, p.t)),
                Some((k, kt)) if kt == p.t => {
                    return Err(format!(
                        "found duplicate series for info metric: existing {} @ {kt}, new {} @ {}",
                        go_string(&self.set.series[k].labels),
                        go_string(&s.labels),
                        p.t
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The slots a series may match: one per info metric whose series have its identifying
    /// labels.
    fn slots_of(&self, l: &Labels) -> Vec<usize> {
        (0..self.set.metrics.len())
            .filter_map(|m| self.slots.get(&sig_of(m, l)).copied())
            .collect()
    }

    /// The current info series of `slots` (a series' [`InfoIndex::slots_of`]), into `out`.
    fn matching(&self, slots: &[usize], out: &mut Vec<usize>) {
        out.clear();
        out.extend(
            slots
                .iter()
                .filter_map(|k| self.current.get(*k).copied().flatten())
                .map(|(j, _)| j),
        );
    }
}

/// Go's `labels.Labels.String()`: `{__name__="a", b="c"}`.
fn go_string(l: &Labels) -> String {
    let legacy = |n: &str| {
        n.chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
    };
    let parts: Vec<String> = l
        .iter()
        .map(|x| {
            if legacy(&x.name) {
                format!("{}={:?}", x.name, &*x.value)
            } else {
                format!("{:?}={:?}", &*x.name, &*x.value)
            }
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

impl Evaluator<'_> {
    /// `info(v [, {selectors}])` at `t`.
    pub(crate) fn info_call(&mut self, c: &Call, args: &[&Expr], t: i64) -> EvalResult<Val> {
        let node = key(c);
        if let Some(st) = self.info_steps.get_mut(&node)
            && let Some(i) = st.grid.index(t)
            && let Some(v) = st.out.get_mut(i).and_then(Option::take)
        {
            self.add_samples(v.len())?;
            return Ok(Val::Vector(v));
        }
        // A time off the planned grid, or one asked for twice, is computed on its own.
        let grid = match self.info_grids.get(&node) {
            Some(g) if g.index(t).is_some() && !self.info_steps.contains_key(&node) => *g,
            _ => Grid::single(t),
        };
        let mut out = self.info_over(args, grid)?;
        let v = grid
            .index(t)
            .and_then(|i| out.get_mut(i))
            .and_then(Option::take)
            .unwrap_or_default();
        if grid.len > 1 {
            self.info_steps.insert(node, InfoSteps { grid, out });
        }
        self.add_samples(v.len())?;
        Ok(Val::Vector(v))
    }

    /// The call's vector at every time of `grid`.
    fn info_over(&mut self, args: &[&Expr], grid: Grid) -> EvalResult<Vec<Option<Vec<Sample>>>> {
        let Some(arg) = args.first() else {
            return exec_err("expected at least 1 argument(s) in call to \"info\", got 0");
        };
        let sel = Selector::new(args.get(1).copied())?;
        let (at, off) = self.info_reference(arg);
        let mut bases = Vec::with_capacity(grid.len);
        for i in 0..grid.len {
            self.check_deadline()?;
            bases.push(self.eval_vector(arg, grid.time(i))?);
        }
        // Whether each label set is an info series, by address: `bases` holds every set until
        // the end, so no address is reused meanwhile.
        let mut is_info: FxHashMap<usize, bool> = FxHashMap::default();
        let mut ids: [FxHashSet<&str>; 2] = Default::default();
        for s in bases.iter().flatten() {
            let info = *is_info
                .entry(Arc::as_ptr(&s.labels) as usize)
                .or_insert_with(|| sel.is_info(&s.labels));
            if info {
                continue;
            }
            for (vals, name) in ids.iter_mut().zip(IDENTIFYING) {
                if let Some(v) = s.labels.get(name) {
                    vals.insert(v);
                }
            }
        }
        let infos = self.select_info(
            &sel,
            &ids,
            at.unwrap_or(grid.first) - off,
            at.unwrap_or(grid.last()) - off,
        )?;
        let keep_unmatched = sel.keeps_unmatched();
        let lookback = self.opts.lookback_delta_ms;
        let mut index = InfoIndex::new(&infos);
        // Per label set (by address, as above): the slots it may match, and its enriched
        // label sets by the info series matched (shared across steps).
        type Enriched = Vec<(Vec<usize>, Arc<Labels>)>;
        let mut per_set: FxHashMap<usize, (Vec<usize>, Enriched)> = FxHashMap::default();
        let mut matched = Vec::new();
        let mut out = Vec::with_capacity(grid.len);
        for (i, base) in bases.iter().enumerate() {
            if base.is_empty() {
                out.push(Some(Vec::new()));
                continue;
            }
            self.check_deadline()?;
            index
                .advance(at.unwrap_or(grid.time(i)) - off, lookback)
                .map_err(QueryError::Execution)?;
            let mut v = Vec::with_capacity(base.len());
            let mut enriched = false;
            for s in base {
                let ptr = Arc::as_ptr(&s.labels) as usize;
                if is_info.get(&ptr).copied().unwrap_or(false) {
                    v.push(s.clone());
                    continue;
                }
                let (slots, done) = per_set
                    .entry(ptr)
                    .or_insert_with(|| (index.slots_of(&s.labels), Vec::new()));
                index.matching(slots, &mut matched);
                if matched.is_empty() {
                    if keep_unmatched {
                        v.push(s.clone());
                    }
                    continue;
                }
                let labels = match done.iter().find(|(m, _)| *m == matched) {
                    Some((_, l)) => l.clone(),
                    None => {
                        let l = match infos
                            .enrich(&sel, &matched, &s.labels)
                            .map_err(QueryError::Execution)?
                        {
                            Some(l) => Arc::new(l),
                            None => s.labels.clone(),
                        };
                        done.push((matched.clone(), l.clone()));
                        l
                    }
                };
                enriched |= !Arc::ptr_eq(&labels, &s.labels);
                v.push(Sample {
                    labels,
                    v: s.v,
                    drop_name: s.drop_name,
                });
            }
            if enriched {
                let mut seen = FxHashSet::default();
                if !v.iter().all(|s| seen.insert(&*s.labels)) {
                    return exec_err("vector cannot contain metrics with the same labelset");
                }
            }
            out.push(Some(v));
        }
        Ok(out)
    }

    /// The info series that may match series with identifying values `ids`, with their samples
    /// for reference times `from..=to`.
    fn select_info(
        &self,
        sel: &Selector,
        ids: &[FxHashSet<&str>; 2],
        from: i64,
        to: i64,
    ) -> EvalResult<InfoSet> {
        if ids.iter().all(FxHashSet::is_empty) {
            return Ok(InfoSet::default());
        }
        let mut ms = Vec::new();
        if ids.iter().map(FxHashSet::len).sum::<usize>() <= MAX_PUSHDOWN_VALUES {
            for (vals, name) in ids.iter().zip(IDENTIFYING) {
                if vals.is_empty() {
                    continue;
                }
                let mut vals: Vec<&str> = vals.iter().copied().collect();
                vals.sort_unstable();
                let re: Vec<String> = vals.into_iter().map(regex::escape).collect();
                ms.push(Matcher::new(MatchOp::Regex, name, re.join("|"))?);
            }
        }
        ms.extend(sel.data.iter().cloned());
        ms.extend(sel.names.iter().cloned());
        let lookback = self.opts.lookback_delta_ms;
        let found = self.q.select(&ms, from - lookback + 1, to)?;
        let found = found
            .into_iter()
            .filter(|s| {
                ids.iter().zip(IDENTIFYING).all(|(vals, name)| {
                    vals.is_empty() || s.labels.get(name).is_some_and(|v| vals.contains(v))
                })
            })
            .map(|s| (s.labels, s.samples))
            .collect();
        Ok(InfoSet::new(found))
    }

    /// The `@` time (if any) and offset the info series are read at, from the first selector
    /// of `e` (upstream's `infoSelectTimestampAndOffset`).
    fn info_reference(&self, e: &Expr) -> (Option<i64>, i64) {
        self.reference_in(e, &mut Vec::new()).unwrap_or((None, 0))
    }

    fn reference_in<'e>(
        &self,
        e: &'e Expr,
        enclosing: &mut Vec<&'e SubqueryExpr>,
    ) -> Option<(Option<i64>, i64)> {
        match e {
            Expr::VectorSelector(vs) => Some(self.anchor(vs, enclosing)),
            Expr::MatrixSelector(ms) => Some(self.anchor(&ms.vs, enclosing)),
            Expr::Subquery(sq) => {
                enclosing.push(sq);
                let r = self.reference_in(&sq.expr, enclosing);
                enclosing.pop();
                r
            }
            // Upstream's traversal order: an aggregation's operand before its parameter.
            Expr::Aggregate(a) => self.reference_in(&a.expr, enclosing).or_else(|| {
                a.param
                    .as_ref()
                    .and_then(|p| self.reference_in(p, enclosing))
            }),
            Expr::Binary(b) => self
                .reference_in(&b.lhs, enclosing)
                .or_else(|| self.reference_in(&b.rhs, enclosing)),
            Expr::Paren(p) => self.reference_in(&p.expr, enclosing),
            Expr::Unary(u) => self.reference_in(&u.expr, enclosing),
            Expr::Call(c) => c
                .args
                .args
                .iter()
                .find_map(|a| self.reference_in(a, enclosing)),
            _ => None,
        }
    }

    /// A selector's `@` time, or else that of the innermost enclosing subquery with one, and
    /// the offsets up to there.
    fn anchor(&self, vs: &VectorSelector, enclosing: &[&SubqueryExpr]) -> (Option<i64>, i64) {
        let mut at = self.resolve_at(&vs.at);
        let mut off = offset_ms(&vs.offset);
        for sq in enclosing.iter().rev() {
            if at.is_some() {
                break;
            }
            off += offset_ms(&sq.offset);
            at = self.resolve_at(&sq.at);
        }
        (at, off)
    }
}

#[cfg(test)]
mod tests;

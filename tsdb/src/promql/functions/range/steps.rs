//! A range function over a plain selector (`rate(x[5m])`) evaluated for a block of steps of a
//! range query at once (see `promql/steps.rs`): per series, the window `(t - range, t]` slides
//! forward instead of being found by two binary searches per step.

use promql_parser::parser::{Expr, MatrixSelector};

use super::{RangeFn, range_fn, series_value};
use crate::promql::QueryError;
use crate::promql::direct::{Direct, DirectSeries};
use crate::promql::eval::{
    EvalResult, Evaluator, Sample, check_deadline, duration_ms, key, offset_ms,
};
use crate::promql::steps::{CHECK_EVERY, StepValues};
use crate::storage::Sample as Point;

impl Evaluator<'_> {
    /// `kind` over `marg` at step `t` of a range query, from the block of steps that holds it;
    /// `None` when the one-pass evaluation does not apply.
    pub(super) fn stepped_range_function(
        &mut self,
        kind: RangeFn,
        marg: &Expr,
        keep_name: bool,
        t: i64,
    ) -> EvalResult<Option<Vec<Sample>>> {
        if self.step_index(t).is_none() {
            return Ok(None);
        }
        let Some(ms) = one_pass_matrix(kind, marg) else {
            return Ok(None);
        };
        // `anchored`/`smoothed` windows take the per-step path.
        if self.modifier(&ms.vs).is_some() {
            return Ok(None);
        }
        let range = duration_ms(&ms.range);
        let off = offset_ms(&ms.vs.offset);
        let series = self.series_of(&ms.vs)?;
        let counter_check = matches!(kind, RangeFn::Rate | RangeFn::Increase);
        self.stepped(key(marg), t, series.len(), |ev, block| {
            let mut sv = StepValues::new(&block);
            for (si, s) in series.iter().enumerate() {
                if si % CHECK_EVERY == 0 {
                    ev.check_deadline()?;
                }
                let mut produced = false;
                slide_window(
                    kind,
                    s.floats(),
                    block.time(0) - off,
                    block.step,
                    block.len,
                    range,
                    |i, n, v| {
                        sv.counts[i] += n;
                        if let Some(v) = v {
                            produced = true;
                            sv.push(
                                i,
                                Sample {
                                    labels: s.labels.clone(),
                                    v,
                                    drop_name: !keep_name,
                                },
                            );
                        }
                    },
                );
                if produced && counter_check {
                    ev.check_counter_name(&s.labels, marg);
                }
            }
            Ok(sv)
        })
    }
}

/// Range-function windows one thread computes before a query's series are split over more. A
/// `rate` window of four samples took about 220 instructions under callgrind (sliding plus
/// the function), so a part is a few hundred microseconds of work against a thread spawn's
/// tens of microseconds.
const WINDOWS_PER_THREAD: usize = 8_192;

impl Evaluator<'_> {
    /// `name(args)` over every step of the range query, series by series, when it is a range
    /// function that [`one_pass_matrix`] accepts (see `promql/direct.rs`).
    pub(crate) fn range_function_series_major(
        &mut self,
        name: &str,
        args: &[&Expr],
    ) -> EvalResult<Option<Direct>> {
        let Some(kind) = range_fn(name) else {
            return Ok(None);
        };
        let Some(marg) = args.first().copied() else {
            return Ok(None);
        };
        let Some(ms) = one_pass_matrix(kind, marg) else {
            return Ok(None);
        };
        if self.modifier(&ms.vs).is_some() {
            return Ok(None);
        }
        let keep_name = name == "last_over_time" || name == "first_over_time";
        let counter_check = matches!(kind, RangeFn::Rate | RangeFn::Increase);
        let range = duration_ms(&ms.range);
        let t0 = self.start - offset_ms(&ms.vs.offset);
        let steps = self.range_steps();
        let series = self.series_of(&ms.vs)?;
        let (start, step, opts) = (self.start, self.step, self.opts);
        // Independent per series: large queries are split over the cores.
        let parts = crate::parallel::parts(series.len() * steps, WINDOWS_PER_THREAD);
        let runs = crate::parallel::map_slices(&series, parts, |run| {
            let mut selected = vec![0usize; steps];
            let mut done = Vec::with_capacity(run.len());
            for (si, s) in run.iter().enumerate() {
                if si % CHECK_EVERY == 0 {
                    check_deadline(opts)?;
                }
                let mut samples = Vec::with_capacity(steps.min(1024));
                slide_window(kind, s.floats(), t0, step, steps, range, |i, n, v| {
                    selected[i] += n;
                    if let Some(v) = v {
                        samples.push(Point {
                            t: start + i as i64 * step,
                            v,
                        });
                    }
                });
                if !samples.is_empty() {
                    done.push(DirectSeries {
                        labels: s.labels.clone(),
                        drop_name: !keep_name,
                        samples,
                    });
                }
            }
            Ok::<_, QueryError>((done, selected))
        });
        let mut out = Direct::new(steps, series.len());
        for run in runs {
            let (done, selected) = run?;
            for (total, n) in out.selected.iter_mut().zip(selected) {
                *total += n;
            }
            if counter_check {
                for s in &done {
                    self.check_counter_name(&s.labels, marg);
                }
            }
            out.series.extend(done);
        }
        Ok(Some(out))
    }
}

/// The matrix selector `marg` that `kind` can be evaluated over in one pass per series: a plain
/// selector (in parentheses or not) without `@`, and a function without scalar parameters.
fn one_pass_matrix(kind: RangeFn, marg: &Expr) -> Option<&MatrixSelector> {
    if matches!(
        kind,
        RangeFn::AbsentOverTime
            | RangeFn::PredictLinear
            | RangeFn::DoubleExponentialSmoothing
            | RangeFn::QuantileOverTime
    ) {
        return None;
    }
    let mut inner = marg;
    while let Expr::Paren(p) = inner {
        inner = &p.expr;
    }
    match inner {
        Expr::MatrixSelector(ms) if ms.vs.at.is_none() => Some(ms),
        _ => None,
    }
}

/// `kind` over the window `(ts - range, ts]` of one series' samples at each of `n` steps
/// `ts = t0 + i * step`: calls `emit(i, samples in the window, value)` for each step whose
/// window holds samples (the value is `None` where the function has none, e.g. `rate` of one
/// sample). Both ends of the window only move forward.
pub(crate) fn slide_window(
    kind: RangeFn,
    pts: &[Point],
    t0: i64,
    step: i64,
    n: usize,
    range: i64,
    mut emit: impl FnMut(usize, usize, Option<f64>),
) {
    let mut lo = pts.partition_point(|p| p.t <= t0 - range);
    let mut hi = lo;
    for i in 0..n {
        let ts = t0 + i as i64 * step;
        while lo < pts.len() && pts[lo].t <= ts - range {
            lo += 1;
        }
        hi = hi.max(lo);
        while hi < pts.len() && pts[hi].t <= ts {
            hi += 1;
        }
        if lo == hi {
            continue;
        }
        let v = series_value(kind, &pts[lo..hi], ts - range, ts, ts, None, None);
        emit(i, hi - lo, v);
    }
}

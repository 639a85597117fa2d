//! Range queries: a range function over a plain selector (`rate(x[5m])`) evaluated for every
//! step in one pass, series by series, with a window sliding forward instead of two binary
//! searches per series and step. Each series' samples are read once, in order, so the work is
//! proportional to samples + steps and stays in cache; the step-wise evaluator then takes each
//! step's vector as it gets there. Results are identical to the per-step path, which remains
//! for instant queries, subquery times off the grid, `@` modifiers and functions with
//! parameters.

use promql_parser::parser::Expr;

use super::{RangeFn, series_value};
use crate::promql::eval::{EvalResult, Evaluator, Sample, StepValues, duration_ms, key, offset_ms};

/// Series between deadline checks.
const CHECK_EVERY: usize = 256;

impl Evaluator<'_> {
    /// `kind` over `marg` at step `t` of a range query, computed with all other steps on first
    /// use; `None` when the one-pass evaluation does not apply.
    pub(super) fn stepped_range_function(
        &mut self,
        kind: RangeFn,
        marg: &Expr,
        keep_name: bool,
        t: i64,
    ) -> EvalResult<Option<Vec<Sample>>> {
        if matches!(
            kind,
            RangeFn::AbsentOverTime
                | RangeFn::PredictLinear
                | RangeFn::DoubleExponentialSmoothing
                | RangeFn::QuantileOverTime
        ) {
            return Ok(None);
        }
        let Some(i) = self.step_index(t) else {
            return Ok(None);
        };
        let mut inner = marg;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        let Expr::MatrixSelector(ms) = inner else {
            return Ok(None);
        };
        if ms.vs.at.is_some() {
            return Ok(None);
        }
        let node = key(marg);
        if !self.step_values.contains_key(&node) {
            let range = duration_ms(&ms.range);
            let off = offset_ms(&ms.vs.offset);
            let series = self.series_of(&ms.vs)?;
            let n = self.step_count();
            let mut sv = StepValues {
                out: (0..n).map(|_| Some(Vec::new())).collect(),
                counts: vec![0; n],
            };
            let counter_check = matches!(kind, RangeFn::Rate | RangeFn::Increase);
            for (si, s) in series.iter().enumerate() {
                if si % CHECK_EVERY == 0 {
                    self.check_deadline()?;
                }
                let pts = s.floats();
                let (mut lo, mut hi) = (0, 0);
                let mut produced = false;
                for step in 0..n {
                    let ts = self.start + step as i64 * self.step - off;
                    // The window is (ts - range, ts]; both ends only move forward.
                    while lo < pts.len() && pts[lo].t <= ts - range {
                        lo += 1;
                    }
                    if hi < lo {
                        hi = lo;
                    }
                    while hi < pts.len() && pts[hi].t <= ts {
                        hi += 1;
                    }
                    if lo == hi {
                        continue;
                    }
                    sv.counts[step] += hi - lo;
                    let Some(v) = series_value(kind, &pts[lo..hi], ts - range, ts, ts, None, None)
                    else {
                        continue;
                    };
                    produced = true;
                    if let Some(Some(out)) = sv.out.get_mut(step) {
                        out.push(Sample {
                            labels: s.labels.clone(),
                            v,
                            drop_name: !keep_name,
                        });
                    }
                }
                if produced && counter_check {
                    self.check_counter_name(&s.labels, marg);
                }
            }
            self.step_values.insert(node, sv);
        }
        self.take_step_value(node, i)
    }
}

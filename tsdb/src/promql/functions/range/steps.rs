//! A range function over a plain selector (`rate(x[5m])`) evaluated for a block of steps of a
//! range query at once (see `promql/steps.rs`): per series, the window `(t - range, t]` slides
//! forward instead of being found by two binary searches per step.

use promql_parser::parser::Expr;

use super::{RangeFn, series_value};
use crate::promql::eval::{EvalResult, Evaluator, Sample, duration_ms, key, offset_ms};
use crate::promql::steps::{CHECK_EVERY, StepValues};

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
        if matches!(
            kind,
            RangeFn::AbsentOverTime
                | RangeFn::PredictLinear
                | RangeFn::DoubleExponentialSmoothing
                | RangeFn::QuantileOverTime
        ) || self.step_index(t).is_none()
        {
            return Ok(None);
        }
        let mut inner = marg;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        let Expr::MatrixSelector(ms) = inner else {
            return Ok(None);
        };
        if ms.vs.at.is_some() || self.modifier(&ms.vs).is_some() {
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
                let pts = s.floats();
                // The window is (ts - range, ts]; both ends only move forward.
                let first = block.time(0) - off;
                let mut lo = pts.partition_point(|p| p.t <= first - range);
                let mut hi = lo;
                let mut produced = false;
                for i in 0..block.len {
                    let ts = block.time(i) - off;
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
                    sv.counts[i] += hi - lo;
                    let Some(v) = series_value(kind, &pts[lo..hi], ts - range, ts, ts, None, None)
                    else {
                        continue;
                    };
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
                if produced && counter_check {
                    ev.check_counter_name(&s.labels, marg);
                }
            }
            Ok(sv)
        })
    }
}

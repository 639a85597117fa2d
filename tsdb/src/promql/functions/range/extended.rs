//! Range functions over anchored and smoothed range selectors (see `promql/extended.rs`):
//! `rate`, `increase` and `delta` from the window's edge values without extrapolation
//! (upstream's `extendedRate`), `changes` and `resets` from the anchor sample on
//! (`pickFirstSampleIndices`).

use promql_parser::parser::{Expr, MatrixSelector};

use super::{RangeFn, series_value};
use crate::promql::eval::{EvalResult, Evaluator, Sample, Val, duration_ms, offset_ms};
use crate::promql::extended::{first_index, last_index, pick_left, pick_right};
use crate::promql::syntax::RangeModifier;
use crate::storage::Sample as Point;

/// Counter resets between `left`, `points` and `right` (upstream's `correctForCounterResets`).
fn correct_for_counter_resets(left: f64, right: f64, points: &[Point]) -> f64 {
    let mut correction = 0.0;
    let mut prev = left;
    for p in points {
        if p.v < prev {
            correction += prev;
        }
        prev = p.v;
    }
    if right < prev {
        correction += prev;
    }
    correction
}

/// `rate`/`increase`/`delta` over the window `(start, end]` of an anchored or smoothed
/// selector, from its samples `f` (read from a lookback before `start`, and for smoothed
/// windows a lookback after `end`).
pub(super) fn extended_rate(
    f: &[Point],
    start: i64,
    end: i64,
    smoothed: bool,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if f.is_empty() {
        return None;
    }
    let mut last = f.len() - 1;
    let mut first = first_index(f, last, start);
    if smoothed {
        last = last_index(f, last, end);
    }
    if f[last].t <= start || (smoothed && f[first].t > end) {
        return None;
    }
    let left = pick_left(f, first, start, smoothed, is_counter);
    let right = pick_right(f, last, end, smoothed, is_counter);
    let mut result = right - left;
    if is_counter {
        // Only samples strictly inside the window: the edges are `left` and `right`.
        if f[first].t <= start {
            first += 1;
        }
        let inner_end = if f[last].t >= end { last } else { last + 1 };
        let inner = if first < inner_end {
            &f[first..inner_end]
        } else {
            &[]
        };
        result += correct_for_counter_resets(left, right, inner);
    }
    if is_rate {
        result /= (end - start) as f64 / 1000.0;
    }
    Some(result)
}

/// The samples `changes` and `resets` see in an anchored window: the last one at or before
/// `start` and all after it; `None` when none is after `start`.
fn anchored(f: &[Point], start: i64) -> Option<&[Point]> {
    let after = f.partition_point(|p| p.t <= start);
    (after < f.len()).then(|| &f[after.saturating_sub(1)..])
}

impl Evaluator<'_> {
    /// Range function `kind` over the anchored or smoothed selector `ms` (argument `marg`)
    /// at `t`. The function was checked to accept the modifier.
    pub(super) fn extended_range_function(
        &mut self,
        kind: RangeFn,
        ms: &MatrixSelector,
        m: RangeModifier,
        marg: &Expr,
        t: i64,
    ) -> EvalResult<Val> {
        let vs = &ms.vs;
        let end = self.resolve_at(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let start = end - duration_ms(&ms.range);
        let lb = self.opts.lookback_delta_ms;
        let smoothed = m == RangeModifier::Smoothed;
        let hi = if smoothed { end + lb } else { end };
        let mut out = Vec::new();
        let mut n = 0;
        for (labels, f) in self.window_samples(vs, start - lb, hi)? {
            n += f.len();
            let v = match kind {
                RangeFn::Rate => extended_rate(&f, start, end, smoothed, true, true),
                RangeFn::Increase => extended_rate(&f, start, end, smoothed, true, false),
                RangeFn::Delta => extended_rate(&f, start, end, smoothed, false, false),
                RangeFn::Changes | RangeFn::Resets => anchored(&f, start)
                    .and_then(|w| series_value(kind, w, start, end, t, None, None)),
                _ => None,
            };
            let Some(v) = v else {
                continue;
            };
            if matches!(kind, RangeFn::Rate | RangeFn::Increase) {
                self.check_counter_name(&labels, marg);
            }
            out.push(Sample {
                labels,
                v,
                drop_name: true,
            });
        }
        self.add_samples(n)?;
        Ok(Val::Vector(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(i64, f64)]) -> Vec<Point> {
        v.iter().map(|&(t, v)| Point { t, v }).collect()
    }

    #[test]
    fn anchored_increase_starts_at_the_anchor() {
        // Upstream's PROM-52 data: 1 2 3 4 5 9 10 … every 15 s; increase over (20s, 80s].
        let f = pts(&[
            (0, 1.0),
            (15_000, 2.0),
            (30_000, 3.0),
            (45_000, 4.0),
            (60_000, 5.0),
            (75_000, 9.0),
        ]);
        assert_eq!(
            extended_rate(&f, 20_000, 80_000, false, true, false),
            Some(9.0 - 2.0)
        );
    }

    #[test]
    fn smoothed_rate_interpolates_across_a_reset() {
        // `metric 100 10` every 15 s, rate over (2s, 12s] smoothed: 0.666….
        let f = pts(&[(0, 100.0), (15_000, 10.0)]);
        let r = extended_rate(&f, 2_000, 12_000, true, true, true).unwrap_or(f64::NAN);
        assert!((r - 0.666_666_666_666_667).abs() < 1e-9, "{r}");
        // Data only after the window: nothing.
        let after = pts(&[(20_000, 1.0), (30_000, 2.0)]);
        assert_eq!(extended_rate(&after, 2_000, 12_000, true, true, true), None);
    }

    #[test]
    fn anchored_changes_keep_one_sample_before_the_window() {
        let f = pts(&[(0, 2.0), (120_000, 1.0), (480_000, 0.0)]);
        // The window (7m, 8m] read from 2m on: the sample at 2m is the anchor.
        assert_eq!(anchored(&f[1..], 420_000).map(<[Point]>::len), Some(2));
        // Read from after 2m: no anchor, the samples inside alone.
        assert_eq!(anchored(&f[2..], 420_000).map(<[Point]>::len), Some(1));
        assert_eq!(anchored(&f, 480_000), None);
    }
}

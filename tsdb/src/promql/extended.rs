//! Extended range selectors (Prometheus's `promql-extended-range-selectors`): `anchored` and
//! `smoothed` selectors, as upstream's `promql/engine.go` and `functions.go` evaluate them.
//!
//! - `foo smoothed` (an instant selector): the value at the evaluation time interpolated
//!   linearly between the samples around it within the lookback delta either side, or the
//!   last sample when none follows.
//! - `foo[5m] anchored`: the window also holds the last sample at or before its start (within
//!   the lookback delta), so `increase` and `changes` see what happened across the start.
//! - `foo[5m] smoothed`: the values at both edges of the window are interpolated from the
//!   samples around them (within the lookback delta).
//!
//! Only some functions accept them (upstream's `AnchoredSafeFunctions` and
//! `SmoothedSafeFunctions`); a range selector alone yields the window with its edge values
//! (`extendFloats`). These selectors always take the per-step path.

use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};

use super::eval::{EvalResult, Evaluator, Points, Sample, Series, exec_err, offset_ms};
use super::syntax::RangeModifier;
use crate::storage::Sample as Point;

/// Functions that accept an anchored range selector.
const ANCHORED_SAFE: &[&str] = &["changes", "delta", "increase", "rate", "resets"];

/// Functions that accept a smoothed range selector.
const SMOOTHED_SAFE: &[&str] = &["delta", "increase", "rate"];

/// Linear interpolation at `t` between two samples; for a counter that reset between them,
/// from zero (upstream's `interpolate`).
pub(crate) fn interpolate(p1: Point, p2: Point, t: i64, is_counter: bool) -> f64 {
    let y1 = if is_counter && p2.v < p1.v { 0.0 } else { p1.v };
    y1 + (p2.v - y1) * (t - p1.t) as f64 / (p2.t - p1.t) as f64
}

/// The value at the window's start: the first sample's, or interpolated at `start` when a
/// smoothed window's first sample precedes it (upstream's `pickOrInterpolateLeft`).
pub(crate) fn pick_left(f: &[Point], first: usize, start: i64, smoothed: bool, c: bool) -> f64 {
    if smoothed && f[first].t < start && first + 1 < f.len() {
        return interpolate(f[first], f[first + 1], start, c);
    }
    f[first].v
}

/// The value at the window's end (upstream's `pickOrInterpolateRight`).
pub(crate) fn pick_right(f: &[Point], last: usize, end: i64, smoothed: bool, c: bool) -> f64 {
    if smoothed && last > 0 && f[last].t > end {
        return interpolate(f[last - 1], f[last], end, c);
    }
    f[last].v
}

/// Index of the last sample at or before `start` among `f[..n]`, or 0 (upstream's
/// `max(0, sort.Search(n, T > start) - 1)`).
pub(crate) fn first_index(f: &[Point], n: usize, start: i64) -> usize {
    f[..n].partition_point(|p| p.t <= start).saturating_sub(1)
}

/// Index of the first sample at or after `end` among `f[..n]`, or `n`.
pub(crate) fn last_index(f: &[Point], n: usize, end: i64) -> usize {
    f[..n].partition_point(|p| p.t < end)
}

/// The window `(start, end]` of samples `f` (read from a lookback before `start`, and for
/// smoothed windows a lookback after `end`) as an anchored or smoothed range selector yields
/// it: the edge values at `start` and `end` around the samples strictly inside (upstream's
/// `extendFloats`).
pub(crate) fn extend_floats(f: &[Point], start: i64, end: i64, smoothed: bool) -> Vec<Point> {
    if f.is_empty() {
        return Vec::new();
    }
    let mut last = f.len() - 1;
    let mut first = first_index(f, last, start);
    if smoothed {
        last = last_index(f, last, end);
    }
    if f[last].t <= start {
        return Vec::new();
    }
    let left = pick_left(f, first, start, smoothed, false);
    let right = pick_right(f, last, end, smoothed, false);
    if f[first].t <= start {
        first += 1;
    }
    let inner_end = if f[last].t >= end { last } else { last + 1 };
    let mut out = Vec::with_capacity(inner_end.saturating_sub(first) + 2);
    out.push(Point { t: start, v: left });
    if first < inner_end {
        out.extend_from_slice(&f[first..inner_end]);
    }
    out.push(Point { t: end, v: right });
    out
}

impl Evaluator<'_> {
    /// The range selector under `e` (through parentheses) if it is anchored or smoothed.
    pub(crate) fn modified_matrix<'e>(
        &self,
        e: &'e Expr,
    ) -> Option<(&'e MatrixSelector, RangeModifier)> {
        match e {
            Expr::Paren(p) => self.modified_matrix(&p.expr),
            Expr::MatrixSelector(ms) => self.modifier(&ms.vs).map(|m| (ms, m)),
            _ => None,
        }
    }

    /// Upstream's check that a function accepts its anchored or smoothed argument.
    pub(crate) fn check_modified_args(&self, name: &str, args: &[&Expr]) -> EvalResult<()> {
        for a in args {
            let Some((_, m)) = self.modified_matrix(a) else {
                continue;
            };
            let (word, safe) = match m {
                RangeModifier::Anchored => ("anchored", ANCHORED_SAFE),
                RangeModifier::Smoothed => ("smoothed", SMOOTHED_SAFE),
            };
            if !safe.contains(&name) {
                return exec_err(format!(
                    "{word} modifier can only be used with: {} - not with {name}",
                    safe.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The samples of a selector's series within `(lo, hi]`, staleness markers skipped.
    pub(crate) fn window_samples(
        &mut self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
    ) -> EvalResult<Vec<(std::sync::Arc<crate::labels::Labels>, Vec<Point>)>> {
        let series = self.series_of(vs)?;
        let mut out = Vec::new();
        for s in series.iter() {
            let f = s.floats();
            let a = f.partition_point(|p| p.t <= lo);
            let b = f.partition_point(|p| p.t <= hi);
            if a < b {
                out.push((s.labels.clone(), f[a..b].to_vec()));
            }
        }
        Ok(out)
    }

    /// A smoothed instant selector at `t` (upstream's `smoothSeries` at one step).
    pub(crate) fn smoothed_selector(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> EvalResult<Vec<Sample>> {
        let ts = self.resolve_at(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let lb = self.opts.lookback_delta_ms;
        let mut out = Vec::new();
        for (labels, w) in self.window_samples(vs, ts - lb, ts + lb)? {
            let i = w.partition_point(|p| p.t < ts);
            let v = match (w.get(i), i.checked_sub(1).and_then(|j| w.get(j))) {
                (Some(next), _) if next.t == ts => next.v,
                (Some(next), Some(prev)) => interpolate(*prev, *next, ts, false),
                (None, Some(prev)) => prev.v,
                _ => continue,
            };
            out.push(Sample {
                labels,
                v,
                drop_name: false,
            });
        }
        self.add_samples(out.len())?;
        Ok(out)
    }

    /// An anchored or smoothed range selector at `t`: each series' window with its edge
    /// values (upstream's `matrixSelector`).
    pub(crate) fn extended_matrix(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        m: RangeModifier,
        t: i64,
    ) -> EvalResult<Vec<Series>> {
        let end = self.resolve_at(&vs.at).unwrap_or(t) - offset_ms(&vs.offset);
        let start = end - range;
        let lb = self.opts.lookback_delta_ms;
        let smoothed = m == RangeModifier::Smoothed;
        let hi = if smoothed { end + lb } else { end };
        let mut out = Vec::new();
        let mut n = 0;
        for (labels, w) in self.window_samples(vs, start - lb, hi)? {
            let points = extend_floats(&w, start, end, smoothed);
            if points.is_empty() {
                continue;
            }
            n += points.len();
            out.push(Series {
                labels,
                points: Points::Owned(points),
                drop_name: false,
            });
        }
        self.add_samples(n)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(i64, f64)]) -> Vec<Point> {
        v.iter().map(|&(t, v)| Point { t, v }).collect()
    }

    #[test]
    fn interpolates_counters_from_zero_after_a_reset() {
        let (a, b) = (Point { t: 0, v: 100.0 }, Point { t: 15, v: 10.0 });
        assert_eq!(interpolate(a, b, 5, false), 70.0);
        assert!((interpolate(a, b, 12, true) - 8.0).abs() < 1e-12);
    }

    #[test]
    fn extend_floats_adds_edge_values() {
        // Samples every 10 s; window (15, 35].
        let f = pts(&[(0, 0.0), (10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]);
        // Anchored: the sample at 10 is the left edge, the last one inside the right.
        let a = extend_floats(&f[..4], 15, 35, false);
        assert_eq!(a, pts(&[(15, 1.0), (20, 2.0), (30, 3.0), (35, 3.0)]));
        // Smoothed: both edges interpolated.
        let s = extend_floats(&f, 15, 35, true);
        assert_eq!(s, pts(&[(15, 1.5), (20, 2.0), (30, 3.0), (35, 3.5)]));
        // Nothing after the start: nothing.
        assert!(extend_floats(&f[..2], 15, 35, false).is_empty());
    }
}

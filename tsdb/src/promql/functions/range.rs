//! Range-vector functions: `rate`/`increase`/`delta` with Prometheus's extrapolation, `irate`,
//! `idelta`, `resets`, `changes`, `deriv`, `predict_linear`, `double_exponential_smoothing`
//! and the `*_over_time` family.

mod extended;
mod steps;

use promql_parser::parser::Expr;

use super::super::aggregate::{kahan_inc, quantile};
use super::super::eval::{EvalResult, Evaluator, Sample, Val, duration_ms, exec_err, offset_ms};
use super::{absent_labels, format_g};
use crate::labels::Labels;
use crate::storage::Sample as Point;

/// A range-vector function, resolved once per call rather than per series.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Resets,
    Changes,
    Deriv,
    PredictLinear,
    DoubleExponentialSmoothing,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    StddevOverTime,
    StdvarOverTime,
    LastOverTime,
    FirstOverTime,
    PresentOverTime,
    AbsentOverTime,
    MadOverTime,
    QuantileOverTime,
    TsOfMaxOverTime,
    TsOfMinOverTime,
    TsOfLastOverTime,
    TsOfFirstOverTime,
}

fn range_fn(name: &str) -> Option<RangeFn> {
    Some(match name {
        "rate" => RangeFn::Rate,
        "increase" => RangeFn::Increase,
        "delta" => RangeFn::Delta,
        "irate" => RangeFn::Irate,
        "idelta" => RangeFn::Idelta,
        "resets" => RangeFn::Resets,
        "changes" => RangeFn::Changes,
        "deriv" => RangeFn::Deriv,
        "predict_linear" => RangeFn::PredictLinear,
        "double_exponential_smoothing" => RangeFn::DoubleExponentialSmoothing,
        "avg_over_time" => RangeFn::AvgOverTime,
        "min_over_time" => RangeFn::MinOverTime,
        "max_over_time" => RangeFn::MaxOverTime,
        "sum_over_time" => RangeFn::SumOverTime,
        "count_over_time" => RangeFn::CountOverTime,
        "stddev_over_time" => RangeFn::StddevOverTime,
        "stdvar_over_time" => RangeFn::StdvarOverTime,
        "last_over_time" => RangeFn::LastOverTime,
        "first_over_time" => RangeFn::FirstOverTime,
        "present_over_time" => RangeFn::PresentOverTime,
        "absent_over_time" => RangeFn::AbsentOverTime,
        "mad_over_time" => RangeFn::MadOverTime,
        "quantile_over_time" => RangeFn::QuantileOverTime,
        "ts_of_max_over_time" => RangeFn::TsOfMaxOverTime,
        "ts_of_min_over_time" => RangeFn::TsOfMinOverTime,
        "ts_of_last_over_time" => RangeFn::TsOfLastOverTime,
        "ts_of_first_over_time" => RangeFn::TsOfFirstOverTime,
        _ => return None,
    })
}

/// The window `(end - range, end]` a matrix argument covers at step `t`.
fn window(ev: &Evaluator<'_>, e: &Expr, t: i64) -> Option<(i64, i64)> {
    match e {
        Expr::Paren(p) => window(ev, &p.expr, t),
        Expr::MatrixSelector(ms) => {
            let end = ev.resolve_at(&ms.vs.at).unwrap_or(t) - offset_ms(&ms.vs.offset);
            Some((end - duration_ms(&ms.range), end))
        }
        Expr::Subquery(sq) => {
            let end = ev.resolve_at(&sq.at).unwrap_or(t) - offset_ms(&sq.offset);
            Some((end - duration_ms(&sq.range), end))
        }
        _ => None,
    }
}

fn extrapolated_rate(
    pts: &[Point],
    start: i64,
    end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let first = pts[0];
    let last = pts[pts.len() - 1];
    let mut result = last.v - first.v;
    if is_counter {
        for w in pts.windows(2) {
            if w[1].v < w[0].v {
                result += w[0].v;
            }
        }
    }
    let mut to_start = (first.t - start) as f64 / 1000.0;
    let mut to_end = (end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg = sampled / (pts.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter {
        let mut to_zero = to_start;
        if result > 0.0 && first.v >= 0.0 {
            to_zero = sampled * (first.v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = 1.0;
    if sampled != 0.0 {
        factor = (sampled + to_start + to_end) / sampled;
    }
    if is_rate {
        factor /= (end - start) as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(pts: &[Point], is_rate: bool) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let a = pts[pts.len() - 2];
    let b = pts[pts.len() - 1];
    let interval = b.t - a.t;
    if interval == 0 {
        return None;
    }
    let mut v = b.v;
    // A NaN never counts as a reset.
    if !is_rate || b.v.partial_cmp(&a.v) != Some(std::cmp::Ordering::Less) {
        v = b.v - a.v;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

pub(crate) fn linear_regression(pts: &[Point], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init = pts[0].v;
    let mut const_y = true;
    for (i, p) in pts.iter().enumerate() {
        if const_y && i > 0 && p.v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn avg_over_time(pts: &[Point]) -> f64 {
    let (mut sum, mut count) = (pts[0].v, 1.0);
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incremental = false;
    for (i, p) in pts[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(p.v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(p.v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

fn variance(pts: &[Point]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in pts {
        count += 1.0;
        let delta = p.v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (p.v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

fn compare_over_time(pts: &[Point], better: fn(f64, f64) -> bool, ts: bool) -> f64 {
    let mut best = pts[0].v;
    let mut best_t = pts[0].t;
    for p in pts {
        if better(p.v, best) {
            best = p.v;
            best_t = p.t;
        }
    }
    if ts { best_t as f64 / 1000.0 } else { best }
}

impl Evaluator<'_> {
    /// Evaluates `name` if it is a range-vector function.
    pub(crate) fn range_function(
        &mut self,
        name: &str,
        args: &[&Expr],
        t: i64,
    ) -> EvalResult<Option<Val>> {
        let Some(kind) = range_fn(name) else {
            return Ok(None);
        };
        let counter_check = matches!(kind, RangeFn::Rate | RangeFn::Increase);
        let mi = if name == "quantile_over_time" { 1 } else { 0 };
        let marg = args[mi];
        let keep_name = name == "last_over_time" || name == "first_over_time";
        if let Some((ms, m)) = self.modified_matrix(marg) {
            return self.extended_range_function(kind, ms, m, marg, t).map(Some);
        }
        if let Some(v) = self.stepped_range_function(kind, marg, keep_name, t)? {
            return Ok(Some(Val::Vector(v)));
        }
        let Some((start, end)) = window(self, marg, t) else {
            return exec_err(format!("expected a range vector argument for {name}"));
        };
        let matrix = self.eval_matrix(marg, t)?;
        if name == "absent_over_time" {
            if matrix.is_empty() {
                return Ok(Some(Val::Vector(vec![Sample {
                    labels: absent_labels(marg).into(),
                    v: 1.0,
                    drop_name: false,
                }])));
            }
            return Ok(Some(Val::Vector(Vec::new())));
        }
        // Scalar parameters.
        let p1 = match name {
            "quantile_over_time" => Some(self.eval_scalar(args[0], t)?),
            "predict_linear" | "double_exponential_smoothing" => {
                Some(self.eval_scalar(args[1], t)?)
            }
            _ => None,
        };
        let p2 = match name {
            "double_exponential_smoothing" => Some(self.eval_scalar(args[2], t)?),
            _ => None,
        };
        if !matrix.is_empty() {
            self.check_params(kind, p1, p2, args)?;
        }
        let mut out = Vec::with_capacity(matrix.len());
        for s in matrix {
            let Some(v) = series_value(kind, &s.points, start, end, t, p1, p2) else {
                continue;
            };
            if counter_check {
                self.check_counter_name(&s.labels, marg);
            }
            out.push(Sample {
                labels: s.labels,
                v,
                drop_name: s.drop_name || !keep_name,
            });
        }
        Ok(Some(Val::Vector(out)))
    }

    /// Checks the scalar parameters of `kind` once a call has series to apply them to, as
    /// Prometheus does (errors for `double_exponential_smoothing`, a warning for quantiles).
    fn check_params(
        &mut self,
        kind: RangeFn,
        p1: Option<f64>,
        p2: Option<f64>,
        args: &[&Expr],
    ) -> EvalResult<()> {
        match kind {
            RangeFn::DoubleExponentialSmoothing => {
                let sf = p1.unwrap_or(f64::NAN);
                let tf = p2.unwrap_or(f64::NAN);
                if sf.is_nan() || sf <= 0.0 || sf >= 1.0 {
                    return exec_err(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                    ));
                }
                if tf.is_nan() || tf <= 0.0 || tf >= 1.0 {
                    return exec_err(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                    ));
                }
            }
            RangeFn::QuantileOverTime => {
                let q = p1.unwrap_or(f64::NAN);
                if q.is_nan() || !(0.0..=1.0).contains(&q) {
                    self.warn_at(
                        format!(
                            "quantile value should be between 0 and 1, got {}",
                            format_g(q)
                        ),
                        args[0],
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Prometheus's info annotation for `rate`/`increase` over a metric not named as a counter.
    pub(super) fn check_counter_name(&mut self, labels: &Labels, marg: &Expr) {
        let metric = labels.metric_name().unwrap_or("");
        if !metric.is_empty()
            && !["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|x| metric.ends_with(x))
        {
            self.info_at(
                format!(
                    "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}"
                ),
                marg,
            );
        }
    }
}

/// The value of range function `kind` over one series' samples `pts` in the window
/// `(start, end]` evaluated at `t`; `None` when the function yields no sample for it.
/// Parameters were checked by [`Evaluator::check_params`].
fn series_value(
    kind: RangeFn,
    pts: &[Point],
    start: i64,
    end: i64,
    t: i64,
    p1: Option<f64>,
    p2: Option<f64>,
) -> Option<f64> {
    if pts.is_empty() {
        return None;
    }
    match kind {
        RangeFn::Rate => extrapolated_rate(pts, start, end, true, true),
        RangeFn::Increase => extrapolated_rate(pts, start, end, true, false),
        RangeFn::Delta => extrapolated_rate(pts, start, end, false, false),
        RangeFn::Irate => instant_value(pts, true),
        RangeFn::Idelta => instant_value(pts, false),
        RangeFn::Resets => Some(pts.windows(2).filter(|w| w[1].v < w[0].v).count() as f64),
        RangeFn::Changes => Some(
            pts.windows(2)
                .filter(|w| w[1].v != w[0].v && !(w[1].v.is_nan() && w[0].v.is_nan()))
                .count() as f64,
        ),
        RangeFn::Deriv => (pts.len() >= 2).then(|| linear_regression(pts, pts[0].t).0),
        RangeFn::PredictLinear => (pts.len() >= 2).then(|| {
            let (slope, icpt) = linear_regression(pts, t);
            slope * p1.unwrap_or(0.0) + icpt
        }),
        RangeFn::DoubleExponentialSmoothing => {
            let sf = p1.unwrap_or(f64::NAN);
            let tf = p2.unwrap_or(f64::NAN);
            if pts.len() < 2 {
                return None;
            }
            let (mut s0, mut s1) = (0.0, pts[0].v);
            let mut b = pts[1].v - pts[0].v;
            for (i, p) in pts.iter().enumerate().skip(1) {
                let x = sf * p.v;
                if i > 1 {
                    b = tf * (s1 - s0) + (1.0 - tf) * b;
                }
                let y = (1.0 - sf) * (s1 + b);
                s0 = s1;
                s1 = x + y;
            }
            Some(s1)
        }
        RangeFn::AvgOverTime => Some(avg_over_time(pts)),
        RangeFn::MinOverTime => Some(compare_over_time(pts, |c, m| c < m || m.is_nan(), false)),
        RangeFn::MaxOverTime => Some(compare_over_time(pts, |c, m| c > m || m.is_nan(), false)),
        RangeFn::TsOfMinOverTime => Some(compare_over_time(pts, |c, m| c <= m || m.is_nan(), true)),
        RangeFn::TsOfMaxOverTime => Some(compare_over_time(pts, |c, m| c >= m || m.is_nan(), true)),
        RangeFn::TsOfLastOverTime => Some(pts[pts.len() - 1].t as f64 / 1000.0),
        RangeFn::TsOfFirstOverTime => Some(pts[0].t as f64 / 1000.0),
        RangeFn::SumOverTime => {
            let (mut sum, mut c) = (0.0, 0.0);
            for p in pts {
                (sum, c) = kahan_inc(p.v, sum, c);
            }
            Some(if sum.is_infinite() { sum } else { sum + c })
        }
        RangeFn::CountOverTime => Some(pts.len() as f64),
        RangeFn::StddevOverTime => Some(variance(pts).sqrt()),
        RangeFn::StdvarOverTime => Some(variance(pts)),
        RangeFn::LastOverTime => Some(pts[pts.len() - 1].v),
        RangeFn::FirstOverTime => Some(pts[0].v),
        RangeFn::PresentOverTime => Some(1.0),
        // Handled by the caller.
        RangeFn::AbsentOverTime => None,
        RangeFn::MadOverTime => {
            if pts.iter().any(|p| p.v.is_nan()) {
                Some(f64::NAN)
            } else {
                let mut vals: Vec<f64> = pts.iter().map(|p| p.v).collect();
                let median = quantile(0.5, &mut vals);
                let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
                Some(quantile(0.5, &mut dev))
            }
        }
        RangeFn::QuantileOverTime => {
            let mut vals: Vec<f64> = pts.iter().map(|p| p.v).collect();
            Some(quantile(p1.unwrap_or(f64::NAN), &mut vals))
        }
    }
}

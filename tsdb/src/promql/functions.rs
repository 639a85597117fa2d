//! PromQL functions: dispatch by name, instant-vector math, labels, sorting, time and date.
//! Range-vector functions live in `functions/range.rs`, classic histograms in
//! `functions/histogram.rs`, `info()` in `functions/info.rs`.

mod histogram;
pub(crate) mod info;
mod range;

use promql_parser::parser::{Call, Expr};
use regex::Regex;

use super::eval::{EvalResult, Evaluator, Sample, Val, exec_err};
use super::heap;
use crate::labels::{Labels, METRIC_NAME};

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn format_float(f: f64) -> String {
    super::value::format_value(f)
}

/// Go's `%g` formatting of a float.
pub(crate) fn format_g(f: f64) -> String {
    if !f.is_finite() {
        return format_float(f);
    }
    let a = f.abs();
    if a == 0.0 || (1e-4..1e21).contains(&a) {
        format!("{f}")
    } else {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        }
    }
}

/// Natural ordering of label values (the `natsort` package Prometheus uses): digit runs
/// compare as integers, other runs as strings.
pub(crate) fn natsort_less(a: &str, b: &str) -> bool {
    fn chunks(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut digit: Option<bool> = None;
        for (i, c) in s.char_indices() {
            let d = c.is_ascii_digit();
            if digit.is_some_and(|p| p != d) {
                out.push(&s[start..i]);
                start = i;
            }
            digit = Some(d);
        }
        if start < s.len() {
            out.push(&s[start..]);
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (i, x) in ca.iter().enumerate() {
        let Some(y) = cb.get(i) else {
            return false;
        };
        let last = |eq: bool| -> Option<bool> {
            if !eq {
                None
            } else if i == ca.len() - 1 {
                Some(true)
            } else if i == cb.len() - 1 {
                Some(false)
            } else {
                None
            }
        };
        if let (Ok(p), Ok(q)) = (x.parse::<i64>(), y.parse::<i64>()) {
            if p == q {
                if let Some(r) = last(true) {
                    return r;
                }
                continue;
            }
            return p < q;
        }
        if x == y {
            if let Some(r) = last(true) {
                return r;
            }
            continue;
        }
        return x < y;
    }
    false
}

/// Prometheus's `FormatOpenMetricsFloat`: shortest form, integers with `.0`.
pub(crate) fn format_openmetrics(f: f64) -> String {
    if f.is_nan() || f.is_infinite() {
        return format_float(f);
    }
    let s = format_g(f);
    if s.contains(['.', 'e']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// Days since the epoch to (year, month 1..=12, day 1..=31) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `math.Max`: NaN if either is NaN, and +0 over -0 (Rust's `f64::max` ignores NaN).
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN if either is NaN, and -0 over +0.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else {
        a.min(b)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_part(name: &str, secs: f64) -> f64 {
    // Go's `time.Unix(int64(v), 0)`: the conversion truncates toward zero.
    let s = secs.trunc() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match name {
        "minute" => ((sod / 60) % 60) as f64,
        "hour" => (sod / 3600) as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
            let leap = if m > 2 && is_leap(y) { 1 } else { 0 };
            (CUM[(m - 1) as usize] + d + leap) as f64
        }
        "month" => m as f64,
        "year" => y as f64,
        _ => {
            // days_in_month
            const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            let mut n = DAYS[(m - 1) as usize];
            if m == 2 && is_leap(y) {
                n += 1;
            }
            n as f64
        }
    }
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "rad" => |f| f * std::f64::consts::PI / 180.0,
        "deg" => |f| f * 180.0 / std::f64::consts::PI,
        "sgn" => |f: f64| {
            if f < 0.0 {
                -1.0
            } else if f > 0.0 {
                1.0
            } else {
                f
            }
        },
        _ => return None,
    })
}

fn map_values(v: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    v.into_iter()
        .map(|s| Sample {
            v: f(s.v),
            drop_name: true,
            labels: s.labels,
        })
        .collect()
}

/// Labels `absent()` gives its result: the selector's equality matchers.
pub(crate) fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut l = Labels::empty();
    let mut has: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && !has.contains(&m.name.as_str()) {
            l = l.with(&m.name, &m.value);
            has.push(&m.name);
        } else {
            l = l.with(&m.name, "");
        }
    }
    l
}

fn string_arg(e: &Expr) -> EvalResult<&str> {
    match e {
        Expr::StringLiteral(s) => Ok(&s.val),
        Expr::Paren(p) => string_arg(&p.expr),
        _ => exec_err("expected a string literal"),
    }
}

fn check_unique(v: &[Sample]) -> EvalResult<()> {
    let mut seen = std::collections::HashSet::new();
    for s in v {
        let key = if s.drop_name {
            s.labels.without(super::is_metadata_label)
        } else {
            (*s.labels).clone()
        };
        if !seen.insert(key) {
            return exec_err("vector cannot contain metrics with the same labelset");
        }
    }
    Ok(())
}

impl Evaluator<'_> {
    pub(crate) fn call(&mut self, c: &Call, t: i64) -> EvalResult<Val> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
        if c.func.experimental && !self.opts.experimental {
            return Err(super::QueryError::BadData(format!(
                "function {name:?} is not enabled"
            )));
        }
        self.check_modified_args(name, &args)?;
        if let Some(v) = self.range_function(name, &args, t)? {
            return Ok(v);
        }
        if let Some(f) = math_fn(name) {
            return Ok(Val::Vector(map_values(self.eval_vector(args[0], t)?, f)));
        }
        match name {
            "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
            "start" => Ok(Val::Scalar(self.start as f64 / 1000.0)),
            "end" => Ok(Val::Scalar(self.end as f64 / 1000.0)),
            "range" => Ok(Val::Scalar((self.end - self.start) as f64 / 1000.0)),
            "step" => Ok(Val::Scalar(self.step as f64 / 1000.0)),
            "min_of" | "max_of" => {
                let mut acc: Option<f64> = None;
                for a in &args {
                    let v = self.eval_scalar(a, t)?;
                    acc = Some(match acc {
                        None => v,
                        Some(x) if x.is_nan() || v.is_nan() => f64::NAN,
                        Some(x) if name == "min_of" => x.min(v),
                        Some(x) => x.max(v),
                    });
                }
                Ok(Val::Scalar(acc.unwrap_or(f64::NAN)))
            }
            "histogram_quantiles" => self.histogram_quantiles(&args, t),
            "info" => self.info_call(c, &args, t),
            "pi" => Ok(Val::Scalar(std::f64::consts::PI)),
            "vector" => {
                let f = self.eval_scalar(args[0], t)?;
                Ok(Val::Vector(vec![Sample {
                    labels: Labels::empty().into(),
                    v: f,
                    drop_name: false,
                }]))
            }
            "scalar" => {
                let v = self.eval_vector(args[0], t)?;
                Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
            }
            "round" => {
                let to = match args.get(1) {
                    Some(a) => self.eval_scalar(a, t)?,
                    None => 1.0,
                };
                let inv = 1.0 / to;
                Ok(Val::Vector(map_values(
                    self.eval_vector(args[0], t)?,
                    |f| (f * inv + 0.5).floor() / inv,
                )))
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let v = self.eval_vector(args[0], t)?;
                let (lo, hi) = match name {
                    "clamp" => (self.eval_scalar(args[1], t)?, self.eval_scalar(args[2], t)?),
                    "clamp_min" => (self.eval_scalar(args[1], t)?, f64::NAN),
                    _ => (f64::NAN, self.eval_scalar(args[1], t)?),
                };
                if name == "clamp" && hi < lo {
                    return Ok(Val::Vector(Vec::new()));
                }
                Ok(Val::Vector(map_values(v, |f| match name {
                    "clamp" => go_max(lo, go_min(hi, f)),
                    "clamp_min" => go_max(lo, f),
                    _ => go_min(hi, f),
                })))
            }
            "timestamp" => {
                let mut inner = args[0];
                while let Expr::Paren(p) = inner {
                    inner = &p.expr;
                }
                if let Expr::VectorSelector(vs) = inner {
                    let v = self.vector_selector_ts(vs, t)?;
                    return Ok(Val::Vector(
                        v.into_iter()
                            .map(|(s, ts)| Sample {
                                labels: s.labels,
                                v: ts as f64 / 1000.0,
                                drop_name: true,
                            })
                            .collect(),
                    ));
                }
                let v = self.eval_vector(args[0], t)?;
                Ok(Val::Vector(map_values(v, |_| t as f64 / 1000.0)))
            }
            "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc"
                if self.start != self.end && !self.sort_warned =>
            {
                self.sort_warned = true;
                let call = Expr::Call(c.clone());
                self.warn_at(
                    "sort is ineffective for range queries since results are always ordered by labels".into(),
                    &call,
                );
                self.call(c, t)
            }
            "sort" | "sort_desc" => {
                let mut v = self.eval_vector(args[0], t)?;
                heap::sort_reverse(&mut v, name == "sort_desc");
                Ok(Val::Vector(v))
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let mut v = self.eval_vector(args[0], t)?;
                let names: Vec<String> = args[1..]
                    .iter()
                    .map(|a| string_arg(a).map(str::to_string))
                    .collect::<EvalResult<_>>()?;
                let desc = name == "sort_by_label_desc";
                v.sort_by(|a, b| {
                    use std::cmp::Ordering;
                    for n in &names {
                        let (x, y) = (a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                        if x == y {
                            continue;
                        }
                        return if natsort_less(x, y) != desc {
                            Ordering::Less
                        } else {
                            Ordering::Greater
                        };
                    }
                    if desc {
                        b.labels.cmp(&a.labels)
                    } else {
                        a.labels.cmp(&b.labels)
                    }
                });
                Ok(Val::Vector(v))
            }
            "label_replace" => self.label_replace(&args, t),
            "label_join" => self.label_join(&args, t),
            "absent" => {
                let v = self.eval_vector(args[0], t)?;
                if !v.is_empty() {
                    return Ok(Val::Vector(Vec::new()));
                }
                Ok(Val::Vector(vec![Sample {
                    labels: absent_labels(args[0]).into(),
                    v: 1.0,
                    drop_name: false,
                }]))
            }
            "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour"
            | "minute" | "month" | "year" => {
                if args.is_empty() {
                    return Ok(Val::Vector(vec![Sample {
                        labels: Labels::empty().into(),
                        v: date_part(name, t as f64 / 1000.0),
                        drop_name: false,
                    }]));
                }
                let v = self.eval_vector(args[0], t)?;
                Ok(Val::Vector(
                    v.into_iter()
                        .filter(|s| !s.v.is_nan() && s.v.is_finite())
                        .map(|s| Sample {
                            v: date_part(name, s.v),
                            drop_name: true,
                            labels: s.labels,
                        })
                        .collect(),
                ))
            }
            "histogram_quantile" => self.histogram_quantile(&args, t),
            "histogram_fraction" => self.histogram_fraction(&args, t),
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" => {
                // Native histograms only: float samples are ignored.
                self.eval_vector(args[0], t)?;
                Ok(Val::Vector(Vec::new()))
            }
            _ => exec_err(format!("function {name:?} is not supported")),
        }
    }

    fn label_replace(&mut self, args: &[&Expr], t: i64) -> EvalResult<Val> {
        let dst = string_arg(args[1])?;
        let repl = string_arg(args[2])?;
        let src = string_arg(args[3])?;
        let re_src = string_arg(args[4])?;
        let re = Regex::new(&format!("^(?s:{re_src})$")).map_err(|_| {
            super::QueryError::Execution(format!(
                "invalid regular expression in label_replace(): {re_src}"
            ))
        })?;
        if !self.valid_label_name(dst) {
            return exec_err(format!(
                "invalid destination label name in label_replace(): {dst}"
            ));
        }
        let mut v = self.eval_vector(args[0], t)?;
        for s in &mut v {
            let sv = s.labels.get(src).unwrap_or("").to_string();
            if let Some(caps) = re.captures(&sv) {
                let mut out = String::new();
                caps.expand(repl, &mut out);
                s.labels = s.labels.with(dst, &out).into();
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
            }
        }
        check_unique(&v)?;
        Ok(Val::Vector(v))
    }

    fn label_join(&mut self, args: &[&Expr], t: i64) -> EvalResult<Val> {
        let dst = string_arg(args[1])?;
        let sep = string_arg(args[2])?;
        let mut srcs = Vec::new();
        for a in &args[3..] {
            let s = string_arg(a)?;
            if !self.valid_label_name(s) {
                return exec_err(format!("invalid source label name in label_join(): {s}"));
            }
            srcs.push(s.to_string());
        }
        if !self.valid_label_name(dst) {
            return exec_err(format!(
                "invalid destination label name in label_join(): {dst}"
            ));
        }
        let mut v = self.eval_vector(args[0], t)?;
        for s in &mut v {
            let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
            let joined = joined.join(sep);
            s.labels = s.labels.with(dst, &joined).into();
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
        check_unique(&v)?;
        Ok(Val::Vector(v))
    }
}

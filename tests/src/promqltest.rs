//! A runner for Prometheus's PromQL test scripts (`promql/promqltest/testdata/*.test` upstream)
//! against Sextant's engine over [`MemStorage`], following upstream's `promqltest/test.go`:
//! expanding series notation, `expect` lines, float tolerance, ordered results only where
//! asked, and each instant eval re-run at other `@` times and as a range query.
//!
//! Evals of native histograms (out of scope) and of experimental features are skipped and
//! counted per reason.

pub mod script;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr};
use tsdb::labels::Labels;
use tsdb::promql::{
    ParseContext, QueryError, QueryOptions, QueryOutput, Value, instant_query_parsed, parse_query,
    range_query_parsed,
};
use tsdb::storage::{MemStorage, Queryable};

use script::{Command, EvalCmd, ExpectMatch, LoadCmd, SeqValue, parse_script};

/// Outcome of one script.
#[derive(Debug, Default)]
pub struct FileReport {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Skipped evals per reason.
    pub skip_reasons: BTreeMap<&'static str, usize>,
    /// `line N: query: message` for each failed eval.
    pub failures: Vec<String>,
}

/// Runs one script's commands in order.
pub fn run_script(input: &str) -> FileReport {
    let mut report = FileReport::default();
    let cmds = match parse_script(input) {
        Ok(c) => c,
        Err(e) => {
            report.failed += 1;
            report
                .failures
                .push(format!("script does not parse: {e:#}"));
            return report;
        }
    };
    let store = MemStorage::new();
    let mut hist_series: Vec<Labels> = Vec::new();
    let mut st_series: Vec<Labels> = Vec::new();
    let opts = QueryOptions {
        experimental: true,
        ..QueryOptions::default()
    };
    for (line, cmd) in cmds {
        match cmd {
            Command::Clear => {
                store.clear();
                hist_series.clear();
                st_series.clear();
            }
            Command::Load(l) => {
                load(&store, &l, &mut hist_series);
                st_series.extend(l.st_series.iter().cloned());
            }
            Command::Eval(e) => {
                if let Some(reason) = skip_reason(&e, &opts, &hist_series, &st_series) {
                    report.skipped += 1;
                    *report.skip_reasons.entry(reason).or_default() += 1;
                    continue;
                }
                match run_eval(&store, &e, &opts) {
                    Ok(()) => report.passed += 1,
                    Err(msg) => {
                        report.failed += 1;
                        report
                            .failures
                            .push(format!("line {line}: {}: {msg}", e.expr));
                    }
                }
            }
        }
    }
    report
}

fn load(store: &MemStorage, l: &LoadCmd, hist_series: &mut Vec<Labels>) {
    for s in &l.series {
        let mut has_hist = false;
        for (i, v) in s.values.iter().enumerate() {
            match v {
                SeqValue::Float(f) => store.insert(&s.labels, i as i64 * l.interval_ms, *f),
                SeqValue::Histogram => has_hist = true,
                SeqValue::Omitted => {}
            }
        }
        if has_hist {
            hist_series.push(s.labels.clone());
        }
        if l.with_nhcb
            && let Some(base) = s
                .labels
                .metric_name()
                .and_then(|n| n.strip_suffix("_bucket"))
        {
            hist_series.push(s.labels.without(|n| n == "le").with("__name__", base));
        }
    }
}

/// Why an eval is skipped, if it is.
fn skip_reason(
    e: &EvalCmd,
    opts: &QueryOptions,
    hist_series: &[Labels],
    st_series: &[Labels],
) -> Option<&'static str> {
    if e.expected
        .iter()
        .any(|(_, s)| s.values.contains(&SeqValue::Histogram))
    {
        return Some("native histograms");
    }
    let Ok(parsed) = parse_query(&e.expr, &parse_context(e, opts)) else {
        return experimental_syntax(&e.expr);
    };
    let mut reason = None;
    walk(&parsed.expr, &mut |x| match x {
        Expr::VectorSelector(vs) if selects_histograms(vs, hist_series) => {
            reason = reason.or(Some("native histograms"));
        }
        Expr::MatrixSelector(ms) if selects_histograms(&ms.vs, hist_series) => {
            reason = reason.or(Some("native histograms"));
        }
        Expr::VectorSelector(vs) if selects_histograms(vs, st_series) => {
            reason = reason.or(Some("experimental start timestamps"));
        }
        Expr::MatrixSelector(ms) if selects_histograms(&ms.vs, st_series) => {
            reason = reason.or(Some("experimental start timestamps"));
        }
        _ => {}
    });
    reason
}

/// Why a query the parser rejects is out of scope: syntax of experimental features the
/// engine does not know (native-histogram trim operators).
fn experimental_syntax(q: &str) -> Option<&'static str> {
    if q.contains(">/") || q.contains("</") {
        return Some("native histograms");
    }
    None
}

/// The step and range an eval's duration expressions see (0 for instant evals).
fn parse_context(e: &EvalCmd, opts: &QueryOptions) -> ParseContext {
    if e.is_range {
        ParseContext::range(e.start, e.end, e.step, opts)
    } else {
        ParseContext::instant(opts)
    }
}

fn selects_histograms(vs: &promql_parser::parser::VectorSelector, hist_series: &[Labels]) -> bool {
    hist_series.iter().any(|l| {
        vs.name
            .as_deref()
            .is_none_or(|n| l.metric_name() == Some(n))
            && vs
                .matchers
                .matchers
                .iter()
                .all(|m| m.is_match(l.get(&m.name).unwrap_or("")))
            && (vs.matchers.or_matchers.is_empty()
                || vs
                    .matchers
                    .or_matchers
                    .iter()
                    .any(|g| g.iter().all(|m| m.is_match(l.get(&m.name).unwrap_or("")))))
    })
}

/// Visits every node of an expression.
pub fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, f);
            }
            walk(&a.expr, f);
        }
        Expr::Unary(u) => walk(&u.expr, f),
        Expr::Binary(b) => {
            walk(&b.lhs, f);
            walk(&b.rhs, f);
        }
        Expr::Paren(p) => walk(&p.expr, f),
        Expr::Subquery(s) => walk(&s.expr, f),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, f)),
        _ => {}
    }
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

const AT_UNSAFE: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "end",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "range",
    "start",
    "step",
    "time",
    "timestamp",
];

/// Upstream's `atModifierTestCases`: every selector and subquery outside a subquery gets
/// `@ t` (unless it has one), evaluated at other times; `None` when a function's result
/// depends on the evaluation time.
fn at_modifier_cases(expr: &Expr, t: i64) -> Option<Vec<(Expr, i64)>> {
    fn set(e: &mut Expr, at: &AtModifier, unsafe_fn: &mut bool) {
        match e {
            Expr::VectorSelector(vs) if vs.at.is_none() => vs.at = Some(at.clone()),
            Expr::MatrixSelector(ms) if ms.vs.at.is_none() => ms.vs.at = Some(at.clone()),
            Expr::Subquery(s) if s.at.is_none() => s.at = Some(at.clone()),
            Expr::Aggregate(a) => {
                if let Some(p) = &mut a.param {
                    set(p, at, unsafe_fn);
                }
                set(&mut a.expr, at, unsafe_fn);
            }
            Expr::Unary(u) => set(&mut u.expr, at, unsafe_fn),
            Expr::Binary(b) => {
                set(&mut b.lhs, at, unsafe_fn);
                set(&mut b.rhs, at, unsafe_fn);
            }
            Expr::Paren(p) => set(&mut p.expr, at, unsafe_fn),
            Expr::Call(c) => {
                *unsafe_fn |= AT_UNSAFE.contains(&c.func.name);
                c.args.args.iter_mut().for_each(|a| set(a, at, unsafe_fn));
            }
            _ => {}
        }
    }
    let mut e = expr.clone();
    let mut unsafe_fn = false;
    set(&mut e, &AtModifier::At(system_time(t)), &mut unsafe_fn);
    if unsafe_fn {
        return None;
    }
    let times: Vec<i64> = if t == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * t, 0, t / 5, t, 10 * t]
    };
    Some(times.into_iter().map(|at| (e.clone(), at)).collect())
}

fn run_eval(store: &dyn Queryable, e: &EvalCmd, opts: &QueryOptions) -> Result<(), String> {
    let parsed = match parse_query(&e.expr, &parse_context(e, opts)) {
        Ok(x) => x,
        Err(err) => {
            return match &e.fail {
                Some(m) => check_fail(m, &err.to_string()),
                None => Err(format!("parse error: {err}")),
            };
        }
    };
    let expr = &parsed.expr;
    if e.is_range {
        let res = range_query_parsed(store, &parsed, e.start, e.end, e.step, opts);
        let out = match handle_result(e, res)? {
            Some(o) => o,
            None => return Ok(()),
        };
        check_annotations(e, &out)?;
        return compare(e, &out.value);
    }
    let mut cases = vec![(parsed.clone(), e.eval_t)];
    if let Some(more) = at_modifier_cases(expr, e.eval_t) {
        cases.extend(more.into_iter().map(|(x, t)| {
            let mut p = parsed.clone();
            p.expr = x;
            (p, t)
        }));
    }
    for (i, (x, t)) in cases.iter().enumerate() {
        let tag = if i == 0 {
            String::new()
        } else {
            format!(" [@ case at {t}ms]")
        };
        let res = instant_query_parsed(store, x, *t, opts);
        let Some(out) = handle_result(e, res).map_err(|m| format!("{m}{tag}"))? else {
            continue;
        };
        check_annotations(e, &out).map_err(|m| format!("{m}{tag}"))?;
        compare(e, &out.value).map_err(|m| format!("{m}{tag}"))?;
        if e.exclude_from_range || e.ordered {
            continue;
        }
        if parsed.uses_query_context()
            || ["start()", "end()", "range()", "step()"]
                .iter()
                .any(|f| e.expr.contains(f))
        {
            continue;
        }
        let rr = range_query_parsed(store, x, t - 60_000, t + 60_000, 60_000, opts)
            .map_err(|err| format!("error in range mode{tag}: {err}"))?;
        let Value::Matrix(m) = rr.value else {
            return Err(format!("range mode returned a {}", rr.value.type_name()));
        };
        check_sorted(&m)?;
        let mut vec = Vec::new();
        for s in &m {
            if let Some(p) = s.samples.iter().find(|p| p.t == *t) {
                vec.push(tsdb::promql::VectorSample {
                    labels: s.labels.clone(),
                    t: *t,
                    v: p.v,
                });
            }
        }
        let v = if matches!(out.value, Value::Scalar { .. }) {
            Value::Scalar {
                t: *t,
                v: vec.first().map_or(f64::NAN, |s| s.v),
            }
        } else {
            Value::Vector(vec)
        };
        compare(e, &v).map_err(|m| format!("range mode{tag}: {m}"))?;
    }
    Ok(())
}

fn check_fail(m: &ExpectMatch, msg: &str) -> Result<(), String> {
    if m.matches(msg) {
        Ok(())
    } else {
        Err(format!("expected error matching {m:?}, but got: {msg}"))
    }
}

/// `Ok(None)`: an expected failure happened.
fn handle_result(
    e: &EvalCmd,
    res: Result<QueryOutput, QueryError>,
) -> Result<Option<QueryOutput>, String> {
    match (res, &e.fail) {
        (Err(err), Some(m)) => check_fail(m, &err.to_string()).map(|()| None),
        (Err(err), None) => Err(format!("error evaluating query: {err}")),
        (Ok(_), Some(_)) => Err("expected error evaluating query but got none".into()),
        (Ok(o), None) => Ok(Some(o)),
    }
}

fn check_annotations(e: &EvalCmd, out: &QueryOutput) -> Result<(), String> {
    if e.any_warn && out.warnings.is_empty() {
        return Err("expected warnings but got none".into());
    }
    if e.any_info && out.infos.is_empty() {
        return Err("expected info annotations but got none".into());
    }
    check_kind("warn", &e.warn, &out.warnings)?;
    check_kind("info", &e.info, &out.infos)?;
    if e.no_warn && !out.warnings.is_empty() {
        return Err(format!(
            "unexpected warning annotations: {:?}",
            out.warnings
        ));
    }
    if e.no_info && !out.infos.is_empty() {
        return Err(format!("unexpected info annotations: {:?}", out.infos));
    }
    Ok(())
}

fn check_kind(kind: &str, expected: &[ExpectMatch], actual: &[String]) -> Result<(), String> {
    if expected.is_empty() {
        return Ok(());
    }
    if actual.is_empty() {
        return Err(format!("expected {kind} annotations but none were found"));
    }
    for x in expected {
        if !actual.iter().any(|a| x.matches(a)) {
            return Err(format!(
                "expected {kind} annotation matching {x:?}, found: {actual:?}"
            ));
        }
    }
    for a in actual {
        if !expected.iter().any(|x| x.matches(a)) {
            return Err(format!("unexpected {kind} annotation {a:?}"));
        }
    }
    Ok(())
}

/// Upstream's `almost.Equal` with epsilon 1e-6.
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPSILON * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn check_sorted(m: &[tsdb::storage::SeriesSamples]) -> Result<(), String> {
    for w in m.windows(2) {
        if w[0].labels > w[1].labels {
            return Err(format!(
                "matrix not sorted: {} before {}",
                w[0].labels, w[1].labels
            ));
        }
    }
    Ok(())
}

fn compare(e: &EvalCmd, v: &Value) -> Result<(), String> {
    let expected: BTreeMap<&Labels, (usize, &[SeqValue])> = e
        .expected
        .iter()
        .map(|(pos, s)| (&s.labels, (*pos, s.values.as_slice())))
        .collect();
    match v {
        Value::Matrix(m) => {
            if e.ordered {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            if e.expect_scalar.is_some() {
                return Err("expected scalar result, but got matrix".into());
            }
            check_sorted(m)?;
            let mut seen = 0;
            for s in m {
                let Some((_, vals)) = expected.get(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has {:?}",
                        s.labels,
                        pts(&s.samples)
                    ));
                };
                seen += 1;
                let mut exp = Vec::new();
                for (i, x) in vals.iter().enumerate() {
                    let t = e.start + i as i64 * e.step;
                    if t > e.end {
                        return Err(format!(
                            "expected {} points for {}, but query time range cannot return this many points",
                            vals.len(),
                            s.labels
                        ));
                    }
                    if let SeqValue::Float(f) = x {
                        exp.push((t, *f));
                    }
                }
                if exp.len() != s.samples.len() {
                    return Err(format!(
                        "expected {} float points for {}, but got {:?}",
                        exp.len(),
                        s.labels,
                        pts(&s.samples)
                    ));
                }
                for ((t, f), got) in exp.iter().zip(&s.samples) {
                    if *t != got.t {
                        return Err(format!(
                            "expected point at t={t} for {}, got t={} (result {:?})",
                            s.labels,
                            got.t,
                            pts(&s.samples)
                        ));
                    }
                    if !almost_equal(got.v, *f) {
                        return Err(format!(
                            "expected {f} at t={t} for {}, but got {} (result {:?})",
                            s.labels,
                            got.v,
                            pts(&s.samples)
                        ));
                    }
                }
            }
            if seen != expected.len() {
                let missing: Vec<String> = expected
                    .keys()
                    .filter(|l| !m.iter().any(|s| &&s.labels == *l))
                    .map(|l| l.to_string())
                    .collect();
                return Err(format!("expected metrics not found: {missing:?}"));
            }
        }
        Value::Vector(vec) => {
            if e.expect_scalar.is_some() {
                return Err(format!(
                    "expected scalar result, but got vector {}",
                    fmt_vec(vec)
                ));
            }
            let mut seen = 0;
            for (pos, s) in vec.iter().enumerate() {
                let Some((epos, vals)) = expected.get(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has value {} (result {})",
                        s.labels,
                        s.v,
                        fmt_vec(vec)
                    ));
                };
                if e.ordered && *epos != pos + 1 {
                    return Err(format!(
                        "expected metric {} at position {epos} but was at {}",
                        s.labels,
                        pos + 1
                    ));
                }
                let want = match vals.first() {
                    Some(SeqValue::Float(f)) => *f,
                    _ => return Err(format!("no expected value for {}", s.labels)),
                };
                if !almost_equal(want, s.v) {
                    return Err(format!("expected {want} for {} but got {}", s.labels, s.v));
                }
                seen += 1;
            }
            if seen != expected.len() {
                let missing: Vec<String> = expected
                    .keys()
                    .filter(|l| !vec.iter().any(|s| &&s.labels == *l))
                    .map(|l| l.to_string())
                    .collect();
                return Err(format!(
                    "expected metrics not found: {missing:?} (result {})",
                    fmt_vec(vec)
                ));
            }
        }
        Value::Scalar { v, .. } => {
            let Some(want) = e.expect_scalar else {
                return Err(format!(
                    "expected vector or matrix result, but got scalar {v}"
                ));
            };
            if !almost_equal(want, *v) {
                return Err(format!("expected scalar {want} but got {v}"));
            }
        }
        Value::String { s, .. } => {
            if e.expected_string.as_deref() != Some(s.as_str()) {
                return Err(format!(
                    "expected string {:?} but got {s:?}",
                    e.expected_string
                ));
            }
        }
    }
    Ok(())
}

fn pts(s: &[tsdb::storage::Sample]) -> Vec<(i64, f64)> {
    s.iter().map(|p| (p.t, p.v)).collect()
}

fn fmt_vec(v: &[tsdb::promql::VectorSample]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|s| format!("{} => {}", s.labels, s.v))
        .collect();
    format!("[{}]", parts.join(", "))
}

//! `histogram_quantile` and `histogram_fraction` over classic histograms (series with an `le`
//! label), following Prometheus's `quantile.go` including its monotonicity fixes.

use std::sync::Arc;

use promql_parser::parser::Expr;

use super::super::eval::{EvalResult, Evaluator, Sample, Val, key};
use super::super::memo::SlotGroups;
use super::format_g;
use crate::labels::{Labels, METRIC_NAME};

#[derive(Clone, Copy, Debug)]
struct Bucket {
    upper: f64,
    count: f64,
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

fn sort_and_coalesce(buckets: &mut Vec<Bucket>) -> bool {
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return false;
    }
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match out.last_mut() {
            Some(l) if l.upper == b.upper => l.count += b.count,
            _ => out.push(*b),
        }
    }
    *buckets = out;
    true
}

/// Returns the quantile and whether the input had to be forced monotonic.
fn bucket_quantile(q: f64, mut buckets: Vec<Bucket>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    if !sort_and_coalesce(&mut buckets) {
        return (f64::NAN, false);
    }
    let mut forced = false;
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) {
            b.count = prev;
            continue;
        }
        if curr < prev {
            b.count = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|b| b.count < rank);
    let v = if b == n {
        buckets[n - 1].upper
    } else if b == 0 && buckets[0].upper <= 0.0 {
        buckets[0].upper
    } else {
        let end = buckets[b].upper;
        let mut count = buckets[b].count;
        let mut start = 0.0;
        if b > 0 {
            start = buckets[b - 1].upper;
            count -= buckets[b - 1].count;
            rank -= buckets[b - 1].count;
        }
        start + (end - start) * (rank / count)
    };
    (v, forced)
}

fn bucket_fraction(lower: f64, upper: f64, mut buckets: Vec<Bucket>) -> f64 {
    if !sort_and_coalesce(&mut buckets) {
        return f64::NAN;
    }
    let count = buckets[buckets.len() - 1].count;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if buckets[0].upper <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (i, b) in buckets.iter().enumerate() {
        if i > 0 {
            lower_bound = buckets[i - 1].upper;
        }
        let upper_bound = b.upper;
        let interp = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                b.count
            } else {
                rank + (b.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
            }
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interp(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interp(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

fn parse_le(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ if t != s || t.is_empty() => None,
        _ => t.parse().ok(),
    }
}

impl Evaluator<'_> {
    /// Groups classic-histogram buckets by their series without `le`, in first-seen order.
    fn bucket_groups(&mut self, v: Vec<Sample>, arg: &Expr) -> Vec<(Arc<Labels>, Vec<Bucket>)> {
        // Tagged so as not to share a memo with an aggregation at the same address (an
        // `Expr` and the node inside it may start at the same address; nodes are aligned).
        let node = key(arg) | 1;
        let mut memo = self.key_memos.remove(&node).unwrap_or_default();
        let mut index = SlotGroups::with_slots(memo.len());
        let mut groups: Vec<(Arc<Labels>, Vec<Bucket>)> = Vec::new();
        for s in v {
            let (slot, upper) = memo.get(&s.labels, |l| {
                (
                    l.without(|n| n == "le"),
                    parse_le(l.get("le").unwrap_or("")),
                )
            });
            let Some(upper) = upper else {
                let le = s.labels.get("le").unwrap_or("");
                let name = s.labels.metric_name().unwrap_or("").to_string();
                let mut msg =
                    format!("bucket label \"le\" is missing or has a malformed value of {le:?}");
                if !name.is_empty() {
                    msg.push_str(&format!(" for metric name {name:?}"));
                }
                self.warn_at(msg, arg);
                continue;
            };
            let i = match index.get(slot) {
                Some(i) => i,
                None => {
                    index.set(slot, groups.len());
                    groups.push((memo.key(slot), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[i].1.push(Bucket { upper, count: s.v });
        }
        memo.end_call();
        self.key_memos.insert(node, memo);
        groups
    }

    pub(crate) fn histogram_quantile(&mut self, args: &[&Expr], t: i64) -> EvalResult<Val> {
        let q = self.eval_scalar(args[0], t)?;
        let v = self.eval_vector(args[1], t)?;
        if q.is_nan() || !(0.0..=1.0).contains(&q) {
            self.warn_at(
                format!(
                    "quantile value should be between 0 and 1, got {}",
                    format_g(q)
                ),
                args[0],
            );
        }
        let mut out = Vec::new();
        for (labels, buckets) in self.bucket_groups(v, args[1]) {
            let (val, forced) = bucket_quantile(q, buckets);
            if forced {
                let name = labels.metric_name().unwrap_or("");
                let mut msg = "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)".to_string();
                if !name.is_empty() {
                    msg.push_str(&format!(" for metric name {name:?}"));
                }
                self.info_at(msg, args[1]);
            }
            out.push(Sample {
                labels,
                v: val,
                drop_name: true,
            });
        }
        let _ = METRIC_NAME;
        Ok(Val::Vector(out))
    }

    pub(crate) fn histogram_quantiles(&mut self, args: &[&Expr], t: i64) -> EvalResult<Val> {
        let v = self.eval_vector(args[0], t)?;
        let label = match args[1] {
            Expr::StringLiteral(s) => s.val.clone(),
            _ => {
                return Err(super::super::QueryError::Execution(
                    "expected a label name".into(),
                ));
            }
        };
        let mut qs = Vec::new();
        for a in &args[2..] {
            let q = self.eval_scalar(a, t)?;
            if q.is_nan() || !(0.0..=1.0).contains(&q) {
                self.warn_at(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_g(q)
                    ),
                    a,
                );
            }
            qs.push(q);
        }
        let groups = self.bucket_groups(v, args[0]);
        let mut out = Vec::new();
        for q in qs {
            let qs = super::format_openmetrics(q);
            for (labels, buckets) in &groups {
                let (val, forced) = bucket_quantile(q, buckets.clone());
                if forced {
                    let name = labels.metric_name().unwrap_or("");
                    let mut msg = "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)".to_string();
                    if !name.is_empty() {
                        msg.push_str(&format!(" for metric name {name:?}"));
                    }
                    self.info_at(msg, args[0]);
                }
                out.push(Sample {
                    labels: labels.with(&label, &qs).into(),
                    v: val,
                    drop_name: true,
                });
            }
        }
        Ok(Val::Vector(out))
    }

    pub(crate) fn histogram_fraction(&mut self, args: &[&Expr], t: i64) -> EvalResult<Val> {
        let lower = self.eval_scalar(args[0], t)?;
        let upper = self.eval_scalar(args[1], t)?;
        let v = self.eval_vector(args[2], t)?;
        let out = self
            .bucket_groups(v, args[2])
            .into_iter()
            .map(|(labels, buckets)| Sample {
                labels,
                v: bucket_fraction(lower, upper, buckets),
                drop_name: true,
            })
            .collect();
        Ok(Val::Vector(out))
    }
}

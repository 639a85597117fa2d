//! Aggregation operators (`sum avg min max count group stddev stdvar quantile topk bottomk
//! limitk limit_ratio count_values`) with `by`/`without`, as Prometheus's engine computes them.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMIT_RATIO, T_LIMITK, T_MAX, T_MIN,
    T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use super::eval::{EvalResult, Evaluator, Sample, Val, exec_err, key as node_key};
use super::functions::{format_float, format_g};
use super::heap;
use super::memo::SlotGroups;
use crate::labels::{Labels, METRIC_NAME};

/// Kahan-Neumaier summation step (Prometheus's `kahansum.Inc`).
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus's `quantile` over a set of values (NaNs sort first).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

struct Group {
    labels: Arc<Labels>,
    value: f64,
    mean: f64,
    c: f64,
    count: f64,
    incremental: bool,
    drop_name: bool,
    values: Vec<f64>,
    heap: Vec<Sample>,
}

fn grouping(a: &AggregateExpr) -> (bool, Vec<String>) {
    match &a.modifier {
        Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
        Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
        None => (false, Vec::new()),
    }
}

fn group_labels(l: &Labels, without: bool, names: &[String]) -> Labels {
    if without {
        l.without(|n| n == METRIC_NAME || names.iter().any(|x| x == n))
    } else {
        l.keep(|n| names.iter().any(|x| x == n))
    }
}

/// Prometheus's `labels.Hash()`: xxhash64 over `name 0xff value 0xff` pairs.
pub(crate) fn labels_hash(l: &Labels) -> u64 {
    let mut b = Vec::with_capacity(256);
    for p in l.iter() {
        b.extend_from_slice(p.name.as_bytes());
        b.push(0xff);
        b.extend_from_slice(p.value.as_bytes());
        b.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&b, 0)
}

fn add_ratio_sample(r: f64, l: &Labels) -> bool {
    let offset = labels_hash(l) as f64 / u64::MAX as f64;
    (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
}

impl Evaluator<'_> {
    pub(crate) fn aggregate(&mut self, a: &AggregateExpr, t: i64) -> EvalResult<Val> {
        let op = a.op.id();
        let (without, names) = grouping(a);
        if op == T_COUNT_VALUES {
            let label = match a.param.as_deref().map(|p| self.eval(p, t)).transpose()? {
                Some(Val::Str(s)) => s,
                _ => return exec_err("count_values needs a string parameter"),
            };
            if !self.valid_label_name(&label) {
                return exec_err(format!("invalid label name {}", self.quoted(&label)));
            }
            let input = self.eval_vector(&a.expr, t)?;
            let mut names = names;
            if !without {
                names.push(label.clone());
            }
            let mut order: Vec<Labels> = Vec::new();
            let mut counts: HashMap<Labels, f64> = HashMap::new();
            for s in input {
                let l = s.labels.with(&label, &format_float(s.v));
                let g = group_labels(&l, without, &names);
                let c = counts.entry(g.clone()).or_insert_with(|| {
                    order.push(g);
                    0.0
                });
                *c += 1.0;
            }
            return Ok(Val::Vector(
                order
                    .into_iter()
                    .map(|l| {
                        let v = counts[&l];
                        Sample {
                            labels: l.into(),
                            v,
                            drop_name: false,
                        }
                    })
                    .collect(),
            ));
        }
        let param = match (&a.param, op) {
            (Some(p), T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO | T_QUANTILE) => {
                Some(self.eval_scalar(p, t)?)
            }
            _ => None,
        };
        let input = self.eval_vector(&a.expr, t)?;
        let p = param.unwrap_or(f64::NAN);
        let pexpr: &Expr = a.param.as_deref().unwrap_or(&a.expr);
        match op {
            T_TOPK | T_BOTTOMK | T_LIMITK => {
                if p < 1.0 {
                    return Ok(Val::Vector(Vec::new()));
                }
                if p.is_nan() {
                    return exec_err("Parameter value is NaN");
                }
                if p <= i64::MIN as f64 {
                    return exec_err(format!("Scalar value {} underflows int64", format_float(p)));
                }
                if p >= i64::MAX as f64 {
                    return exec_err(format!("Scalar value {} overflows int64", format_float(p)));
                }
            }
            T_LIMIT_RATIO => {
                if p == 0.0 {
                    return Ok(Val::Vector(Vec::new()));
                }
                if p.is_nan() {
                    return exec_err("Ratio value is NaN");
                }
                if p > 1.0 {
                    self.warn_at(
                        format!(
                            "ratio value should be between -1 and 1, got {}, capping to 1",
                            format_g(p)
                        ),
                        pexpr,
                    );
                }
                if p < -1.0 {
                    self.warn_at(
                        format!(
                            "ratio value should be between -1 and 1, got {}, capping to -1",
                            format_g(p)
                        ),
                        pexpr,
                    );
                }
            }
            T_QUANTILE if p.is_nan() || !(0.0..=1.0).contains(&p) => {
                self.warn_at(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_g(p)
                    ),
                    pexpr,
                );
            }
            _ => {}
        }
        let k = (p as i64).min(input.len() as i64).max(0) as usize;
        let ratio = p.clamp(-1.0, 1.0);
        let node = node_key(a);
        let mut memo = self.key_memos.remove(&node).unwrap_or_default();
        // Sized by the keys earlier steps found: most steps have the same groups.
        let mut index = SlotGroups::with_slots(memo.len());
        let mut groups: Vec<Group> = Vec::with_capacity(memo.len().min(input.len()));
        for s in input {
            let (slot, _) = memo.get(&s.labels, |l| (group_labels(l, without, &names), None));
            let f = s.v;
            let gi = match index.get(slot) {
                Some(i) => i,
                None => {
                    index.set(slot, groups.len());
                    let mut g = Group {
                        labels: memo.key(slot),
                        value: f,
                        mean: f,
                        c: 0.0,
                        count: 1.0,
                        incremental: false,
                        drop_name: s.drop_name,
                        values: Vec::new(),
                        heap: Vec::new(),
                    };
                    match op {
                        T_STDDEV | T_STDVAR => {
                            g.value = if f.is_nan() || f.is_infinite() {
                                f64::NAN
                            } else {
                                0.0
                            }
                        }
                        T_QUANTILE => g.values.push(f),
                        T_GROUP => g.value = 1.0,
                        T_TOPK => heap::push(&mut g.heap, s, heap::top_less),
                        T_BOTTOMK => heap::push(&mut g.heap, s, heap::bottom_less),
                        T_LIMITK => g.heap.push(s),
                        T_LIMIT_RATIO if add_ratio_sample(ratio, &s.labels) => g.heap.push(s),
                        _ => {}
                    }
                    groups.push(g);
                    continue;
                }
            };
            let g = &mut groups[gi];
            g.drop_name |= s.drop_name;
            match op {
                T_SUM => {
                    (g.value, g.c) = kahan_inc(f, g.value, g.c);
                }
                T_AVG => {
                    g.count += 1.0;
                    if !g.incremental {
                        let (nv, nc) = kahan_inc(f, g.value, g.c);
                        if !nv.is_infinite() {
                            g.value = nv;
                            g.c = nc;
                            continue;
                        }
                        g.incremental = true;
                        g.mean = g.value / (g.count - 1.0);
                        g.c /= g.count - 1.0;
                    }
                    let q = (g.count - 1.0) / g.count;
                    (g.mean, g.c) = kahan_inc(f / g.count, q * g.mean, q * g.c);
                }
                T_GROUP => {}
                T_MAX => {
                    if g.value < f || g.value.is_nan() {
                        g.value = f;
                    }
                }
                T_MIN => {
                    if g.value > f || g.value.is_nan() {
                        g.value = f;
                    }
                }
                T_COUNT => g.count += 1.0,
                T_STDDEV | T_STDVAR => {
                    g.count += 1.0;
                    let delta = f - g.mean;
                    g.mean += delta / g.count;
                    g.value += delta * (f - g.mean);
                }
                T_QUANTILE => g.values.push(f),
                T_TOPK => {
                    if g.heap.len() < k {
                        heap::push(&mut g.heap, s, heap::top_less);
                    } else if g.heap[0].v < f || (g.heap[0].v.is_nan() && !f.is_nan()) {
                        g.heap[0] = s;
                        heap::fix(&mut g.heap, 0, heap::top_less);
                    }
                }
                T_BOTTOMK => {
                    if g.heap.len() < k {
                        heap::push(&mut g.heap, s, heap::bottom_less);
                    } else if g.heap[0].v > f || (g.heap[0].v.is_nan() && !f.is_nan()) {
                        g.heap[0] = s;
                        heap::fix(&mut g.heap, 0, heap::bottom_less);
                    }
                }
                T_LIMITK => {
                    if g.heap.len() < k {
                        g.heap.push(s);
                    }
                }
                T_LIMIT_RATIO => {
                    if add_ratio_sample(ratio, &s.labels) {
                        g.heap.push(s);
                    }
                }
                _ => return exec_err("unknown aggregation operator"),
            }
        }
        memo.end_call();
        self.key_memos.insert(node, memo);
        let mut out = Vec::with_capacity(groups.len());
        for mut g in groups {
            let v = match op {
                T_TOPK | T_BOTTOMK => {
                    heap::sort_reverse(&mut g.heap, op == T_TOPK);
                    out.append(&mut g.heap);
                    continue;
                }
                T_LIMITK | T_LIMIT_RATIO => {
                    out.append(&mut g.heap);
                    continue;
                }
                T_AVG => {
                    if g.incremental {
                        g.mean + g.c
                    } else {
                        g.value / g.count + g.c / g.count
                    }
                }
                T_SUM => g.value + g.c,
                T_COUNT => g.count,
                T_STDVAR => g.value / g.count,
                T_STDDEV => (g.value / g.count).sqrt(),
                T_QUANTILE => quantile(p, &mut g.values),
                _ => g.value,
            };
            out.push(Sample {
                labels: g.labels,
                v,
                drop_name: g.drop_name,
            });
        }
        Ok(Val::Vector(out))
    }
}

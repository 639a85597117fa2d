//! Binary operators: arithmetic, comparisons (with `bool`), set operators and vector
//! matching (`on`/`ignoring`, `group_left`/`group_right`), as in Prometheus's engine.

use std::collections::{HashMap, HashSet};

use promql_parser::label::Labels as PLabels;
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{EvalResult, Evaluator, Sample, Val, exec_err};
use crate::labels::{Labels, METRIC_NAME};

/// Whether the operator changes what a value means (arithmetic), so the result drops the
/// metric name.
fn changes_schema(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
}

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Go's `math.Mod` (sign of the dividend), which Rust's `%` matches for floats.
pub(crate) fn scalar_op(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn names(l: &PLabels) -> Vec<String> {
    l.labels.clone()
}

/// How two vectors are matched.
struct Matching {
    card: VectorMatchCardinality,
    on: bool,
    labels: Vec<String>,
    include: Vec<String>,
    /// The experimental `fill`/`fill_left`/`fill_right` values.
    fill_lhs: Option<f64>,
    fill_rhs: Option<f64>,
}

impl Matching {
    fn of(b: &BinaryExpr) -> Matching {
        let set_op = matches!(b.op.id(), T_LAND | T_LOR | T_LUNLESS);
        let (card, matching) = match &b.modifier {
            Some(m) => (m.card.clone(), m.matching.clone()),
            None => (
                if set_op {
                    VectorMatchCardinality::ManyToMany
                } else {
                    VectorMatchCardinality::OneToOne
                },
                None,
            ),
        };
        let card = if set_op {
            VectorMatchCardinality::ManyToMany
        } else {
            card
        };
        let (on, labels) = match &matching {
            Some(LabelModifier::Include(l)) => (true, names(l)),
            Some(LabelModifier::Exclude(l)) => (false, names(l)),
            None => (false, Vec::new()),
        };
        let include = card.labels().map(names).unwrap_or_default();
        let fill = b
            .modifier
            .as_ref()
            .map(|m| m.fill_values.clone())
            .unwrap_or_default();
        Matching {
            card,
            on,
            labels,
            include,
            fill_lhs: fill.lhs,
            fill_rhs: fill.rhs,
        }
    }

    /// Prometheus's `MatchLabels`: the matching labels of a series (for fill samples).
    fn match_labels(&self, l: &Labels) -> Labels {
        self.signature(l)
    }

    fn signature(&self, l: &Labels) -> Labels {
        if self.on {
            l.keep(|n| self.labels.iter().any(|x| x == n))
        } else {
            l.without(|n| n == METRIC_NAME || self.labels.iter().any(|x| x == n))
        }
    }
}

impl Evaluator<'_> {
    pub(crate) fn binary(&mut self, b: &BinaryExpr, t: i64) -> EvalResult<Val> {
        let op = b.op.id();
        let return_bool = b.return_bool();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = scalar_op(op, l, r);
                if is_comparison(op) {
                    Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }))
                } else {
                    Ok(Val::Scalar(v))
                }
            }
            (Val::Vector(l), Val::Scalar(r)) => {
                Ok(Val::Vector(vector_scalar(op, l, r, false, return_bool)))
            }
            (Val::Scalar(l), Val::Vector(r)) => {
                Ok(Val::Vector(vector_scalar(op, r, l, true, return_bool)))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                let m = Matching::of(b);
                if (m.fill_lhs.is_some() || m.fill_rhs.is_some()) && !self.opts.experimental {
                    return Err(super::QueryError::BadData(
                        "fill modifiers are experimental and not enabled".into(),
                    ));
                }
                match op {
                    T_LAND => Ok(Val::Vector(and(&m, l, r))),
                    T_LOR => Ok(Val::Vector(or(&m, l, r))),
                    T_LUNLESS => Ok(Val::Vector(unless(&m, l, r))),
                    _ => Ok(Val::Vector(vector_binop(op, &m, l, r, return_bool)?)),
                }
            }
            _ => exec_err("binary operation on unsupported operand types"),
        }
    }
}

fn vector_scalar(
    op: TokenId,
    vec: Vec<Sample>,
    s: f64,
    swap: bool,
    return_bool: bool,
) -> Vec<Sample> {
    let mut out = Vec::with_capacity(vec.len());
    for mut smp in vec {
        let (l, r) = if swap { (s, smp.v) } else { (smp.v, s) };
        let (mut v, mut keep) = scalar_op(op, l, r);
        if is_comparison(op) && swap {
            v = r;
        }
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            smp.v = v;
            if changes_schema(op) || return_bool {
                smp.drop_name = true;
            }
            out.push(smp);
        }
    }
    out
}

fn and(m: &Matching, l: Vec<Sample>, r: Vec<Sample>) -> Vec<Sample> {
    if l.is_empty() || r.is_empty() {
        return Vec::new();
    }
    let right: HashSet<Labels> = r.iter().map(|s| m.signature(&s.labels)).collect();
    l.into_iter()
        .filter(|s| right.contains(&m.signature(&s.labels)))
        .collect()
}

fn or(m: &Matching, mut l: Vec<Sample>, r: Vec<Sample>) -> Vec<Sample> {
    if l.is_empty() {
        return r;
    }
    if r.is_empty() {
        return l;
    }
    let left: HashSet<Labels> = l.iter().map(|s| m.signature(&s.labels)).collect();
    l.extend(
        r.into_iter()
            .filter(|s| !left.contains(&m.signature(&s.labels))),
    );
    l
}

fn unless(m: &Matching, l: Vec<Sample>, r: Vec<Sample>) -> Vec<Sample> {
    if l.is_empty() || r.is_empty() {
        return l;
    }
    let right: HashSet<Labels> = r.iter().map(|s| m.signature(&s.labels)).collect();
    l.into_iter()
        .filter(|s| !right.contains(&m.signature(&s.labels)))
        .collect()
}

fn vector_binop(
    op: TokenId,
    m: &Matching,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    return_bool: bool,
) -> EvalResult<Vec<Sample>> {
    if (lhs.is_empty() && rhs.is_empty())
        || ((lhs.is_empty() || rhs.is_empty()) && m.fill_lhs.is_none() && m.fill_rhs.is_none())
    {
        return Ok(Vec::new());
    }
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: HashMap<Labels, &Sample> = HashMap::with_capacity(rhs.len());
    for rs in &rhs {
        let sig = m.signature(&rs.labels);
        if let Some(dup) = right.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            let (mut a, mut b) = (fmt_match_group(&rs.labels), fmt_match_group(&dup.labels));
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            return exec_err(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side",
                fmt_match_group(&sig)
            ));
        }
        right.insert(sig, rs);
    }
    let mut pairs = Pairing {
        op,
        m,
        return_bool,
        one_to_many,
        one_to_one,
        matched_one: HashSet::new(),
        matched_many: HashMap::new(),
        out: Vec::new(),
    };
    for ls in &lhs {
        let sig = m.signature(&ls.labels);
        match right.get(&sig) {
            Some(rs) => pairs.pair(ls, rs, sig)?,
            None => {
                if let Some(fill) = m.fill_rhs {
                    let rs = Sample {
                        labels: m.match_labels(&ls.labels).into(),
                        v: fill,
                        drop_name: false,
                    };
                    pairs.pair(ls, &rs, sig)?;
                }
            }
        }
    }
    if let Some(fill) = m.fill_lhs {
        // Right-hand samples no left-hand one matched meet the fill value.
        let unmatched: Vec<(&Sample, Labels)> = rhs
            .iter()
            .map(|rs| (rs, m.signature(&rs.labels)))
            .filter(|(_, sig)| !pairs.matched(sig))
            .collect();
        for (rs, sig) in unmatched {
            let ls = Sample {
                labels: m.match_labels(&rs.labels).into(),
                v: fill,
                drop_name: false,
            };
            pairs.pair(&ls, rs, sig)?;
        }
    }
    Ok(pairs.out)
}

/// The state of one vector-to-vector operation: which match groups were paired, and the output.
struct Pairing<'a> {
    op: TokenId,
    m: &'a Matching,
    return_bool: bool,
    one_to_many: bool,
    one_to_one: bool,
    matched_one: HashSet<Labels>,
    matched_many: HashMap<Labels, HashSet<Labels>>,
    out: Vec<Sample>,
}

impl Pairing<'_> {
    /// Applies the operator to a matched pair (`ls` from the side that drives the matching).
    fn pair(&mut self, ls: &Sample, rs: &Sample, sig: Labels) -> EvalResult<()> {
        let (fl, fr) = if self.one_to_many {
            (rs.v, ls.v)
        } else {
            (ls.v, rs.v)
        };
        let (mut v, keep) = scalar_op(self.op, fl, fr);
        if self.return_bool {
            v = if keep { 1.0 } else { 0.0 };
        }
        let metric = result_metric(&ls.labels, &rs.labels, self.op, self.m, self.one_to_one);
        if self.one_to_one {
            if !self.matched_one.insert(sig) {
                return exec_err(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                );
            }
        } else if !self
            .matched_many
            .entry(sig)
            .or_default()
            .insert(metric.clone())
        {
            return exec_err(
                "multiple matches for labels: grouping labels must ensure unique matches",
            );
        }
        if keep || self.return_bool {
            self.out.push(Sample {
                labels: metric.into(),
                v,
                drop_name: self.return_bool,
            });
        }
        Ok(())
    }

    /// Whether a match group was paired already.
    fn matched(&self, sig: &Labels) -> bool {
        if self.one_to_one {
            self.matched_one.contains(sig)
        } else {
            self.matched_many.get(sig).is_some_and(|s| !s.is_empty())
        }
    }
}

/// A match group as Prometheus prints it (`{a="b"}`, the name inside the braces).
fn fmt_match_group(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|l| format!("{}={:?}", l.name, &*l.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn result_metric(
    lhs: &Labels,
    rhs: &Labels,
    op: TokenId,
    m: &Matching,
    one_to_one: bool,
) -> Labels {
    let mut l = if changes_schema(op) {
        lhs.without(|n| n == METRIC_NAME || n == "__type__" || n == "__unit__")
    } else {
        lhs.clone()
    };
    if one_to_one {
        l = if m.on {
            l.keep(|n| m.labels.iter().any(|x| x == n))
        } else {
            l.without(|n| m.labels.iter().any(|x| x == n))
        };
    }
    for name in &m.include {
        l = l.with(name, rhs.get(name).unwrap_or(""));
    }
    l
}

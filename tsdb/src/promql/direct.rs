//! Series-major evaluation of a whole range query whose expression is a plain selector or a
//! range function over one (`rate(x[5m])`, the commonest dashboard panel).
//!
//! The step-wise evaluator hands the top of the expression one vector per step, and
//! `range_query_parsed` turns those back into series: every output sample is built as a step's
//! `Sample` (a shared label set and a reference count) and then found again by its label set.
//! When nothing sits above the selector or the range function, that round trip is all
//! overhead: here each series' values at all steps are computed in one pass (the same sliding
//! loops the step-wise path uses, `slide_selector` and `slide_window`) and become the output
//! series directly. The sample limits, duplicate label sets and warnings come out as the
//! step-wise path gives them (`finish` replays its checks step by step).

use std::sync::Arc;

use promql_parser::parser::Expr;
use rustc_hash::FxHashMap;

use super::eval::{EvalResult, Evaluator, offset_ms};
use super::steps::{CHECK_EVERY, slide_selector};
use super::{QueryError, is_metadata_label};
use crate::labels::Labels;
use crate::storage::{Sample as Point, SeriesSamples};

/// The output of a range query computed series by series.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) series: Vec<DirectSeries>,
    /// Samples the selector held at each step (the query's sample limit counts them).
    pub(crate) selected: Vec<usize>,
}

/// One series of a [`Direct`] output, in step order.
#[derive(Debug)]
pub(crate) struct DirectSeries {
    pub(crate) labels: Arc<Labels>,
    /// The metric name (and type and unit) are dropped from `labels` in the output.
    pub(crate) drop_name: bool,
    pub(crate) samples: Vec<Point>,
}

impl Direct {
    pub(crate) fn new(steps: usize, series: usize) -> Direct {
        Direct {
            series: Vec::with_capacity(series),
            selected: vec![0; steps],
        }
    }
}

impl Evaluator<'_> {
    /// The number of steps of the range query.
    pub(crate) fn range_steps(&self) -> usize {
        usize::try_from((self.end - self.start) / self.step.max(1) + 1).unwrap_or(1)
    }

    /// The whole range query's output series by series, when `expr` is a selector or a range
    /// function that the one-pass evaluation handles; `None` otherwise (the caller then
    /// evaluates step by step).
    pub(crate) fn series_major(&mut self, expr: &Expr) -> EvalResult<Option<Direct>> {
        let mut e = expr;
        while let Expr::Paren(p) = e {
            e = &p.expr;
        }
        match e {
            Expr::VectorSelector(vs) if vs.at.is_none() && self.modifier(vs).is_none() => {
                let t0 = self.start - offset_ms(&vs.offset);
                let lookback = self.opts.lookback_delta_ms;
                let steps = self.range_steps();
                let series = self.series_of(vs)?;
                let mut out = Direct::new(steps, series.len());
                for (si, s) in series.iter().enumerate() {
                    if si % CHECK_EVERY == 0 {
                        self.check_deadline()?;
                    }
                    let mut samples = Vec::with_capacity(steps.min(1024));
                    slide_selector(&s.samples, t0, self.step, steps, lookback, |i, v| {
                        out.selected[i] += 1;
                        samples.push(Point {
                            t: self.start + i as i64 * self.step,
                            v,
                        });
                    });
                    if !samples.is_empty() {
                        out.series.push(DirectSeries {
                            labels: s.labels.clone(),
                            drop_name: false,
                            samples,
                        });
                    }
                }
                Ok(Some(out))
            }
            Expr::Call(c) if !c.func.experimental || self.opts.experimental => {
                let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
                self.range_function_series_major(c.func.name, &args)
            }
            _ => Ok(None),
        }
    }
}

/// The output matrix of a [`Direct`] evaluation, sorted by label set, with the errors the
/// step-wise path would give, in the order it would meet them: at each step, the selector's
/// samples against `max_samples` (added to the output samples of the steps before), then two
/// series with one label set at that step, then the output samples so far against
/// `max_samples`.
pub(crate) fn finish(
    d: Direct,
    start: i64,
    step: i64,
    max_samples: usize,
) -> Result<Vec<SeriesSamples>, QueryError> {
    let step_of = |t: i64| usize::try_from((t - start) / step.max(1)).unwrap_or(0);
    let mut produced = vec![0usize; d.selected.len()];
    let mut out: Vec<SeriesSamples> = Vec::with_capacity(d.series.len());
    let mut index: FxHashMap<Labels, usize> = FxHashMap::default();
    let mut merged = false;
    for s in d.series {
        for p in &s.samples {
            if let Some(n) = produced.get_mut(step_of(p.t)) {
                *n += 1;
            }
        }
        let labels = if s.drop_name {
            s.labels.without(is_metadata_label)
        } else {
            Arc::unwrap_or_clone(s.labels)
        };
        if s.drop_name {
            // Only a dropped name can make two selected series one.
            if let Some(&i) = index.get(&labels) {
                if let Some(o) = out.get_mut(i) {
                    o.samples.extend(s.samples);
                    merged = true;
                }
                continue;
            }
            index.insert(labels.clone(), out.len());
        }
        out.push(SeriesSamples {
            labels,
            samples: s.samples,
        });
    }
    // The first step at which a merged series got two samples.
    let mut duplicate_at: Option<usize> = None;
    if merged {
        for o in &mut out {
            o.samples.sort_by_key(|p| p.t);
            for w in o.samples.windows(2) {
                if w[0].t == w[1].t {
                    let k = step_of(w[0].t);
                    duplicate_at = Some(duplicate_at.map_or(k, |d| d.min(k)));
                }
            }
        }
    }
    let mut total = 0usize;
    for (k, (selected, produced)) in d.selected.iter().zip(&produced).enumerate() {
        if total + selected > max_samples {
            return Err(QueryError::TooManySamples("query execution"));
        }
        if duplicate_at == Some(k) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        total += produced;
        if total > max_samples {
            return Err(QueryError::TooManySamples("query execution"));
        }
    }
    out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{ParseContext, QueryOptions, parse_query, range_query_with};
    use crate::labels::Labels;
    use crate::storage::{MemStorage, stale_nan};

    const QUERIES: &[&str] = &[
        "m_total",
        "(m_total)",
        "m_total offset 1m",
        "{__name__=~\"m_total|n\"}",
        "rate(m_total[1m])",
        "rate({__name__=~\"m_total|n\"}[2m])",
        "increase((m_total[90s]))",
        "delta(n[1m] offset 30s)",
        "irate(n[1m])",
        "changes({__name__=~\".+\"}[3m])",
        "resets(m_total[2m])",
        "deriv(n[2m])",
        "last_over_time({__name__=~\".+\"}[1m])",
        "first_over_time(n[2m])",
        "avg_over_time({__name__=~\".+\"}[1m])",
        "count_over_time(m_total[30s])",
        "stddev_over_time(n[2m])",
        "present_over_time(n[1m])",
        "quantile_over_time(0.5, n[2m])",
        "predict_linear(n[2m], 60)",
    ];

    /// One series: its `job`, the metric it belongs to, and its samples as (gap before in
    /// 15 s intervals, value, stale marker).
    fn series() -> impl Strategy<Value = (u8, bool, Vec<(u8, f64, bool)>)> {
        (
            0u8..3,
            any::<bool>(),
            prop::collection::vec((0u8..6, -5.0f64..50.0, prop::bool::weighted(0.05)), 0..40),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The series-major path answers every query exactly as the step-wise path does:
        /// values, labels, order, warnings, and errors (duplicate label sets after a dropped
        /// name, sample limits).
        #[test]
        fn series_major_equals_step_wise(
            data in prop::collection::vec(series(), 0..6),
            start in 0i64..600,
            steps in 1i64..40,
            step in prop::sample::select(vec![10i64, 15, 30, 60, 65]),
            max_samples in prop::sample::select(vec![5usize, 40, 1_000_000]),
        ) {
            let store = MemStorage::new();
            for (job, other, samples) in &data {
                let name = if *other { "n" } else { "m_total" };
                let l = Labels::from_pairs([("__name__", name), ("job", &job.to_string())]);
                let mut t = 0;
                for (gap, v, stale) in samples {
                    t += (1 + i64::from(*gap)) * 15_000;
                    store.insert(&l, t, if *stale { stale_nan() } else { *v });
                }
            }
            let opts = QueryOptions { max_samples, ..QueryOptions::default() };
            let range = (start * 1000, (start + steps * step) * 1000, step * 1000);
            for q in QUERIES {
                let p = parse_query(q, &ParseContext::range(range.0, range.1, range.2, &opts)).unwrap();
                let direct = range_query_with(&store, &p, range, &opts, true);
                let stepwise = range_query_with(&store, &p, range, &opts, false);
                match (direct, stepwise) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "{}", q),
                    (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string(), "{}", q),
                    (a, b) => prop_assert!(false, "{q}: {a:?} against {b:?}"),
                }
            }
        }
    }
}

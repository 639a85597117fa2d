//! One-pass evaluation of selectors across the steps of a range query.
//!
//! The step-wise evaluator asks each node for its vector at one step after another. For a
//! selector, or a range function over one (`rate(x[5m])`), answering step by step means two
//! binary searches per series and step, jumping between series' samples. Instead these nodes
//! compute a block of consecutive steps at once, series by series, with a window sliding
//! forward: each series' samples are read once, in order, so the work is proportional to
//! samples + steps and stays in cache. The evaluator then takes each step's vector as it gets
//! there. A block holds at most [`STEP_BUDGET`] samples, so memory stays bounded however many
//! series and steps a query has. Results are identical to the per-step path, which remains for
//! instant queries, subquery times off the grid, `@` modifiers and functions with parameters.

use promql_parser::parser::VectorSelector;

use super::eval::{EvalResult, Evaluator, Sample, key, offset_ms};
use crate::storage::{Sample as Point, is_stale_nan};

/// Samples one block of steps may hold (about 32 bytes each).
const STEP_BUDGET: usize = 1 << 20;

/// Series between deadline checks while computing a block.
pub(crate) const CHECK_EVERY: usize = 256;

/// A node's vectors for a block of consecutive steps of a range query.
#[derive(Debug, Default)]
pub(crate) struct StepValues {
    /// Index of the block's first step.
    pub(crate) first: usize,
    /// The vector at each step of the block; taken when handed out.
    pub(crate) out: Vec<Option<Vec<Sample>>>,
    /// Samples the node's selector held at each step (the query's sample limit counts them).
    pub(crate) counts: Vec<usize>,
}

impl StepValues {
    /// An empty block of the steps of `block`, each with room for a sample of every series
    /// (the block's steps times its series stay within [`STEP_BUDGET`]).
    pub(crate) fn new(block: &Block) -> StepValues {
        StepValues {
            first: block.first,
            out: (0..block.len)
                .map(|_| Some(Vec::with_capacity(block.series)))
                .collect(),
            counts: vec![0; block.len],
        }
    }

    /// Adds a sample to the block's step `i` (relative to the block).
    pub(crate) fn push(&mut self, i: usize, s: Sample) {
        if let Some(Some(out)) = self.out.get_mut(i) {
            out.push(s);
        }
    }
}

/// The steps of a block: their count and the time of each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub(crate) first: usize,
    pub(crate) len: usize,
    /// The series the node reads.
    pub(crate) series: usize,
    start: i64,
    pub(crate) step: i64,
}

impl Block {
    /// The evaluation time of the block's step `i`.
    pub(crate) fn time(&self, i: usize) -> i64 {
        self.start + (self.first + i) as i64 * self.step
    }
}

impl Evaluator<'_> {
    /// The index of `t` among a range query's steps, if it is one.
    pub(crate) fn step_index(&self, t: i64) -> Option<usize> {
        (self.step > 0 && t >= self.start && t <= self.end && (t - self.start) % self.step == 0)
            .then(|| ((t - self.start) / self.step) as usize)
    }

    /// `node`'s vector at step `t`, from its current block, or from a new block computed by
    /// `compute` (over the steps it is given) when the current one does not cover `t`. `None`
    /// when `t` is not a step of the query, or the step was already handed out (the caller
    /// then evaluates it the per-step way).
    pub(crate) fn stepped(
        &mut self,
        node: usize,
        t: i64,
        series: usize,
        compute: impl FnOnce(&mut Self, Block) -> EvalResult<StepValues>,
    ) -> EvalResult<Option<Vec<Sample>>> {
        let Some(i) = self.step_index(t) else {
            return Ok(None);
        };
        let covered = self
            .step_values
            .get(&node)
            .is_some_and(|sv| i >= sv.first && i < sv.first + sv.out.len());
        if !covered {
            let steps = ((self.end - self.start) / self.step) as usize + 1;
            let len = (STEP_BUDGET / series.max(1)).clamp(1, steps - i);
            let block = Block {
                first: i,
                len,
                series: series.min(STEP_BUDGET),
                start: self.start,
                step: self.step,
            };
            let sv = compute(self, block)?;
            self.step_values.insert(node, sv);
        }
        let Some(sv) = self.step_values.get_mut(&node) else {
            return Ok(None);
        };
        let j = i - sv.first;
        let Some(v) = sv.out.get_mut(j).and_then(Option::take) else {
            return Ok(None);
        };
        let n = sv.counts.get(j).copied().unwrap_or(0);
        self.add_samples(n)?;
        Ok(Some(v))
    }

    /// A plain selector (no `@`) at step `t` of a range query, one block of steps at a time.
    pub(crate) fn stepped_selector(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> EvalResult<Option<Vec<Sample>>> {
        if vs.at.is_some() || self.step_index(t).is_none() || self.modifier(vs).is_some() {
            return Ok(None);
        }
        // Tagged: a node's address may equal that of the node around it.
        let node = key(vs) | 2;
        let off = offset_ms(&vs.offset);
        let lookback = self.opts.lookback_delta_ms;
        let series = self.series_of(vs)?;
        self.stepped(node, t, series.len(), |ev, block| {
            let mut sv = StepValues::new(&block);
            for (si, s) in series.iter().enumerate() {
                if si % CHECK_EVERY == 0 {
                    ev.check_deadline()?;
                }
                slide_selector(
                    &s.samples,
                    block.time(0) - off,
                    block.step,
                    block.len,
                    lookback,
                    |i, v| {
                        sv.counts[i] += 1;
                        sv.push(
                            i,
                            Sample {
                                labels: s.labels.clone(),
                                v,
                                drop_name: false,
                            },
                        );
                    },
                );
            }
            Ok(sv)
        })
    }
}

/// The value an instant selector takes at each of `n` steps `t0 + i * step` over one series'
/// samples: the latest sample at or before the step, unless older than `lookback` or a
/// staleness marker. Calls `emit(i, v)` for each step that has one. The read position only
/// moves forward, so the work is proportional to samples + steps.
pub(crate) fn slide_selector(
    pts: &[Point],
    t0: i64,
    step: i64,
    n: usize,
    lookback: i64,
    mut emit: impl FnMut(usize, f64),
) {
    let mut idx = pts.partition_point(|p| p.t <= t0);
    for i in 0..n {
        let ts = t0 + i as i64 * step;
        while idx < pts.len() && pts[idx].t <= ts {
            idx += 1;
        }
        if idx == 0 {
            continue;
        }
        let p = pts[idx - 1];
        if p.t <= ts - lookback || is_stale_nan(p.v) {
            continue;
        }
        emit(i, p.v);
    }
}

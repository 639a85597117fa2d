//! Downsampling of old blocks (`tsdb.blocks.downsampling`).
//!
//! Choice: per series and per interval of the resolution, keep the interval's last sample
//! (as VictoriaMetrics does), plus the samples around the interval's last counter reset (a
//! value drop). Kept samples are real samples, so the PromQL engine reads downsampled blocks
//! through the same seam, unchanged: `rate`/`increase` over windows of at least two
//! resolutions are exact for counters with at most one reset per interval, `last_over_time`
//! and instant queries (lookback ≥ resolution) see the interval's last value, staleness
//! markers survive as last samples. `min`/`max`/`avg_over_time` become those of the kept
//! samples (an approximation, as VictoriaMetrics's). Thanos's alternative (count/sum/min/max/
//! counter aggregates per window) is exact for those functions but needs an engine that picks
//! the aggregate per function; this store's engine reads plain samples only.

use std::sync::Arc;

use super::block::BlockWriter;
use super::{Tsdb, TsdbError};
use crate::head::SeriesId;
use crate::storage::Sample;

/// The samples to keep of `samples` (in time order) at `resolution` milliseconds.
pub(crate) fn downsample(samples: &[Sample], resolution: i64) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len() / 4 + 1);
    let mut i = 0;
    while i < samples.len() {
        let window = samples[i].t.div_euclid(resolution);
        let mut j = i;
        // The index of the sample after the interval's last drop.
        let mut reset = None;
        while j < samples.len() && samples[j].t.div_euclid(resolution) == window {
            if j > 0 && samples[j].v < samples[j - 1].v {
                reset = Some(j);
            }
            j += 1;
        }
        let mut keep = |p: Sample| {
            if out.last().is_none_or(|o| o.t < p.t) {
                out.push(p);
            }
        };
        if let Some(r) = reset {
            // Before and after the reset (the sample before may be the previous interval's
            // last, already kept): the drop stays visible to rate() even when the counter is
            // back above its old value by the interval's end.
            keep(samples[r - 1]);
            keep(samples[r]);
        }
        keep(samples[j - 1]);
        i = j;
    }
    out
}

impl Tsdb {
    /// Rewrites blocks whose samples are all older than a downsampling age (behind the newest
    /// sample) at that age's resolution; returns how many were rewritten.
    pub fn downsample(&self) -> Result<usize, TsdbError> {
        if self.downsampling.is_empty() {
            return Ok(0);
        }
        let _blocks = self.blocks_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(newest) = self.newest() else {
            return Ok(0);
        };
        let mut n = 0;
        for b in self.blocks() {
            let target = self
                .downsampling
                .iter()
                .filter(|(age, _)| b.max_t() <= newest.saturating_sub(*age))
                .map(|(_, res)| *res)
                .max();
            let Some(res) = target.filter(|r| *r > b.meta().resolution) else {
                continue;
            };
            let started = std::time::Instant::now();
            let mut w = BlockWriter::new(&self.blocks_dir())?;
            let (mut before, mut after) = (0u64, 0u64);
            for id in 0..b.num_series() as SeriesId {
                let samples = b
                    .samples(id, i64::MIN, i64::MAX)
                    .map_err(TsdbError::io(b.dir()))?;
                let kept = downsample(&samples, res);
                before += samples.len() as u64;
                after += kept.len() as u64;
                w.add(b.labels(id), &kept)?;
            }
            let mut compaction = b.meta().compaction.clone();
            compaction.parents = vec![b.id().to_owned()];
            let out = if w.num_series() == 0 {
                None
            } else {
                Some(Arc::new(w.finish(b.min_t(), b.max_t(), compaction, res)?))
            };
            self.replace_blocks(out, &[b.id().to_owned()])?;
            tracing::info!(
                dir = %self.dir.display(),
                block = b.id(),
                resolution_ms = res,
                samples_before = before,
                samples_after = after,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "tsdb: block downsampled"
            );
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;

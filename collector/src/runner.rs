//! The collection loop: polls every source at the configured interval and hands the samples to
//! the sink, retrying a failed send until the next tick.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::Error;
use crate::metrics;
use crate::sink::Sink;
use crate::source::{Collected, SeriesGroup, Source};

/// First pause after a failed send; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Polls sources and ships what they produce.
#[derive(Debug)]
pub struct Collector {
    sources: Vec<Arc<Mutex<Box<dyn Source>>>>,
    sink: Arc<dyn Sink>,
    interval: Duration,
}

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Sum over sources.
    pub collected: Collected,
    /// Sources whose collection failed.
    pub failed_sources: u64,
    /// Whether the sink acknowledged the samples.
    pub sent: bool,
}

impl Collector {
    pub fn new(sink: Arc<dyn Sink>, interval: Duration) -> Self {
        Collector {
            sources: Vec::new(),
            sink,
            interval,
        }
    }

    /// Adds a source polled at every tick.
    pub fn add_source(&mut self, source: Box<dyn Source>) {
        self.sources.push(Arc::new(Mutex::new(source)));
    }

    /// Collects every source at `now` (on blocking threads) without sending.
    pub async fn collect(&self, now: SystemTime) -> (Vec<SeriesGroup>, TickReport) {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut all = Vec::new();
        let mut report = TickReport::default();
        for source in &self.sources {
            let source = Arc::clone(source);
            let started = Instant::now();
            let joined = tokio::task::spawn_blocking(move || {
                let mut s = source.lock().unwrap_or_else(|p| p.into_inner());
                let mut out = Vec::new();
                let name = s.name();
                (name, s.collect(now_ms, &mut out).map(|c| (c, out)))
            })
            .await;
            let (name, result) = match joined {
                Ok(r) => r,
                Err(e) => ("unknown", Err(Error::Task(e.to_string()))),
            };
            metrics::COLLECT_SECONDS
                .with_label_values(&[name])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok((c, out)) => {
                    metrics::SAMPLES
                        .with_label_values(&[name])
                        .inc_by(c.samples);
                    metrics::CGROUPS_SCANNED
                        .with_label_values(&[name])
                        .inc_by(c.scanned);
                    metrics::CONTAINERS
                        .with_label_values(&[name])
                        .set(i64::try_from(c.exported).unwrap_or(i64::MAX));
                    if c.errors > 0 {
                        metrics::ERRORS.with_label_values(&[name]).inc_by(c.errors);
                    }
                    report.collected.samples += c.samples;
                    report.collected.scanned += c.scanned;
                    report.collected.exported += c.exported;
                    report.collected.errors += c.errors;
                    all.extend(out);
                }
                Err(e) => {
                    metrics::ERRORS.with_label_values(&[name]).inc();
                    report.failed_sources += 1;
                    warn!(source = name, error = %e, "collection failed");
                }
            }
        }
        (all, report)
    }

    /// One tick: collects at `now` and sends, retrying a failed send with back-off until
    /// `deadline`; past it the tick's samples are dropped (and counted).
    pub async fn tick(&self, now: SystemTime, deadline: tokio::time::Instant) -> TickReport {
        let (groups, mut report) = self.collect(now).await;
        let sink = self.sink.name();
        let samples: usize = groups.iter().map(SeriesGroup::samples).sum();
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.sink.send(&groups).await {
                Ok(()) => {
                    metrics::SENT_SAMPLES
                        .with_label_values(&[sink])
                        .inc_by(samples as u64);
                    report.sent = true;
                    return report;
                }
                Err(e) => {
                    metrics::SEND_ERRORS.with_label_values(&[sink]).inc();
                    let retry_at = tokio::time::Instant::now() + backoff;
                    if retry_at >= deadline {
                        metrics::DROPPED_SAMPLES
                            .with_label_values(&[sink])
                            .inc_by(samples as u64);
                        warn!(sink, samples, error = %e, "sending failed until the next tick, samples dropped");
                        return report;
                    }
                    debug!(sink, error = %e, backoff_ms = backoff.as_millis() as u64, "send failed, retrying");
                    tokio::time::sleep_until(retry_at).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Ticks every interval until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                at = ticker.tick() => {
                    let deadline = at + self.interval;
                    let report = tokio::select! {
                        _ = &mut shutdown => return,
                        r = self.tick(SystemTime::now(), deadline) => r,
                    };
                    debug!(samples = report.collected.samples, cgroups = report.collected.scanned, sent = report.sent, "tick");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use crate::sink::MemorySink;

    #[derive(Debug)]
    struct Counter(u64);

    impl Source for Counter {
        fn name(&self) -> &'static str {
            "test"
        }
        fn collect(&mut self, now_ms: i64, out: &mut Vec<SeriesGroup>) -> Result<Collected> {
            self.0 += 1;
            let mut g = SeriesGroup::default();
            g.push("ticks_total", &[("a", "b")], self.0 as f64, now_ms);
            out.push(g);
            Ok(Collected {
                samples: 1,
                scanned: 1,
                exported: 1,
                errors: 0,
            })
        }
    }

    #[derive(Debug)]
    struct Failing;

    impl Source for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn collect(&mut self, _: i64, _: &mut Vec<SeriesGroup>) -> Result<Collected> {
            Err(Error::NoCgroups("/nowhere".into()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tick_collects_stamps_and_retries_the_sink() {
        let sink = Arc::new(MemorySink::new());
        let mut c = Collector::new(sink.clone(), Duration::from_secs(10));
        c.add_source(Box::new(Counter(0)));
        c.add_source(Box::new(Failing));
        sink.fail_next(2);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = c
            .tick(now, tokio::time::Instant::now() + Duration::from_secs(10))
            .await;
        assert!(r.sent);
        assert_eq!(r.failed_sources, 1);
        assert_eq!(r.collected.samples, 1);
        let got = sink.take();
        assert_eq!(got.len(), 1);
        let s = &got[0].series[0];
        assert_eq!(s.labels[0].name, "__name__");
        assert_eq!(s.labels[0].value, "ticks_total");
        assert_eq!(s.samples[0].timestamp, 1_700_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_failing_past_the_deadline_drops_the_tick() {
        let sink = Arc::new(MemorySink::new());
        let mut c = Collector::new(sink.clone(), Duration::from_secs(1));
        c.add_source(Box::new(Counter(0)));
        sink.fail_next(1000);
        let r = c
            .tick(
                UNIX_EPOCH,
                tokio::time::Instant::now() + Duration::from_secs(1),
            )
            .await;
        assert!(!r.sent);
        assert!(sink.take().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn run_ticks_every_interval_until_shutdown() {
        let sink = Arc::new(MemorySink::new());
        let mut c = Collector::new(sink.clone(), Duration::from_secs(10));
        c.add_source(Box::new(Counter(0)));
        // Ticks at 0, 10 and 20 s; shut down at 25 s.
        c.run(tokio::time::sleep(Duration::from_secs(25))).await;
        let got = sink.take();
        let values: Vec<f64> = got.iter().map(|g| g.series[0].samples[0].value).collect();
        assert_eq!(values, vec![1.0, 2.0, 3.0]);
    }
}

//! The [`Scraper`]: one tokio task per target, started, replaced and stopped as the
//! configuration changes, and the status `/api/v1/targets` shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::client::JobClient;
use super::config::{ScrapeConfig, ScrapeSection, prom_duration};
use super::cycle::{ScrapeOutput, ScrapeRules, ScrapeState};
use super::http::{FetchOptions, fetch};
use super::sink::{BusSink, ScrapeSink, StoreSink};
use super::target::{ActiveTarget, DroppedTargetStatus, Health, Target, Targets, targets_of};
use super::{ScrapeError, initial_delay, metrics};
use crate::exposition;
use crate::storage::{SeriesSamples, Tenants};

/// First pause after a sink failed a batch it may accept later (the bus); doubled per failure
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a loop stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Running,
    /// The target is gone: write end-of-run staleness markers.
    Removed,
    /// A new loop takes over the target (configuration change): no markers.
    Replaced,
}

struct LoopHandle {
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
    state: Arc<Mutex<ScrapeState>>,
    /// The job configuration and tenant the loop runs with, to tell changes apart.
    config: Arc<ScrapeConfig>,
    tenant: String,
}

/// Everything a loop needs.
struct LoopCtx {
    target: Target,
    url: reqwest::Url,
    config: Arc<ScrapeConfig>,
    rules: ScrapeRules,
    tenant: String,
    sink: Arc<dyn ScrapeSink>,
    client: Arc<JobClient>,
    status: Arc<RwLock<BTreeMap<u64, ActiveTarget>>>,
    key: u64,
    state: Arc<Mutex<ScrapeState>>,
}

/// Runs the scrape loops of a [`ScrapeSection`].
pub struct Scraper {
    sink: Arc<dyn ScrapeSink>,
    /// One HTTP client per job (by job name), kept across reloads that leave its settings.
    clients: Mutex<HashMap<String, Arc<JobClient>>>,
    loops: Mutex<HashMap<u64, LoopHandle>>,
    /// Loops of removed targets still waiting to write their staleness markers.
    /// A target re-added meanwhile cancels them and takes their staleness memory over.
    retiring: Mutex<Vec<(u64, LoopHandle)>>,
    /// Jobs of the last configuration, for the per-job targets gauge.
    jobs: Mutex<Vec<String>>,
    status: Arc<RwLock<BTreeMap<u64, ActiveTarget>>>,
    dropped: RwLock<Vec<DroppedTargetStatus>>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("sink", &self.sink.name())
            .field("targets", &lock(&self.loops).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scraper {
    /// A scraper writing into `tenants` (the server's scrape jobs); no loop runs until
    /// [`Scraper::apply`].
    pub fn new(tenants: Arc<dyn Tenants>) -> Result<Scraper, ScrapeError> {
        Scraper::with_sink(Arc::new(StoreSink::new(tenants)))
    }

    /// A scraper shipping every scrape to the bus's metrics topic through `producer` (the
    /// collector's scrape jobs, as a Prometheus agent); it never touches a store.
    pub fn to_bus(producer: Arc<dyn bus::Producer>) -> Result<Scraper, ScrapeError> {
        Scraper::with_sink(Arc::new(BusSink::new(producer)))
    }

    /// A scraper writing every scrape's batch to `sink`.
    pub fn with_sink(sink: Arc<dyn ScrapeSink>) -> Result<Scraper, ScrapeError> {
        Ok(Scraper {
            sink,
            clients: Mutex::new(HashMap::new()),
            loops: Mutex::new(HashMap::new()),
            retiring: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
            status: Arc::new(RwLock::new(BTreeMap::new())),
            dropped: RwLock::new(Vec::new()),
            shutdown: watch::channel(false).0,
        })
    }

    /// Validates `section` and makes the running loops match it: new targets start, removed
    /// ones stop (their series get staleness markers after two intervals, as in Prometheus),
    /// targets whose job changed restart keeping their staleness memory. Must run inside a
    /// tokio runtime. Targets whose labels are invalid after relabeling are logged and skipped.
    pub fn apply(&self, section: &ScrapeSection, prefix: &str) -> Result<(), ScrapeError> {
        section.validate(prefix).map_err(ScrapeError::Config)?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ScrapeError::NoRuntime)?;
        let clients = self.clients_for(section, prefix)?;
        let mut wanted: HashMap<u64, (Target, Arc<ScrapeConfig>, reqwest::Url)> = HashMap::new();
        let mut dropped = Vec::new();
        for cfg in &section.scrape_configs {
            let cfg = Arc::new(cfg.clone());
            let (active, gone, errors) = targets_of(&cfg, &section.global);
            for e in errors {
                tracing::warn!(error = %e, "scrape target skipped");
            }
            for t in active {
                match t.url(&cfg) {
                    Ok(url) => {
                        wanted.insert(t.key(&url), (t, cfg.clone(), url));
                    }
                    Err(e) => {
                        tracing::warn!(job = %t.job, error = %e, "scrape target skipped");
                    }
                }
            }
            dropped.extend(gone.into_iter().map(|d| DroppedTargetStatus {
                discovered_labels: d.discovered,
                scrape_pool: d.job,
            }));
        }
        let mut loops = lock(&self.loops);
        let mut retiring = lock(&self.retiring);
        retiring.retain(|(_, h)| !h.task.is_finished());
        // Loops whose job changed hand their staleness memory to their successor.
        let mut carried: HashMap<u64, Arc<Mutex<ScrapeState>>> = HashMap::new();
        let keys: Vec<u64> = loops.keys().copied().collect();
        for key in keys {
            let reason = match wanted.get(&key) {
                None => Stop::Removed,
                Some((_, cfg, _))
                    if **cfg != *loops[&key].config || loops[&key].tenant != section.tenant =>
                {
                    Stop::Replaced
                }
                Some(_) => continue,
            };
            let Some(h) = loops.remove(&key) else {
                continue;
            };
            // Ignored error: the loop already ended.
            let _ = h.stop.send(reason);
            if reason == Stop::Removed {
                write_status(&self.status).remove(&key);
            } else {
                carried.insert(key, h.state.clone());
            }
            retiring.push((key, h));
        }
        let mut per_job: HashMap<String, i64> = HashMap::new();
        for (key, (target, cfg, url)) in wanted {
            *per_job.entry(target.job.clone()).or_default() += 1;
            if loops.contains_key(&key) {
                continue;
            }
            // Every job of the section has a client (`clients_for`).
            let Some(client) = clients.get(&target.job).cloned() else {
                continue;
            };
            // A target removed earlier and back before its staleness markers were written:
            // cancel them and carry on with its memory.
            for (k, h) in retiring.iter() {
                if *k == key {
                    // Ignored error: the loop already ended.
                    let _ = h.stop.send(Stop::Replaced);
                    carried.entry(key).or_insert_with(|| h.state.clone());
                }
            }
            let state = match carried.remove(&key) {
                Some(state) => {
                    lock(&state).rules_changed();
                    state
                }
                None => Arc::new(Mutex::new(ScrapeState::new())),
            };
            let fresh = initial_status(&target, &url);
            write_status(&self.status)
                .entry(key)
                .and_modify(|s| {
                    // Keep the last scrape's outcome across a configuration change.
                    s.discovered_labels = fresh.discovered_labels.clone();
                    s.scrape_interval = fresh.scrape_interval.clone();
                    s.scrape_timeout = fresh.scrape_timeout.clone();
                })
                .or_insert(fresh);
            let ctx = LoopCtx {
                rules: rules_of(&target, &cfg),
                url,
                config: cfg.clone(),
                tenant: section.tenant.clone(),
                sink: self.sink.clone(),
                client,
                status: self.status.clone(),
                key,
                state: state.clone(),
                target,
            };
            let (stop_tx, stop_rx) = watch::channel(Stop::Running);
            let task = rt.spawn(run_loop(ctx, stop_rx, self.shutdown.subscribe()));
            loops.insert(
                key,
                LoopHandle {
                    stop: stop_tx,
                    task,
                    state,
                    config: cfg,
                    tenant: section.tenant.clone(),
                },
            );
        }
        let mut jobs = lock(&self.jobs);
        for job in jobs
            .iter()
            .chain(section.scrape_configs.iter().map(|c| &c.job_name))
        {
            per_job.entry(job.clone()).or_default();
        }
        *jobs = section
            .scrape_configs
            .iter()
            .map(|c| c.job_name.clone())
            .collect();
        for (job, n) in per_job {
            metrics::TARGETS
                .with_label_values(&[self.sink.name(), job.as_str()])
                .set(n);
        }
        *self.dropped.write().unwrap_or_else(|p| p.into_inner()) = dropped;
        *lock(&self.clients) = clients;
        Ok(())
    }

    /// The HTTP client of each job of `section`: the current one when its settings are
    /// unchanged, else a new one (reading its TLS files; the error names the key).
    fn clients_for(
        &self,
        section: &ScrapeSection,
        prefix: &str,
    ) -> Result<HashMap<String, Arc<JobClient>>, ScrapeError> {
        let old = lock(&self.clients);
        let mut clients = HashMap::new();
        for (i, cfg) in section.scrape_configs.iter().enumerate() {
            let client = match old.get(&cfg.job_name) {
                Some(c) if c.serves(cfg) => c.clone(),
                _ => Arc::new(
                    JobClient::new(cfg, &format!("{prefix}.scrape_configs[{i}]"))
                        .map_err(ScrapeError::Config)?,
                ),
            };
            clients.insert(cfg.job_name.clone(), client);
        }
        Ok(clients)
    }

    /// The active and dropped targets, sorted by pool and URL.
    pub fn targets(&self) -> Targets {
        let active: Vec<ActiveTarget> = self
            .status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let dropped = self
            .dropped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Targets::merge([Targets {
            active_targets: active,
            dropped_targets: dropped,
        }])
    }

    /// Stops every loop without staleness markers (the process is going down and resumes
    /// where it was, as Prometheus does) and waits for them.
    pub async fn shutdown(&self) {
        // Ignored error: no loop subscribed.
        let _ = self.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.loops)
            .drain()
            .map(|(_, h)| h.task)
            .chain(lock(&self.retiring).drain(..).map(|(_, h)| h.task))
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "scrape loop ended abnormally");
            }
        }
        write_status(&self.status).clear();
    }
}

fn write_status(
    s: &RwLock<BTreeMap<u64, ActiveTarget>>,
) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, ActiveTarget>> {
    s.write().unwrap_or_else(|p| p.into_inner())
}

fn rules_of(target: &Target, cfg: &ScrapeConfig) -> ScrapeRules {
    ScrapeRules {
        target_labels: target.public_labels(),
        honor_labels: cfg.honor_labels,
        honor_timestamps: cfg.honor_timestamps,
        metric_relabel_configs: cfg.metric_relabel_configs.clone(),
        sample_limit: cfg.sample_limit,
        label_limit: cfg.label_limit,
        label_name_length_limit: cfg.label_name_length_limit,
        label_value_length_limit: cfg.label_value_length_limit,
    }
}

fn initial_status(target: &Target, url: &reqwest::Url) -> ActiveTarget {
    ActiveTarget {
        discovered_labels: target.discovered.clone(),
        labels: target.public_labels(),
        scrape_pool: target.job.clone(),
        scrape_url: url.to_string(),
        global_url: url.to_string(),
        last_error: String::new(),
        last_scrape: None,
        last_scrape_duration: 0.0,
        health: Health::Unknown,
        scrape_interval: prom_duration::format(target.interval),
        scrape_timeout: prom_duration::format(target.timeout),
    }
}

fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Waits for a stop signal; `Stop::Removed` also when the scraper itself is gone.
async fn stopped(stop: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        if stop.changed().await.is_err() {
            return *stop.borrow();
        }
        let s = *stop.borrow();
        if s != Stop::Running {
            return s;
        }
    }
}

async fn run_loop(
    ctx: LoopCtx,
    mut stop: watch::Receiver<Stop>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = ctx.target.interval;
    let delay = initial_delay(ctx.key, interval, now_since_epoch());
    tracing::debug!(job = %ctx.target.job, url = %ctx.url, ?delay, "scrape loop starting");
    let start = tokio::time::Instant::now() + delay;
    let mut ticker = tokio::time::interval_at(start, interval);
    // A scrape whose write outlasts the interval (the bus refusing) skips the ticks it
    // missed: at most one batch per target waits, whatever the outage's length.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut scraped = false;
    let reason = loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            s = stopped(&mut stop) => break s,
            _ = ticker.tick() => {}
        }
        scrape_once(&ctx, &stop, &shutdown).await;
        scraped = true;
    };
    if reason != Stop::Removed || !scraped {
        return;
    }
    // Prometheus's end-of-run staleness: the target may come back (a reload), so wait for
    // the next scrape time, then one more interval and 10 %, before marking its series stale
    // at that next scrape time.
    // A re-added target cancels the markers (`Stop::Replaced`).
    let stale_time;
    tokio::select! {
        _ = shutdown.changed() => return,
        _ = stopped(&mut stop) => return,
        _ = ticker.tick() => stale_time = SystemTime::now(),
    }
    tokio::select! {
        _ = shutdown.changed() => return,
        _ = stopped(&mut stop) => return,
        _ = ticker.tick() => {}
    }
    tokio::select! {
        _ = shutdown.changed() => return,
        _ = stopped(&mut stop) => return,
        _ = tokio::time::sleep(interval / 10) => {}
    }
    let batch = lock(&ctx.state).end_of_run(&ctx.rules, millis(stale_time));
    let n = batch.len();
    if write(&ctx, batch, &stop, &shutdown).await {
        metrics::STALE_MARKERS
            .with_label_values(&[ctx.sink.name(), ctx.target.job.as_str()])
            .inc_by(n as u64);
    }
    tracing::debug!(job = %ctx.target.job, url = %ctx.url, markers = n, "scrape target removed");
}

async fn scrape_once(
    ctx: &LoopCtx,
    stop: &watch::Receiver<Stop>,
    shutdown: &watch::Receiver<bool>,
) {
    let labels = [ctx.sink.name(), ctx.target.job.as_str()];
    let job = ctx.target.job.as_str();
    let started = SystemTime::now();
    let t0 = Instant::now();
    let opts = FetchOptions {
        timeout: ctx.target.timeout,
        gzip: ctx.config.enable_compression,
        body_limit: usize::try_from(ctx.config.body_size_limit.as_u64()).unwrap_or(usize::MAX),
    };
    let page = fetch(&ctx.client, &ctx.url, opts).await.and_then(|p| {
        exposition::parse(&p.body, p.format).map_err(|e| format!("parsing the page: {e}"))
    });
    let duration = t0.elapsed();
    let out: ScrapeOutput = lock(&ctx.state).process(
        &ctx.rules,
        millis(started),
        duration,
        page.as_ref().map_err(Clone::clone),
    );
    metrics::SCRAPES.with_label_values(&labels).inc();
    metrics::DURATION
        .with_label_values(&labels)
        .observe(duration.as_secs_f64());
    if out.stale_markers > 0 {
        metrics::STALE_MARKERS
            .with_label_values(&labels)
            .inc_by(out.stale_markers as u64);
    }
    if let Some(e) = &out.report.error {
        metrics::FAILURES.with_label_values(&labels).inc();
        tracing::debug!(job, url = %ctx.url, error = %e, "scrape failed");
    }
    if let Some(s) = write_status(&ctx.status).get_mut(&ctx.key) {
        s.last_error = out.report.error.clone().unwrap_or_default();
        s.last_scrape = Some(started);
        s.last_scrape_duration = duration.as_secs_f64();
        s.health = if out.report.up {
            Health::Up
        } else {
            Health::Down
        };
    }
    let stored = write(ctx, out.batch, stop, shutdown).await;
    if stored && !(out.exemplars.is_empty() && out.metadata.is_empty()) {
        let n = out.exemplars.len();
        if let Err(e) = ctx
            .sink
            .write_annotations(&ctx.tenant, out.exemplars, out.metadata)
            .await
        {
            tracing::warn!(job, url = %ctx.url, exemplars = n, error = %e,
                "writing scraped exemplars or metadata failed");
        }
    }
}

/// Writes `batch` to the sink and counts the outcome; true when the sink took it.
///
/// A failure the sink may recover from (the bus) is retried with back-off until the batch is
/// taken, the loop is stopped or replaced (target removed or reconfigured), or the scraper
/// shuts down (then the batch is counted as dropped). Meanwhile the loop does not scrape, so memory stays at one batch per
/// target however long the bus refuses; the tsdb absorbs a batch delivered twice.
async fn write(
    ctx: &LoopCtx,
    batch: Vec<SeriesSamples>,
    stop: &watch::Receiver<Stop>,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let sink = ctx.sink.name();
    let job = ctx.target.job.as_str();
    let labels = [sink, job];
    let samples: usize = batch.iter().map(|s| s.samples.len()).sum();
    let batch: Arc<[SeriesSamples]> = batch.into();
    let (mut stop, mut shutdown) = (stop.clone(), shutdown.clone());
    let stop_at_start = *stop.borrow();
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u64;
    loop {
        let err = match ctx
            .sink
            .write(&ctx.tenant, &ctx.rules.target_labels, batch.clone())
            .await
        {
            Ok(report) => {
                metrics::SAMPLES_APPENDED
                    .with_label_values(&labels)
                    .inc_by(report.accepted as u64);
                for (reason, n) in &report.rejected {
                    metrics::SAMPLES_REJECTED
                        .with_label_values(&[sink, job, reason.as_str()])
                        .inc_by(*n as u64);
                }
                if let Some(first) = &report.first_rejection {
                    tracing::debug!(job, url = %ctx.url, rejected = report.rejected_total(), first = %first, "scraped samples rejected");
                }
                if failures > 0 {
                    tracing::info!(sink, job, url = %ctx.url, failures, "scraped samples written after retrying");
                }
                return true;
            }
            Err(e) => e,
        };
        if !err.retryable() {
            metrics::APPEND_ERRORS.with_label_values(&labels).inc();
            tracing::warn!(sink, job, url = %ctx.url, error = %err, "writing scraped samples failed");
            return false;
        }
        metrics::WRITE_RETRIES.with_label_values(&labels).inc();
        if failures == 0 {
            tracing::warn!(sink, job, url = %ctx.url, error = %err, "writing scraped samples failed; retrying");
        } else {
            tracing::debug!(sink, job, url = %ctx.url, error = %err, backoff_ms = backoff.as_millis() as u64, "writing scraped samples failed again");
        }
        failures += 1;
        let abandoned = *shutdown.borrow()
            || *stop.borrow() != stop_at_start
            || tokio::select! {
                _ = tokio::time::sleep(backoff) => false,
                _ = shutdown.changed() => true,
                _ = stop.changed() => true,
            };
        if abandoned {
            metrics::SAMPLES_DROPPED
                .with_label_values(&labels)
                .inc_by(samples as u64);
            tracing::warn!(sink, job, url = %ctx.url, samples, "scraped samples dropped: the scrape loop stopped while retrying");
            return false;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::labels::Labels;
    use crate::scrape::sink::SinkError;
    use crate::storage::{AppendReport, Sample, StorageError};

    /// Fails its first `fail` writes (as the bus, or as the store), then takes them.
    #[derive(Debug)]
    struct Flaky {
        fail: usize,
        bus: bool,
        attempts: AtomicUsize,
        taken: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl ScrapeSink for Flaky {
        fn name(&self) -> &'static str {
            "test"
        }
        async fn write(
            &self,
            _: &str,
            _: &Labels,
            batch: Arc<[SeriesSamples]>,
        ) -> Result<crate::storage::AppendReport, SinkError> {
            if self.attempts.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(if self.bus {
                    SinkError::Bus(bus::Error::Closed)
                } else {
                    SinkError::Store(StorageError::Internal("disk".into()))
                });
            }
            lock(&self.taken).push(batch.len());
            Ok(AppendReport {
                accepted: batch.len(),
                ..AppendReport::default()
            })
        }
    }

    fn ctx(sink: Arc<Flaky>) -> LoopCtx {
        let target = Target {
            job: "j".into(),
            discovered: Labels::empty(),
            labels: Labels::from_pairs([("job", "j")]),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        LoopCtx {
            url: reqwest::Url::parse("http://127.0.0.1:1/metrics").unwrap(),
            config: Arc::new(ScrapeConfig::default()),
            rules: rules_of(&target, &ScrapeConfig::default()),
            tenant: "t".into(),
            sink,
            client: Arc::new(JobClient::new(&ScrapeConfig::default(), "test").unwrap()),
            status: Arc::new(RwLock::new(BTreeMap::new())),
            key: 1,
            state: Arc::new(Mutex::new(ScrapeState::new())),
            target,
        }
    }

    fn batch() -> Vec<SeriesSamples> {
        vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "up")]),
            samples: vec![Sample { t: 1, v: 1.0 }],
        }]
    }

    fn flaky(fail: usize, bus: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            fail,
            bus,
            attempts: AtomicUsize::new(0),
            taken: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_bus_is_retried_until_it_takes_the_batch() {
        let sink = flaky(20, true);
        let (_stop_tx, stop) = watch::channel(Stop::Running);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        // Twenty refusals: far longer than the interval, the batch still arrives, once.
        assert!(write(&ctx(sink.clone()), batch(), &stop, &shutdown).await);
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 21);
        assert_eq!(*lock(&sink.taken), vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_is_not_retried() {
        let sink = flaky(1, false);
        let (_stop_tx, stop) = watch::channel(Stop::Running);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        assert!(!write(&ctx(sink.clone()), batch(), &stop, &shutdown).await);
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 1);
        assert!(lock(&sink.taken).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_ends_when_the_target_is_removed_or_the_scraper_stops() {
        for by_shutdown in [false, true] {
            let sink = flaky(usize::MAX, true);
            let (stop_tx, stop) = watch::channel(Stop::Running);
            let (shutdown_tx, shutdown) = watch::channel(false);
            let ctx = ctx(sink.clone());
            let task = tokio::spawn(async move { write(&ctx, batch(), &stop, &shutdown).await });
            tokio::time::sleep(Duration::from_secs(30)).await;
            if by_shutdown {
                shutdown_tx.send(true).unwrap();
            } else {
                stop_tx.send(Stop::Removed).unwrap();
            }
            assert!(!task.await.unwrap());
            // Backing off: a handful of attempts in 30 s, not thousands.
            let n = sink.attempts.load(Ordering::SeqCst);
            assert!((3..=15).contains(&n), "{n} attempts");
        }
    }
}

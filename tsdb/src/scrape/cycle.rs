//! One scrape's pure logic, as Prometheus's `scrapeLoop.append` and `report`: the parsed page
//! (or the failure) at a given time becomes the batch to store — samples with target labels,
//! the report series and staleness markers. No I/O, no clock: the caller passes the time.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use crate::exemplar::{Exemplar, SeriesExemplars};
use crate::exposition::{Exposition, MetricType};
use crate::labels::{Labels, METRIC_NAME};
use crate::metadata::Metadata;
use crate::relabel::{LabelsBuilder, RelabelConfig, process};
use crate::storage::{Sample, SeriesSamples, stale_nan};

/// What a target's samples go through: its labels, label handling and limits.
#[derive(Clone, Debug, Default)]
pub struct ScrapeRules {
    /// The target's public labels (`job`, `instance`, …), attached to every series.
    pub target_labels: Labels,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// 0 = no limit, for each of these.
    pub sample_limit: usize,
    pub label_limit: usize,
    pub label_name_length_limit: usize,
    pub label_value_length_limit: usize,
}

/// The figures of one scrape, written as the report series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrapeReport {
    pub up: bool,
    pub duration: Duration,
    /// Samples on the page (`scrape_samples_scraped`).
    pub samples_scraped: usize,
    /// Samples left after metric relabeling (`scrape_samples_post_metric_relabeling`).
    pub samples_post_relabel: usize,
    /// Series not in the previous scrape (`scrape_series_added`).
    pub series_added: usize,
    /// Why the scrape failed, when it did.
    pub error: Option<String>,
}

/// The outcome of one scrape: the batch to append and the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrapeOutput {
    pub batch: Vec<SeriesSamples>,
    pub report: ScrapeReport,
    /// Staleness markers in `batch` (for metrics).
    pub stale_markers: usize,
    /// The page's exemplars under their series' stored labels (an exemplar without a
    /// timestamp takes its sample's).
    pub exemplars: Vec<SeriesExemplars>,
    /// The page's metric metadata `(family, entry)`, when it differs from the previous
    /// scrape's (a store records it once, not every scrape).
    pub metadata: Vec<(String, Metadata)>,
}

/// Per-target memory between scrapes: the series of the last scrape (for staleness) and how
/// each scraped label set resolved (target labels and metric relabeling are applied once per
/// series, not once per scrape, as Prometheus's scrape cache does).
#[derive(Debug, Default)]
pub struct ScrapeState {
    /// Hash of the stored labels → labels, for series without their own timestamps.
    previous: HashMap<u64, Labels>,
    cache: HashMap<Labels, CacheEntry>,
    hasher: RandomState,
    /// Scrapes processed, for cache eviction.
    generation: u64,
    report_series_written: bool,
    /// The metadata of the last scrape that had any, to pass on only changes.
    last_metadata: Vec<(String, Metadata)>,
}

/// How a scraped label set resolves under the target's rules.
#[derive(Debug)]
enum Resolved {
    /// Metric relabeling dropped it.
    Dropped,
    /// Stored under these labels, with their hash.
    Series(Labels, u64),
    /// It fails the scrape (a limit, a missing name).
    Invalid(String),
}

#[derive(Debug)]
struct CacheEntry {
    resolved: Resolved,
    last_seen: u64,
}

/// Cache entries unseen for this many scrapes are forgotten.
const CACHE_GENERATIONS: u64 = 10;

/// The report series' names, in the order they are written.
pub const REPORT_METRICS: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

impl ScrapeState {
    pub fn new() -> ScrapeState {
        ScrapeState::default()
    }

    /// Forgets how label sets resolved: for a loop continuing with other rules.
    pub fn rules_changed(&mut self) {
        self.cache.clear();
    }

    /// Processes a scrape that started at `t_ms` and took `duration`: `page` is the parsed
    /// page, or why fetching or parsing it failed. On failure (including a limit exceeded) no
    /// scraped sample is stored, every series of the previous scrape gets a staleness marker,
    /// and `up` is 0.
    pub fn process(
        &mut self,
        rules: &ScrapeRules,
        t_ms: i64,
        duration: Duration,
        page: Result<&Exposition, String>,
    ) -> ScrapeOutput {
        self.generation += 1;
        let mut report = ScrapeReport {
            duration,
            ..ScrapeReport::default()
        };
        let mut current = HashMap::new();
        let mut exemplars = Vec::new();
        let mut metadata = Vec::new();
        let outcome = page.and_then(|page| {
            report.samples_scraped = page.samples.len();
            let md = page_metadata(page);
            if md != self.last_metadata {
                self.last_metadata = md.clone();
                metadata = md;
            }
            self.samples_of(rules, t_ms, page, &mut exemplars)
        });
        let mut batch = match outcome {
            Ok(series) => {
                report.up = true;
                report.samples_post_relabel = series.len();
                let mut batch = Vec::with_capacity(series.len() + REPORT_METRICS.len());
                for (labels, hash, sample, tracked) in series {
                    if tracked {
                        if !self.previous.contains_key(&hash) {
                            report.series_added += 1;
                        }
                        current.insert(hash, labels.clone());
                    }
                    batch.push(SeriesSamples {
                        labels,
                        samples: vec![sample],
                    });
                }
                batch
            }
            Err(e) => {
                report.error = Some(e);
                exemplars.clear();
                Vec::new()
            }
        };
        let mut stale_markers = 0;
        for (hash, gone) in self.previous.drain() {
            if !current.contains_key(&hash) {
                batch.push(stale(gone, t_ms));
                stale_markers += 1;
            }
        }
        self.previous = current;
        let oldest = self.generation.saturating_sub(CACHE_GENERATIONS);
        self.cache.retain(|_, e| e.last_seen > oldest);
        batch.extend(report_series(rules, t_ms, &report));
        self.report_series_written = true;
        ScrapeOutput {
            batch,
            report,
            stale_markers,
            exemplars,
            metadata,
        }
    }

    /// The page's samples with target labels and metric relabeling applied: (labels, their
    /// hash, sample, whether staleness tracks it); their exemplars go to `exemplars`. An error
    /// fails the whole scrape.
    fn samples_of(
        &mut self,
        rules: &ScrapeRules,
        t_ms: i64,
        page: &Exposition,
        exemplars: &mut Vec<SeriesExemplars>,
    ) -> Result<Vec<(Labels, u64, Sample, bool)>, String> {
        let mut out = Vec::with_capacity(page.samples.len());
        let mut seen = HashSet::with_capacity(page.samples.len());
        for s in &page.samples {
            if !self.cache.contains_key(&s.labels) {
                let resolved = resolve(rules, &s.labels, &self.hasher);
                self.cache.insert(
                    s.labels.clone(),
                    CacheEntry {
                        resolved,
                        last_seen: 0,
                    },
                );
            }
            let Some(entry) = self.cache.get_mut(&s.labels) else {
                continue;
            };
            entry.last_seen = self.generation;
            let (labels, hash) = match &entry.resolved {
                Resolved::Dropped => continue,
                Resolved::Invalid(e) => return Err(e.clone()),
                Resolved::Series(labels, hash) => (labels, *hash),
            };
            // A repeated series keeps its first sample (Prometheus rejects the duplicate).
            if !seen.insert(hash) {
                continue;
            }
            let (t, tracked) = match (rules.honor_timestamps, s.timestamp_ms) {
                // Samples with their own timestamps are not tracked for staleness.
                (true, Some(ts)) => (ts, false),
                _ => (t_ms, true),
            };
            if let Some(e) = &s.exemplar {
                exemplars.push(SeriesExemplars {
                    labels: labels.clone(),
                    exemplars: vec![Exemplar {
                        labels: e.labels.clone(),
                        value: e.value,
                        t: e.timestamp_ms.unwrap_or(t),
                        has_ts: e.timestamp_ms.is_some(),
                    }],
                });
            }
            out.push((labels.clone(), hash, Sample { t, v: s.value }, tracked));
            if rules.sample_limit > 0 && out.len() > rules.sample_limit {
                return Err(format!(
                    "sample limit exceeded (limit {})",
                    rules.sample_limit
                ));
            }
        }
        Ok(out)
    }

    /// Staleness markers at `t_ms` for everything the target wrote, report series included:
    /// for a target that is gone (Prometheus's end-of-run staleness).
    pub fn end_of_run(&mut self, rules: &ScrapeRules, t_ms: i64) -> Vec<SeriesSamples> {
        let mut batch: Vec<SeriesSamples> =
            self.previous.drain().map(|(_, l)| stale(l, t_ms)).collect();
        if std::mem::take(&mut self.report_series_written) {
            batch.extend(
                REPORT_METRICS
                    .iter()
                    .map(|name| stale(report_labels(rules, name), t_ms)),
            );
        }
        batch
    }
}

/// The page's `# TYPE/# HELP/# UNIT` entries that say something.
fn page_metadata(page: &Exposition) -> Vec<(String, Metadata)> {
    page.metadata
        .iter()
        .filter(|m| m.kind != MetricType::Unknown || !m.help.is_empty() || !m.unit.is_empty())
        .map(|m| {
            (
                m.family.clone(),
                Metadata {
                    kind: m.kind.as_str().to_string(),
                    help: m.help.clone(),
                    unit: m.unit.clone(),
                },
            )
        })
        .collect()
}

fn stale(labels: Labels, t_ms: i64) -> SeriesSamples {
    SeriesSamples {
        labels,
        samples: vec![Sample {
            t: t_ms,
            v: stale_nan(),
        }],
    }
}

fn report_labels(rules: &ScrapeRules, name: &str) -> Labels {
    // Target labels win over nothing here; the name is ours.
    let mut b = LabelsBuilder::new(&rules.target_labels);
    b.set(METRIC_NAME, name);
    b.labels()
}

fn report_series(rules: &ScrapeRules, t_ms: i64, r: &ScrapeReport) -> Vec<SeriesSamples> {
    let values = [
        if r.up { 1.0 } else { 0.0 },
        r.duration.as_secs_f64(),
        r.samples_scraped as f64,
        r.samples_post_relabel as f64,
        r.series_added as f64,
    ];
    REPORT_METRICS
        .iter()
        .zip(values)
        .map(|(name, v)| SeriesSamples {
            labels: report_labels(rules, name),
            samples: vec![Sample { t: t_ms, v }],
        })
        .collect()
}

/// How one scraped label set resolves: target labels, metric relabeling, then the checks.
fn resolve(rules: &ScrapeRules, scraped: &Labels, hasher: &RandomState) -> Resolved {
    let labels = mutate_labels(rules, scraped);
    let Some(labels) = process(&labels, &rules.metric_relabel_configs) else {
        return Resolved::Dropped;
    };
    if labels.metric_name().is_none() {
        // As Prometheus: a series relabeled out of its name fails the scrape.
        return Resolved::Invalid("missing metric name (__name__ label)".to_string());
    }
    if let Err(e) = check_label_limits(rules, &labels) {
        return Resolved::Invalid(e);
    }
    let hash = hasher.hash_one(&labels);
    Resolved::Series(labels, hash)
}

fn check_label_limits(rules: &ScrapeRules, labels: &Labels) -> Result<(), String> {
    if rules.label_limit > 0 && labels.len() > rules.label_limit {
        return Err(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            labels.metric_name().unwrap_or(""),
            labels.len(),
            rules.label_limit
        ));
    }
    for l in labels.iter() {
        if rules.label_name_length_limit > 0 && l.name.len() > rules.label_name_length_limit {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {}, limit: {})",
                labels.metric_name().unwrap_or(""),
                l.name,
                l.name.len(),
                rules.label_name_length_limit
            ));
        }
        if rules.label_value_length_limit > 0 && l.value.len() > rules.label_value_length_limit {
            return Err(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {}, limit: {})",
                labels.metric_name().unwrap_or(""),
                l.name,
                &*l.value,
                l.value.len(),
                rules.label_value_length_limit
            ));
        }
    }
    Ok(())
}

/// Target labels onto a scraped series (Prometheus's `mutateSampleLabels`): with
/// `honor_labels` the scraped value wins; otherwise the target's does and the scraped one is
/// kept as `exported_<name>` (prefixed again until the name is free).
fn mutate_labels(rules: &ScrapeRules, scraped: &Labels) -> Labels {
    let mut b = LabelsBuilder::new(scraped);
    if rules.honor_labels {
        for l in rules.target_labels.iter() {
            if scraped.get(&l.name).is_none() {
                b.set(&l.name, &l.value);
            }
        }
        return b.labels();
    }
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for l in rules.target_labels.iter() {
        if let Some(v) = scraped.get(&l.name) {
            conflicts.push((l.name.to_string(), v.to_string()));
        }
        b.set(&l.name, &l.value);
    }
    // Shorter names first, as Prometheus resolves them.
    conflicts.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
    for (name, value) in conflicts {
        let mut new_name = format!("exported_{name}");
        while !b.get(&new_name).is_empty() {
            new_name = format!("exported_{new_name}");
        }
        b.set(&new_name, &value);
    }
    b.labels()
}

#[cfg(test)]
mod tests;

//! A realistic metrics workload for benchmarks: cAdvisor-like counters and gauges for N containers
//! (with pod churn), and RED counters and latency histograms per service, at a fixed interval,
//! pre-encoded as remote-write requests in time order per shard (as Prometheus's shards send).

use bus::proto::{Label, Sample, TimeSeries};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::remote_write;

/// The shape of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Container slots; each runs one container at a time, replaced on churn.
    pub containers: usize,
    /// Hours of data, ending at `end_ms`.
    pub hours: f64,
    pub interval_ms: i64,
    /// Fraction of containers replaced per hour (new pod, new series).
    pub churn_per_hour: f64,
    pub end_ms: i64,
    /// Remote-write shards (senders), each with its own series in time order.
    pub shards: usize,
    /// Most samples per request.
    pub batch: usize,
    pub seed: u64,
}

/// Counter or gauge, and how values move.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A float counter in whole microseconds, like cgroup CPU usage, increasing by about
    /// `per_s` per second.
    CounterMicros { per_s: f64 },
    /// An integer counter increasing by about `per_s` per second.
    CounterInt { per_s: f64 },
    /// A byte gauge in whole pages, wandering around `base`.
    GaugePages { base: f64 },
}

const CONTAINER_METRICS: &[(&str, Kind)] = &[
    (
        "container_cpu_usage_seconds_total",
        Kind::CounterMicros { per_s: 0.2 },
    ),
    (
        "container_cpu_user_seconds_total",
        Kind::CounterMicros { per_s: 0.15 },
    ),
    (
        "container_cpu_system_seconds_total",
        Kind::CounterMicros { per_s: 0.05 },
    ),
    (
        "container_cpu_cfs_periods_total",
        Kind::CounterInt { per_s: 10.0 },
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        Kind::CounterInt { per_s: 0.3 },
    ),
    (
        "container_memory_usage_bytes",
        Kind::GaugePages { base: 3.0e8 },
    ),
    (
        "container_memory_working_set_bytes",
        Kind::GaugePages { base: 2.0e8 },
    ),
    ("container_memory_rss", Kind::GaugePages { base: 1.5e8 }),
    ("container_memory_cache", Kind::GaugePages { base: 1.0e8 }),
    (
        "container_network_receive_bytes_total",
        Kind::CounterInt { per_s: 2.0e5 },
    ),
    (
        "container_network_transmit_bytes_total",
        Kind::CounterInt { per_s: 1.0e5 },
    ),
    (
        "container_fs_writes_bytes_total",
        Kind::CounterInt { per_s: 5.0e4 },
    ),
];

/// Upper bounds of the latency histogram's buckets (seconds), before `+Inf`.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const METHODS: &[&str] = &["GET", "POST"];
const STATUSES: &[(&str, f64)] = &[("2xx", 0.95), ("4xx", 0.04), ("5xx", 0.01)];

/// The encoded workload and its figures.
#[derive(Debug)]
pub struct Workload {
    /// Per shard, request bodies in the order they must be sent.
    pub shards: Vec<Vec<Vec<u8>>>,
    pub samples: u64,
    /// Distinct series over the whole span (churn included).
    pub series_total: u64,
    /// Series present at the last step.
    pub series_active: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub encoded_bytes: u64,
}

/// One generated series with its running value.
struct Series {
    labels: Vec<Label>,
    kind: Kind,
    value: f64,
    /// Scale of this series' rate or level (per container or service).
    scale: f64,
}

fn label(name: &str, value: impl Into<String>) -> Label {
    Label {
        name: name.to_string(),
        value: value.into(),
    }
}

/// Sorted labels with `__name__` first (it sorts first anyway: `_` < lowercase letters).
fn labels(name: &str, mut rest: Vec<Label>) -> Vec<Label> {
    rest.push(label("__name__", name));
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    rest
}

impl Series {
    fn advance(&mut self, rng: &mut StdRng, interval_s: f64) {
        let jitter = 0.8 + 0.4 * rng.random::<f64>();
        match self.kind {
            Kind::CounterMicros { per_s } => {
                let inc = per_s * self.scale * interval_s * jitter;
                self.value = ((self.value + inc) * 1e6).round() / 1e6;
            }
            Kind::CounterInt { per_s } => {
                self.value += (per_s * self.scale * interval_s * jitter).round();
            }
            Kind::GaugePages { base } => {
                let target = base * self.scale;
                let drift =
                    (rng.random::<f64>() - 0.5) * 0.02 * target + 0.05 * (target - self.value);
                self.value = ((self.value + drift).max(4096.0) / 4096.0).round() * 4096.0;
            }
        }
    }
}

/// The series of container slot `slot` in generation `generation`.
fn container_series(slot: usize, generation: u64, rng: &mut StdRng) -> Vec<Series> {
    let ns = format!("ns-{}", slot % 20);
    let app = format!("app-{}", slot / 5);
    let pod = format!("{app}-{:08x}-{generation}", slot * 7919);
    let uid = format!("{:08x}-0000-4000-8000-{:012x}", slot, generation);
    let cid = format!("{:064x}", (slot as u128) << 32 | generation as u128);
    let id = format!("/kubepods/burstable/pod{uid}/{cid}");
    let node = format!("node-{}", slot % 16);
    let scale = 0.2 + 1.6 * rng.random::<f64>();
    CONTAINER_METRICS
        .iter()
        .map(|&(name, kind)| {
            let mut extra = vec![
                label("container", app.clone()),
                label("id", id.clone()),
                label("image", format!("registry.local/{app}:1.{generation}")),
                label("instance", node.clone()),
                label("job", "kubernetes-cadvisor"),
                label("namespace", ns.clone()),
                label("pod", pod.clone()),
            ];
            if name.starts_with("container_network") {
                extra.push(label("interface", "eth0"));
            }
            if name.starts_with("container_fs") {
                extra.push(label("device", "/dev/vda"));
            }
            if name == "container_cpu_usage_seconds_total" {
                extra.push(label("cpu", "total"));
            }
            let value = match kind {
                Kind::GaugePages { base } => (base * scale / 4096.0).round() * 4096.0,
                _ => 0.0,
            };
            Series {
                labels: labels(name, extra),
                kind,
                value,
                scale,
            }
        })
        .collect()
}

/// The RED series of one service and method: request counters per status class and a latency
/// histogram, all driven by one request count per step.
struct Red {
    /// Requests per second.
    rate: f64,
    series: Vec<(Vec<Label>, RedPart, f64)>,
}

/// What a RED series counts of a step's `n` requests.
#[derive(Clone, Copy, Debug)]
enum RedPart {
    /// The share of requests with one status class.
    Status(f64),
    /// Requests at or under `BUCKETS[i]`.
    Bucket(usize),
    /// Every request (`le="+Inf"` and `_count`).
    All,
    /// Summed latency.
    Sum,
}

fn service_series(svc: usize, rng: &mut StdRng) -> Vec<Red> {
    let host = format!("svc-{svc}.example.com");
    let rate = 5.0 + 100.0 * rng.random::<f64>();
    let base = |m: &str| {
        vec![
            label("host", host.clone()),
            label("job", "sextant-router"),
            label("method", m),
            label("service", format!("svc-{svc}")),
        ]
    };
    let mut out = Vec::new();
    for (mi, &m) in METHODS.iter().enumerate() {
        let mut series = Vec::new();
        for &(status, share) in STATUSES {
            let mut l = base(m);
            l.push(label("status", status));
            series.push((
                labels("sextant_http_requests_total", l),
                RedPart::Status(share),
            ));
        }
        let bucket = "sextant_http_request_duration_seconds_bucket";
        for (bi, &le) in BUCKETS.iter().enumerate() {
            let mut l = base(m);
            l.push(label("le", format!("{le}")));
            series.push((labels(bucket, l), RedPart::Bucket(bi)));
        }
        let mut l = base(m);
        l.push(label("le", "+Inf"));
        series.push((labels(bucket, l), RedPart::All));
        series.push((
            labels("sextant_http_request_duration_seconds_count", base(m)),
            RedPart::All,
        ));
        series.push((
            labels("sextant_http_request_duration_seconds_sum", base(m)),
            RedPart::Sum,
        ));
        out.push(Red {
            rate: rate / (1 + mi * 3) as f64,
            series: series.into_iter().map(|(l, p)| (l, p, 0.0)).collect(),
        });
    }
    out
}

/// Share of requests at or under `le` seconds: a log-logistic latency with a 60 ms median.
fn latency_cdf(le: f64) -> f64 {
    let x = (le / 0.06).powf(2.2);
    x / (1.0 + x)
}

impl Workload {
    /// Generates and encodes the workload.
    pub fn generate(cfg: &WorkloadConfig) -> anyhow::Result<Workload> {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let steps = ((cfg.hours * 3_600_000.0) / cfg.interval_ms as f64).round() as i64;
        let start_ms = cfg.end_ms - (steps - 1) * cfg.interval_ms;
        let interval_s = cfg.interval_ms as f64 / 1000.0;
        let steps_per_hour = 3_600_000.0 / cfg.interval_ms as f64;
        // Each slot's container lives `lifetime` steps; phases spread replacements evenly.
        let lifetime = if cfg.churn_per_hour > 0.0 {
            ((steps_per_hour / cfg.churn_per_hour).round() as u64).max(1)
        } else {
            u64::MAX
        };
        let phases: Vec<u64> = (0..cfg.containers)
            .map(|_| rng.random_range(0..lifetime.min(1 << 40)))
            .collect();
        let generation = |slot: usize, step: i64| (step as u64 + phases[slot]) / lifetime;

        let mut containers: Vec<(u64, Vec<Series>)> = (0..cfg.containers)
            .map(|slot| {
                let g = generation(slot, 0);
                (g, container_series(slot, g, &mut rng))
            })
            .collect();
        let services = cfg.containers.div_ceil(10);
        let mut red: Vec<Red> = (0..services)
            .flat_map(|s| service_series(s, &mut rng))
            .collect();
        let red_series: usize = red.iter().map(|r| r.series.len()).sum();

        let mut series_total = (containers.len() * CONTAINER_METRICS.len() + red_series) as u64;
        let mut shards: Vec<Vec<Vec<u8>>> = vec![Vec::new(); cfg.shards];
        let mut pending: Vec<Vec<TimeSeries>> = vec![Vec::new(); cfg.shards];
        let mut samples = 0u64;
        let mut encoded_bytes = 0u64;
        let mut flush = |shard: usize,
                         pending: &mut Vec<Vec<TimeSeries>>,
                         shards: &mut Vec<Vec<Vec<u8>>>|
         -> anyhow::Result<()> {
            let batch = std::mem::take(&mut pending[shard]);
            if !batch.is_empty() {
                let body = remote_write::encode(batch)?;
                encoded_bytes += body.len() as u64;
                shards[shard].push(body);
            }
            Ok(())
        };

        for step in 0..steps {
            let t = start_ms + step * cfg.interval_ms;
            let mut index = 0usize;
            let mut emit = |labels: &Vec<Label>,
                            v: f64,
                            pending: &mut Vec<Vec<TimeSeries>>,
                            shards: &mut Vec<Vec<Vec<u8>>>|
             -> anyhow::Result<()> {
                let shard = index % cfg.shards;
                index += 1;
                pending[shard].push(TimeSeries {
                    labels: labels.clone(),
                    samples: vec![Sample {
                        value: v,
                        timestamp: t,
                    }],
                    exemplars: Vec::new(),
                });
                samples += 1;
                if pending[shard].len() >= cfg.batch {
                    flush(shard, pending, shards)?;
                }
                Ok(())
            };
            for (slot, (g, series)) in containers.iter_mut().enumerate() {
                let now = generation(slot, step);
                if now != *g {
                    *g = now;
                    *series = container_series(slot, now, &mut rng);
                    series_total += series.len() as u64;
                }
                for s in series.iter_mut() {
                    if step > 0 {
                        s.advance(&mut rng, interval_s);
                    }
                    emit(&s.labels, s.value, &mut pending, &mut shards)?;
                }
            }
            for r in red.iter_mut() {
                let n = if step > 0 {
                    (r.rate * interval_s * (0.9 + 0.2 * rng.random::<f64>())).round()
                } else {
                    0.0
                };
                for (labels, part, value) in r.series.iter_mut() {
                    *value += match *part {
                        RedPart::Status(share) => (n * share).round(),
                        RedPart::Bucket(i) => (n * latency_cdf(BUCKETS[i])).round(),
                        RedPart::All => n,
                        RedPart::Sum => (n * 0.08 * 1e3).round() / 1e3,
                    };
                    emit(labels, *value, &mut pending, &mut shards)?;
                }
            }
        }
        for shard in 0..cfg.shards {
            flush(shard, &mut pending, &mut shards)?;
        }
        Ok(Workload {
            shards,
            samples,
            series_total,
            series_active: (containers.len() * CONTAINER_METRICS.len() + red_series) as u64,
            start_ms,
            end_ms: start_ms + (steps - 1) * cfg.interval_ms,
            encoded_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn decode(body: &[u8]) -> remote_write::WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        remote_write::WriteRequest::decode(&raw[..]).unwrap()
    }

    #[test]
    fn counters_grow_gauges_stay_paged_and_churn_adds_series() {
        let cfg = WorkloadConfig {
            containers: 20,
            hours: 1.0,
            interval_ms: 15_000,
            churn_per_hour: 0.5,
            end_ms: 1_700_000_000_000,
            shards: 2,
            batch: 100,
            seed: 7,
        };
        let w = Workload::generate(&cfg).unwrap();
        assert_eq!(w.end_ms, cfg.end_ms);
        assert_eq!(w.series_active, 20 * 12 + 2 * 34);
        assert!(w.series_total > w.series_active, "no churn");
        let mut n = 0;
        let mut last: std::collections::HashMap<Vec<Label>, (i64, f64)> = Default::default();
        for shard in &w.shards {
            for body in shard {
                for ts in decode(body).timeseries {
                    for s in ts.samples {
                        n += 1;
                        let name = &ts.labels[0].value;
                        assert_eq!(ts.labels[0].name, "__name__");
                        if name.ends_with("_bytes")
                            || name == "container_memory_rss"
                            || name == "container_memory_cache"
                        {
                            assert_eq!(s.value % 4096.0, 0.0, "{name}");
                        }
                        if let Some((t0, v0)) =
                            last.insert(ts.labels.clone(), (s.timestamp, s.value))
                        {
                            assert!(s.timestamp > t0, "out of order in a shard");
                            if name.ends_with("_total") || name.ends_with("_bucket") {
                                assert!(s.value >= v0, "{name} decreased");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(n, w.samples);
        assert_eq!(last.len() as u64, w.series_total);
    }
}

//! One cgroup's statistics and their cAdvisor names (`lib/metrics/prometheus.go`).

use crate::source::SeriesGroup;

/// A pressure file's cumulative stall times, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: Option<u64>,
    pub full_us: Option<u64>,
}

/// Per-device block I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// `/dev/<name>` when known, else `major:minor`.
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// Per-interface network counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceNet {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What was read of one cgroup; `None` where the file was missing (never exported then).
/// Times in nanoseconds, sizes in bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub cpu_usage_ns: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_rss: Option<u64>,
    pub memory_cache: Option<u64>,
    pub memory_swap: Option<u64>,
    pub memory_failcnt: Option<u64>,
    pub oom_kills: Option<u64>,
    /// Limits: read when a cgroup is first seen and every spec refresh after.
    pub spec: Spec,
    pub processes: Option<u64>,
    pub threads: Option<u64>,
    pub io: Vec<DeviceIo>,
    pub net: Vec<InterfaceNet>,
    /// cpu, memory, io.
    pub pressure: [Pressure; 3],
}

/// A cgroup's limits (cAdvisor's container spec, read once per container there). `None` where
/// unset or the file is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    /// 0 means unlimited, as cAdvisor reports limits above 2^62.
    pub memory_limit: Option<u64>,
    pub cpu_quota: Option<u64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    /// v1 `memory.use_hierarchy` (true when absent).
    pub memory_hierarchical: Option<bool>,
}

/// cAdvisor reports memory limits above this as 0 (unlimited).
pub(crate) const MAX_MEMORY: u64 = 1 << 62;

pub(crate) fn spec_memory(v: u64) -> u64 {
    if v > MAX_MEMORY { 0 } else { v }
}

/// cAdvisor's `convertCPUWeightToCPULimit`: cgroup v2 `cpu.weight` [1, 10000] to v1 shares
/// [2, 262144].
pub(crate) fn weight_to_shares(weight: u64) -> Option<u64> {
    (1..=10000)
        .contains(&weight)
        .then(|| 2 + ((weight - 1) * 262_142) / 9999)
}

impl Stats {
    /// Clears for reuse, keeping the vectors' capacity.
    pub fn clear(&mut self) {
        let mut io = std::mem::take(&mut self.io);
        let mut net = std::mem::take(&mut self.net);
        io.clear();
        net.clear();
        *self = Stats {
            io,
            net,
            ..Stats::default()
        };
    }

    /// Appends the cAdvisor series of these stats to `g`, stamped `ts`; returns the number of
    /// samples.
    pub fn emit(&self, g: &mut SeriesGroup, ts: i64) -> u64 {
        let before = g.series.len();
        let secs = |ns: u64| ns as f64 / 1e9;
        let one = |g: &mut SeriesGroup, name: &str, v: Option<f64>| {
            if let Some(v) = v {
                g.push(name, &[], v, ts);
            }
        };
        if let Some(v) = self.cpu_usage_ns {
            g.push(
                "container_cpu_usage_seconds_total",
                &[("cpu", "total")],
                secs(v),
                ts,
            );
        }
        one(
            g,
            "container_cpu_user_seconds_total",
            self.cpu_user_ns.map(secs),
        );
        one(
            g,
            "container_cpu_system_seconds_total",
            self.cpu_system_ns.map(secs),
        );
        one(
            g,
            "container_cpu_cfs_periods_total",
            self.cfs_periods.map(|v| v as f64),
        );
        one(
            g,
            "container_cpu_cfs_throttled_periods_total",
            self.cfs_throttled_periods.map(|v| v as f64),
        );
        one(
            g,
            "container_cpu_cfs_throttled_seconds_total",
            self.cfs_throttled_ns.map(secs),
        );
        let f = |v: Option<u64>| v.map(|v| v as f64);
        one(g, "container_memory_usage_bytes", f(self.memory_usage));
        one(
            g,
            "container_memory_working_set_bytes",
            f(self.memory_working_set),
        );
        one(g, "container_memory_rss", f(self.memory_rss));
        one(g, "container_memory_cache", f(self.memory_cache));
        one(g, "container_memory_swap", f(self.memory_swap));
        one(g, "container_memory_failcnt", f(self.memory_failcnt));
        one(g, "container_oom_events_total", f(self.oom_kills));
        one(
            g,
            "container_spec_memory_limit_bytes",
            f(self.spec.memory_limit),
        );
        one(g, "container_spec_cpu_quota", f(self.spec.cpu_quota));
        one(g, "container_spec_cpu_period", f(self.spec.cpu_period));
        one(g, "container_spec_cpu_shares", f(self.spec.cpu_shares));
        one(g, "container_processes", f(self.processes));
        one(g, "container_threads", f(self.threads));
        for d in &self.io {
            let dev = [("device", d.device.as_str())];
            g.push(
                "container_fs_reads_bytes_total",
                &dev,
                d.read_bytes as f64,
                ts,
            );
            g.push(
                "container_fs_writes_bytes_total",
                &dev,
                d.write_bytes as f64,
                ts,
            );
        }
        for n in &self.net {
            let i = [("interface", n.interface.as_str())];
            g.push(
                "container_network_receive_bytes_total",
                &i,
                n.rx_bytes as f64,
                ts,
            );
            g.push(
                "container_network_transmit_bytes_total",
                &i,
                n.tx_bytes as f64,
                ts,
            );
        }
        let us = |v: Option<u64>| v.map(|v| v as f64 / 1e6);
        for (p, res) in self.pressure.iter().zip(["cpu", "memory", "io"]) {
            if let Some(v) = us(p.some_us) {
                g.push(
                    &format!("container_pressure_{res}_waiting_seconds_total"),
                    &[],
                    v,
                    ts,
                );
            }
            if let Some(v) = us(p.full_us) {
                g.push(
                    &format!("container_pressure_{res}_stalled_seconds_total"),
                    &[],
                    v,
                    ts,
                );
            }
        }
        (g.series.len() - before) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversion_matches_cadvisor() {
        assert_eq!(weight_to_shares(1), Some(2));
        assert_eq!(weight_to_shares(100), Some(2597));
        assert_eq!(weight_to_shares(10000), Some(262_144));
        assert_eq!(weight_to_shares(0), None);
        assert_eq!(weight_to_shares(10001), None);
    }

    #[test]
    fn emits_names_units_and_extra_labels() {
        let s = Stats {
            cpu_usage_ns: Some(2_500_000_000),
            cfs_throttled_ns: Some(1_000_000),
            memory_usage: Some(100),
            io: vec![DeviceIo {
                device: "/dev/sda".into(),
                read_bytes: 1,
                write_bytes: 2,
            }],
            pressure: [
                Pressure {
                    some_us: Some(1_500_000),
                    full_us: None,
                },
                Pressure::default(),
                Pressure::default(),
            ],
            ..Stats::default()
        };
        let mut g = SeriesGroup::default();
        assert_eq!(s.emit(&mut g, 7), 6);
        let find = |name: &str| {
            g.series
                .iter()
                .find(|t| {
                    t.labels
                        .iter()
                        .any(|l| l.name == "__name__" && l.value == name)
                })
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let cpu = find("container_cpu_usage_seconds_total");
        assert_eq!(cpu.samples[0].value, 2.5);
        assert_eq!(cpu.samples[0].timestamp, 7);
        assert!(
            cpu.labels
                .iter()
                .any(|l| l.name == "cpu" && l.value == "total")
        );
        assert_eq!(
            find("container_cpu_cfs_throttled_seconds_total").samples[0].value,
            0.001
        );
        assert!(
            find("container_fs_writes_bytes_total")
                .labels
                .iter()
                .any(|l| l.value == "/dev/sda")
        );
        assert_eq!(
            find("container_pressure_cpu_waiting_seconds_total").samples[0].value,
            1.5
        );
    }
}

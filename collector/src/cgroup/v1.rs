//! cgroup v1 files, as runc's `libcontainer/cgroups/fs` reads them for cAdvisor.

use std::path::Path;

use super::parse;
use super::read::Reader;
use super::stats::{DeviceIo, Stats, spec_memory};

/// `USER_HZ`: the unit of `cpuacct.stat` (runc's `fs/cpuacct.go` uses the same constant).
const CLOCK_TICKS: u64 = 100;

impl Reader {
    pub(crate) fn v1_cpu(
        &mut self,
        cpuacct: Option<&Path>,
        cpu: Option<&Path>,
        spec: bool,
        s: &mut Stats,
    ) {
        if let Some(a) = cpuacct {
            if self.read(a, "cpuacct.usage") {
                s.cpu_usage_ns = parse::single_u64(self.buf());
            }
            if self.read(a, "cpuacct.stat") {
                let ticks = |k| {
                    parse::keyed(self.buf(), k)
                        .map(|t| t.saturating_mul(1_000_000_000 / CLOCK_TICKS))
                };
                s.cpu_user_ns = ticks("user");
                s.cpu_system_ns = ticks("system");
            }
        }
        if let Some(c) = cpu {
            if self.read(c, "cpu.stat") {
                let b = self.buf();
                s.cfs_periods = parse::keyed(b, "nr_periods");
                s.cfs_throttled_periods = parse::keyed(b, "nr_throttled");
                s.cfs_throttled_ns = parse::keyed(b, "throttled_time");
            }
            if !spec {
                return;
            }
            if self.read(c, "cpu.cfs_period_us") {
                s.spec.cpu_period = parse::single_u64(self.buf());
            }
            if self.read(c, "cpu.cfs_quota_us") {
                // -1: no quota (cAdvisor then reports none).
                s.spec.cpu_quota = parse::single_i64(self.buf())
                    .filter(|q| *q > 0)
                    .and_then(|q| u64::try_from(q).ok());
            }
            if self.read(c, "cpu.shares") {
                s.spec.cpu_shares = parse::single_u64(self.buf());
            }
        }
    }

    pub(crate) fn v1_memory(&mut self, m: &Path, spec: bool, s: &mut Stats) {
        if self.read(m, "memory.usage_in_bytes") {
            s.memory_usage = parse::single_u64(self.buf());
        }
        // cAdvisor's `setMemoryStats`: hierarchical totals unless use_hierarchy is off.
        if spec {
            s.spec.memory_hierarchical = Some(
                !self.read(m, "memory.use_hierarchy") || parse::single_u64(self.buf()) != Some(0),
            );
            if self.read(m, "memory.limit_in_bytes") {
                s.spec.memory_limit = parse::single_u64(self.buf()).map(spec_memory);
            }
        }
        let hierarchical = s.spec.memory_hierarchical.unwrap_or(true);
        if self.read(m, "memory.stat") {
            let b = self.buf();
            let (rss, cache, swap) = if hierarchical {
                ("total_rss", "total_cache", "total_swap")
            } else {
                ("rss", "cache", "swap")
            };
            s.memory_rss = parse::keyed(b, rss);
            s.memory_cache = parse::keyed(b, cache);
            s.memory_swap = parse::keyed(b, swap);
            if let Some(usage) = s.memory_usage {
                // Always `total_inactive_file` on v1, as cAdvisor.
                s.memory_working_set = Some(match parse::keyed(b, "total_inactive_file") {
                    Some(inactive) => usage.saturating_sub(inactive),
                    None => usage,
                });
            }
        }
        if self.read(m, "memory.failcnt") {
            s.memory_failcnt = parse::single_u64(self.buf());
        }
        if self.read(m, "memory.oom_control") {
            // `oom_kill` exists since Linux 4.13.
            s.oom_kills = parse::keyed(self.buf(), "oom_kill");
        }
    }

    /// Block I/O bytes as runc's `fs/blkio.go` chooses them: the CFQ/BFQ recursive files when
    /// they have device lines, else the throttle policy's recursive file (the plain one on
    /// kernels without it). Files that are absent cost a failed open, so the order stops at the
    /// first throttle file that exists even when it is empty (no I/O yet).
    pub(crate) fn v1_blkio(&mut self, b: &Path, s: &mut Stats) {
        let mut found = Vec::new();
        for (file, stop_if_present) in [
            ("blkio.io_service_bytes_recursive", false),
            ("blkio.bfq.io_service_bytes_recursive", false),
            ("blkio.throttle.io_service_bytes_recursive", true),
            ("blkio.throttle.io_service_bytes", true),
        ] {
            if !self.read(b, file) {
                continue;
            }
            parse::blkio_bytes(self.buf(), |dev, r, w| found.push((dev, r, w)));
            if !found.is_empty() || stop_if_present {
                break;
            }
        }
        for (dev, r, w) in found {
            let device = self.device_name(dev);
            s.io.push(DeviceIo {
                device,
                read_bytes: r,
                write_bytes: w,
            });
        }
    }
}

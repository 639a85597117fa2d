//! cgroup v2 files (kernel `Documentation/admin-guide/cgroup-v2.rst`), as runc's
//! `libcontainer/cgroups/fs2` and cAdvisor's `GetSpec` read them.

use std::path::Path;

use super::parse;
use super::read::Reader;
use super::stats::{Stats, spec_memory, weight_to_shares};

impl Reader {
    pub(crate) fn v2_cpu(&mut self, u: &Path, spec: bool, s: &mut Stats) {
        if self.read(u, "cpu.stat") {
            let b = self.buf();
            let ns = |k| parse::keyed(b, k).map(|us| us.saturating_mul(1000));
            s.cpu_usage_ns = ns("usage_usec");
            s.cpu_user_ns = ns("user_usec");
            s.cpu_system_ns = ns("system_usec");
            s.cfs_periods = parse::keyed(b, "nr_periods");
            s.cfs_throttled_periods = parse::keyed(b, "nr_throttled");
            s.cfs_throttled_ns = ns("throttled_usec");
        }
        if !spec {
            return;
        }
        if self.read(u, "cpu.max") {
            // "quota period", quota `max` when unlimited.
            let b = parse::trim(self.buf());
            let mut it = b.split(|c| *c == b' ');
            let quota = it.next().and_then(parse::parse_u64);
            s.spec.cpu_period = it.next().and_then(parse::parse_u64);
            s.spec.cpu_quota = quota.filter(|q| *q > 0);
        }
        if self.read(u, "cpu.weight") {
            s.spec.cpu_shares = parse::single_u64(self.buf()).and_then(weight_to_shares);
        }
    }

    pub(crate) fn v2_memory(&mut self, u: &Path, spec: bool, s: &mut Stats) {
        if !self.read(u, "memory.current") {
            return;
        }
        s.memory_usage = parse::single_u64(self.buf());
        if self.read(u, "memory.stat") {
            let b = self.buf();
            s.memory_rss = parse::keyed(b, "anon");
            s.memory_cache = parse::keyed(b, "file");
            if let Some(usage) = s.memory_usage {
                s.memory_working_set = Some(match parse::keyed(b, "inactive_file") {
                    Some(inactive) => usage.saturating_sub(inactive),
                    None => usage,
                });
            }
        }
        if self.read(u, "memory.swap.current") {
            s.memory_swap = parse::single_u64(self.buf());
        }
        // v2 has no fail counter; cAdvisor reports 0.
        s.memory_failcnt = Some(0);
        if self.read(u, "memory.events") {
            s.oom_kills = parse::keyed(self.buf(), "oom_kill");
        }
        if spec && self.read(u, "memory.max") {
            // `max` → unlimited → 0, as cAdvisor reports limits above 2^62.
            s.spec.memory_limit = Some(parse::single_u64(self.buf()).map_or(0, spec_memory));
        }
    }
}

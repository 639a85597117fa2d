//! Metric metadata (type, help, unit per metric family) per tenant, fed by remote_write's
//! metadata and the `# TYPE/# HELP/# UNIT` lines of imports; served by `/api/v1/metadata`.
//!
//! Kept in memory: like Prometheus (which keeps it per scrape target), metadata is rebuilt as
//! senders resend it (Prometheus sends it every minute by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// One metadata entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Metadata {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset` or
    /// `unknown`.
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// Distinct metadata per family beyond which the oldest variant is forgotten.
const MAX_VARIANTS: usize = 10;

/// Metadata of every tenant.
#[derive(Debug, Default)]
pub struct MetadataStore {
    tenants: RwLock<HashMap<String, BTreeMap<String, Vec<Metadata>>>>,
}

impl MetadataStore {
    /// Records entries `(family, metadata)` for a tenant; a repeated entry is kept once.
    pub fn record(&self, tenant: &str, entries: impl IntoIterator<Item = (String, Metadata)>) {
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let families = tenants.entry(tenant.to_string()).or_default();
        for (family, md) in entries {
            let variants = families.entry(family).or_default();
            if let Some(i) = variants.iter().position(|v| *v == md) {
                // Most recent last.
                let v = variants.remove(i);
                variants.push(v);
                continue;
            }
            if variants.len() >= MAX_VARIANTS {
                variants.remove(0);
            }
            variants.push(md);
        }
    }

    /// Families (optionally only `metric`) with their metadata, at most `limit` families and
    /// `limit_per_metric` entries each (negative: no limit), as Prometheus's metadata API.
    pub fn list(
        &self,
        tenant: &str,
        metric: Option<&str>,
        limit: i64,
        limit_per_metric: i64,
    ) -> BTreeMap<String, Vec<Metadata>> {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        let Some(families) = tenants.get(tenant) else {
            return out;
        };
        for (family, variants) in families {
            if metric.is_some_and(|m| m != family) {
                continue;
            }
            if limit >= 0 && out.len() as i64 >= limit {
                break;
            }
            let mut v = variants.clone();
            if limit_per_metric > 0 {
                v.truncate(usize::try_from(limit_per_metric).unwrap_or(usize::MAX));
            }
            out.insert(family.clone(), v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(kind: &str, help: &str) -> Metadata {
        Metadata {
            kind: kind.into(),
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn per_tenant_distinct_and_limited() {
        let s = MetadataStore::default();
        s.record(
            "a",
            [
                ("x".into(), md("counter", "X")),
                ("x".into(), md("counter", "X")),
            ],
        );
        s.record(
            "a",
            [
                ("y".into(), md("gauge", "Y")),
                ("x".into(), md("gauge", "X2")),
            ],
        );
        s.record("b", [("z".into(), md("gauge", "Z"))]);
        let all = s.list("a", None, -1, -1);
        assert_eq!(all.len(), 2);
        assert_eq!(all["x"].len(), 2);
        assert_eq!(s.list("a", None, 1, -1).len(), 1);
        assert_eq!(s.list("a", None, -1, 1)["x"].len(), 1);
        assert_eq!(s.list("a", Some("y"), -1, -1).len(), 1);
        assert!(s.list("a", Some("z"), -1, -1).is_empty());
        assert!(s.list("c", None, -1, -1).is_empty());
    }
}

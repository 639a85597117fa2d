//! Label sets: the identity of a series.

use std::fmt;
use std::sync::Arc;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One label pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: Arc<str>,
    pub value: Arc<str>,
}

impl Label {
    pub fn new(name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A label set, sorted by name, without empty values and without duplicate names. Ordering
/// compares label by label, as Prometheus sorts series.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// The empty label set.
    pub fn empty() -> Labels {
        Labels(Vec::new())
    }

    /// Builds a label set from pairs in any order; empty values are dropped and, for a repeated
    /// name, the last pair wins.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Labels
    where
        N: Into<Arc<str>>,
        V: Into<Arc<str>>,
    {
        let mut v: Vec<Label> = pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect();
        // Stable sort keeps input order among equal names, so "last wins" below is well defined.
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(prev) if prev.name == l.name => *prev = l,
                _ => out.push(l),
            }
        }
        out.retain(|l| !l.value.is_empty());
        Labels(out)
    }

    /// A label set from labels already sorted by name, unique and non-empty (the head's
    /// interned sets, which were made from a [`Labels`]).
    pub(crate) fn from_sorted(labels: Vec<Label>) -> Labels {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name));
        Labels(labels)
    }

    /// The value of label `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.0[i].value)
    }

    /// The metric name, if set.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v = self.0.clone();
        match v.binary_search_by(|l| (*l.name).cmp(name)) {
            Ok(i) if value.is_empty() => {
                v.remove(i);
            }
            Ok(i) => v[i].value = value.into(),
            Err(_) if value.is_empty() => {}
            Err(i) => v.insert(i, Label::new(name, value)),
        }
        Labels(v)
    }

    /// A copy without the labels whose names `drop` accepts.
    pub fn without(&self, drop: impl Fn(&str) -> bool) -> Labels {
        Labels(self.0.iter().filter(|l| !drop(&l.name)).cloned().collect())
    }

    /// A copy with only the labels whose names `keep` accepts.
    pub fn keep(&self, keep: impl Fn(&str) -> bool) -> Labels {
        Labels(self.0.iter().filter(|l| keep(&l.name)).cloned().collect())
    }
}

impl fmt::Display for Labels {
    /// Prometheus's notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| &*l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, &*l.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_deduplicated_without_empty_values() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        let names: Vec<&str> = l.iter().map(|l| &*l.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn edits() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        assert_eq!(l.with("instance", "i").get("instance"), Some("i"));
        assert_eq!(l.with("job", "").get("job"), None);
        assert_eq!(l.without(|n| n == METRIC_NAME).metric_name(), None);
        assert_eq!(l.keep(|n| n == "job").len(), 1);
        assert_eq!(l.to_string(), "up{job=\"x\"}");
    }
}

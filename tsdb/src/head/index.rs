//! The inverted index: label name → value → postings (sorted series ids), and matcher
//! resolution by postings intersection and subtraction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::labels::Labels;
use crate::storage::{MatchOp, Matcher};

pub(crate) type SeriesId = u32;

/// Interned label names and values: every series shares one allocation per distinct string.
#[derive(Debug, Default)]
pub(crate) struct Symbols {
    set: HashSet<Arc<str>>,
}

impl Symbols {
    pub(crate) fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        if let Some(v) = self.set.get(s) {
            return v.clone();
        }
        self.set.insert(s.clone());
        s.clone()
    }

    /// A copy of `labels` whose strings are the interned ones.
    pub(crate) fn intern_labels(&mut self, labels: &Labels) -> Labels {
        Labels::from_pairs(
            labels
                .iter()
                .map(|l| (self.intern(&l.name), self.intern(&l.value))),
        )
    }

    /// Forgets strings no series uses any more.
    pub(crate) fn gc(&mut self) {
        self.set.retain(|s| Arc::strong_count(s) > 1);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    postings: HashMap<Arc<str>, BTreeMap<Arc<str>, Vec<SeriesId>>>,
    all: Vec<SeriesId>,
}

fn insert_sorted(v: &mut Vec<SeriesId>, id: SeriesId) {
    match v.last() {
        Some(last) if *last >= id => {
            if let Err(i) = v.binary_search(&id) {
                v.insert(i, id);
            }
        }
        _ => v.push(id),
    }
}

fn remove_sorted(v: &mut Vec<SeriesId>, id: SeriesId) {
    if let Ok(i) = v.binary_search(&id) {
        v.remove(i);
    }
}

impl Index {
    /// An index from its postings and the list of all ids (a block's index as read).
    pub(crate) fn from_parts(
        postings: HashMap<Arc<str>, BTreeMap<Arc<str>, Vec<SeriesId>>>,
        all: Vec<SeriesId>,
    ) -> Index {
        Index { postings, all }
    }

    pub(crate) fn add(&mut self, id: SeriesId, labels: &Labels) {
        for l in labels.iter() {
            let values = self.postings.entry(l.name.clone()).or_default();
            insert_sorted(values.entry(l.value.clone()).or_default(), id);
        }
        insert_sorted(&mut self.all, id);
    }

    pub(crate) fn remove(&mut self, id: SeriesId, labels: &Labels) {
        for l in labels.iter() {
            if let Some(values) = self.postings.get_mut(&*l.name) {
                if let Some(p) = values.get_mut(&*l.value) {
                    remove_sorted(p, id);
                    if p.is_empty() {
                        values.remove(&*l.value);
                    }
                }
                if values.is_empty() {
                    self.postings.remove(&*l.name);
                }
            }
        }
        remove_sorted(&mut self.all, id);
    }

    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// Sorted label names.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.postings.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// Sorted values of label `name`.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.postings
            .get(name)
            .map(|vs| vs.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn postings(&self) -> &HashMap<Arc<str>, BTreeMap<Arc<str>, Vec<SeriesId>>> {
        &self.postings
    }

    /// The union of the postings of the values of `name` that `pred` accepts.
    fn union_where(&self, name: &str, pred: impl Fn(&str) -> bool) -> Vec<SeriesId> {
        let Some(values) = self.postings.get(name) else {
            return Vec::new();
        };
        let lists: Vec<&Vec<SeriesId>> = values
            .iter()
            .filter(|(v, _)| pred(v))
            .map(|(_, p)| p)
            .collect();
        match lists.as_slice() {
            [] => Vec::new(),
            [one] => (*one).clone(),
            _ => {
                let mut out: Vec<SeriesId> = lists.into_iter().flatten().copied().collect();
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }

    /// The sorted ids of the series matching every matcher. A matcher that accepts the empty
    /// string (so also series without the label) subtracts the series whose value it rejects;
    /// any other intersects with the series whose value it accepts. `=` looks its value up;
    /// regexes test each distinct value of their label once, never each series.
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        let mut include: Vec<Vec<SeriesId>> = Vec::new();
        let mut exclude: Vec<Vec<SeriesId>> = Vec::new();
        for m in matchers {
            let name = m.name.as_str();
            if m.matches("") {
                let rejected = match m.op {
                    MatchOp::NotEqual => self.lookup(name, &m.value),
                    _ => self.union_where(name, |v| !m.matches(v)),
                };
                exclude.push(rejected);
            } else {
                let accepted = match m.op {
                    MatchOp::Equal => self.lookup(name, &m.value),
                    _ => self.union_where(name, |v| m.matches(v)),
                };
                if accepted.is_empty() {
                    return Vec::new();
                }
                include.push(accepted);
            }
        }
        include.sort_by_key(|p| p.len());
        let mut ids = match include.split_first() {
            Some((first, rest)) => rest.iter().fold(first.clone(), |acc, p| intersect(&acc, p)),
            None => self.all.clone(),
        };
        for p in &exclude {
            ids = subtract(&ids, p);
        }
        ids
    }

    fn lookup(&self, name: &str, value: &str) -> Vec<SeriesId> {
        self.postings
            .get(name)
            .and_then(|vs| vs.get(value))
            .cloned()
            .unwrap_or_default()
    }
}

fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn subtract(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_resolve_like_a_scan() {
        let mut idx = Index::default();
        let series = [
            Labels::from_pairs([("__name__", "a"), ("job", "x"), ("i", "1")]),
            Labels::from_pairs([("__name__", "a"), ("job", "y")]),
            Labels::from_pairs([("__name__", "b"), ("job", "x"), ("i", "2")]),
        ];
        for (id, l) in series.iter().enumerate() {
            idx.add(id as SeriesId, l);
        }
        type Case<'a> = (&'a [(MatchOp, &'a str, &'a str)], &'a [SeriesId]);
        let cases: &[Case<'_>] = &[
            (&[(MatchOp::Equal, "__name__", "a")], &[0, 1]),
            (&[(MatchOp::Equal, "i", "")], &[1]),
            (&[(MatchOp::NotEqual, "i", "")], &[0, 2]),
            (&[(MatchOp::NotEqual, "job", "x")], &[1]),
            (&[(MatchOp::Regex, "i", ".*")], &[0, 1, 2]),
            (&[(MatchOp::Regex, "i", "1|3")], &[0]),
            (&[(MatchOp::NotRegex, "i", "1")], &[1, 2]),
            (&[(MatchOp::NotRegex, "i", ".*")], &[]),
            (&[(MatchOp::NotRegex, "i", "")], &[0, 2]),
            (
                &[
                    (MatchOp::Equal, "job", "x"),
                    (MatchOp::Regex, "__name__", "b"),
                ],
                &[2],
            ),
            (&[(MatchOp::Equal, "nope", "z")], &[]),
        ];
        for (ms, want) in cases {
            let ms: Vec<Matcher> = ms
                .iter()
                .map(|(op, n, v)| Matcher::new(*op, *n, *v).unwrap())
                .collect();
            let got = idx.select(&ms);
            let scan: Vec<SeriesId> = (0..3)
                .filter(|i| ms.iter().all(|m| m.matches_labels(&series[*i as usize])))
                .collect();
            assert_eq!(got, scan, "{ms:?}");
            assert_eq!(&got, want, "{ms:?}");
        }
        idx.remove(0, &series[0]);
        assert_eq!(idx.values("i"), ["2"]);
        assert_eq!(idx.len(), 2);
    }
}

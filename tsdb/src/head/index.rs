//! The inverted index: label name → value → postings (sorted series ids), and matcher
//! resolution by postings intersection and subtraction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::labels::{Label, Labels};
use crate::storage::{MatchOp, Matcher};

pub(crate) type SeriesId = u32;

/// A symbol's number in the head's [`Symbols`].
pub(crate) type SymbolId = u32;

/// A series' label set as symbol ids, name and value alternating, in the label set's order:
/// 8 bytes a label instead of the 32 of two string pointers (at 300 k series of 9 labels,
/// 65 MB less). Only the head's [`Symbols`] give it meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeriesLabels(Box<[SymbolId]>);

impl SeriesLabels {
    /// The number of labels.
    pub(crate) fn len(&self) -> usize {
        self.0.len() / 2
    }

    /// (name, value) ids in the label set's order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (SymbolId, SymbolId)> + '_ {
        self.0.chunks_exact(2).map(|p| (p[0], p[1]))
    }
}

/// Interned label names and values by id, each with the number of series labels using it:
/// every series shares one allocation per distinct string, and a string no series uses any
/// more is freed (its id reused).
#[derive(Debug, Default)]
pub(crate) struct Symbols {
    strs: Vec<Arc<str>>,
    refs: Vec<u32>,
    ids: HashMap<Arc<str>, SymbolId>,
    free: Vec<SymbolId>,
}

impl Symbols {
    fn acquire(&mut self, s: &Arc<str>) -> SymbolId {
        if let Some(&id) = self.ids.get(&**s) {
            self.refs[id as usize] += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.strs[id as usize] = s.clone();
                self.refs[id as usize] = 1;
                id
            }
            None => {
                self.strs.push(s.clone());
                self.refs.push(1);
                (self.strs.len() - 1) as SymbolId
            }
        };
        self.ids.insert(s.clone(), id);
        id
    }

    fn release(&mut self, id: SymbolId) {
        let Some(r) = self.refs.get_mut(id as usize) else {
            return;
        };
        *r = r.saturating_sub(1);
        if *r == 0 {
            let s = std::mem::replace(&mut self.strs[id as usize], Arc::from(""));
            self.ids.remove(&*s);
            self.free.push(id);
        }
    }

    /// Distinct strings in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Every symbol's string by id (a freed id's is empty).
    pub(crate) fn table(&self) -> &[Arc<str>] {
        &self.strs
    }

    /// The string of a symbol.
    pub(crate) fn str(&self, id: SymbolId) -> &Arc<str> {
        &self.strs[id as usize]
    }

    /// Interns `labels`: the ids are counted until [`Symbols::release_labels`].
    pub(crate) fn intern_labels(&mut self, labels: &Labels) -> SeriesLabels {
        let mut ids = Vec::with_capacity(labels.len() * 2);
        for l in labels.iter() {
            ids.push(self.acquire(&l.name));
            ids.push(self.acquire(&l.value));
        }
        SeriesLabels(ids.into_boxed_slice())
    }

    /// Gives back the ids of an interned label set.
    pub(crate) fn release_labels(&mut self, labels: &SeriesLabels) {
        for &id in labels.0.iter() {
            self.release(id);
        }
    }

    /// The label set of interned ids.
    pub(crate) fn labels(&self, labels: &SeriesLabels) -> Labels {
        Labels::from_sorted(
            labels
                .pairs()
                .map(|(n, v)| Label {
                    name: self.str(n).clone(),
                    value: self.str(v).clone(),
                })
                .collect(),
        )
    }

    /// Whether interned ids spell exactly `other`.
    pub(crate) fn equals(&self, labels: &SeriesLabels, other: &Labels) -> bool {
        labels.0.len() == other.len() * 2
            && labels
                .pairs()
                .zip(other.iter())
                .all(|((n, v), l)| *self.str(n) == l.name && *self.str(v) == l.value)
    }

    /// The value of label `name` in an interned set.
    pub(crate) fn get<'a>(&'a self, labels: &SeriesLabels, name: &str) -> Option<&'a str> {
        labels
            .pairs()
            .find(|&(n, _)| &**self.str(n) == name)
            .map(|(_, v)| &**self.str(v))
    }

    /// The label names of an interned set.
    pub(crate) fn names<'a>(&'a self, labels: &'a SeriesLabels) -> impl Iterator<Item = &'a str> {
        labels.pairs().map(|(n, _)| &**self.str(n))
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

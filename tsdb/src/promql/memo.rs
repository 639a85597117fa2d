//! Per-node memos of label-set derivations across the steps of a query (grouping keys of
//! aggregations and `histogram_quantile`, and the name-stripped label sets of a range query's
//! result).
//!
//! A range query evaluates each node once per step, and most series reach an aggregation or
//! `histogram_quantile` with the same shared label set (`Arc<Labels>`) at every step. Deriving
//! the grouping key (allocating a label set and hashing its strings) once per label set
//! instead of once per sample and step is most of what these operators cost. Derived keys are
//! interned, so that equal keys are one allocation and a step groups samples by the key's
//! address.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::labels::Labels;

/// Entries past which a memo that mostly misses (label sets built afresh at every step, e.g.
/// by a binary operator below it) is emptied rather than grown.
const MAX_MISSING: usize = 50_000;

/// Derived grouping keys of label sets, by the label set's address. Each distinct key gets a
/// dense slot number, so that a step can find its group by index instead of by hashing.
#[derive(Debug, Default)]
pub(crate) struct KeyMemo {
    /// Holds the source label set, so that its address is not reused while the entry lives.
    by_ptr: FxHashMap<usize, (Arc<Labels>, usize, Option<f64>)>,
    slots: HashMap<Labels, usize>,
    keys: Vec<Arc<Labels>>,
    hits: usize,
    misses: usize,
}

impl KeyMemo {
    /// The slot of the key derived from `l` by `derive` (with a number derived alongside, such
    /// as a bucket's parsed `le`), computed on the first sight of this label set.
    pub(crate) fn get(
        &mut self,
        l: &Arc<Labels>,
        derive: impl FnOnce(&Labels) -> (Labels, Option<f64>),
    ) -> (usize, Option<f64>) {
        let ptr = Arc::as_ptr(l) as usize;
        if let Some((src, slot, extra)) = self.by_ptr.get(&ptr)
            && Arc::ptr_eq(src, l)
        {
            self.hits += 1;
            return (*slot, *extra);
        }
        self.misses += 1;
        let (k, extra) = derive(l);
        let slot = match self.slots.get(&k) {
            Some(slot) => *slot,
            None => {
                let slot = self.keys.len();
                self.keys.push(Arc::new(k.clone()));
                self.slots.insert(k, slot);
                slot
            }
        };
        self.by_ptr.insert(ptr, (l.clone(), slot, extra));
        (slot, extra)
    }

    /// The distinct keys derived so far.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key in `slot` (from [`KeyMemo::get`] since the last reset).
    pub(crate) fn key(&self, slot: usize) -> Arc<Labels> {
        self.keys.get(slot).cloned().unwrap_or_default()
    }

    /// Ends one evaluation of the node: a memo that missed more than it hit and has grown
    /// large is emptied (slots are renumbered from zero).
    pub(crate) fn end_call(&mut self) {
        if self.misses > self.hits && self.by_ptr.len() > MAX_MISSING {
            self.by_ptr.clear();
            self.slots.clear();
            self.keys.clear();
        }
        self.hits = 0;
        self.misses = 0;
    }
}

/// Group numbers of slots within one evaluation: which group of this step a slot's key is.
#[derive(Debug, Default)]
pub(crate) struct SlotGroups(Vec<u32>);

impl SlotGroups {
    /// Room for `n` slots, none with a group yet.
    pub(crate) fn with_slots(n: usize) -> SlotGroups {
        SlotGroups(vec![u32::MAX; n])
    }

    /// The group of `slot`, if this step has one yet.
    pub(crate) fn get(&self, slot: usize) -> Option<usize> {
        self.0
            .get(slot)
            .filter(|g| **g != u32::MAX)
            .map(|g| *g as usize)
    }

    pub(crate) fn set(&mut self, slot: usize, group: usize) {
        if slot >= self.0.len() {
            self.0.resize(slot + 1, u32::MAX);
        }
        self.0[slot] = u32::try_from(group).unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Arc<Labels> {
        Arc::new(Labels::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn equal_keys_share_one_allocation_and_derive_once() {
        let mut m = KeyMemo::default();
        let a = labels(&[("job", "a"), ("le", "1")]);
        let b = labels(&[("job", "a"), ("le", "2")]);
        let mut calls = 0;
        let mut derive = |l: &Labels| {
            calls += 1;
            (
                l.without(|n| n == "le"),
                l.get("le").and_then(|v| v.parse().ok()),
            )
        };
        let (ka, la) = m.get(&a, &mut derive);
        let (kb, lb) = m.get(&b, &mut derive);
        let (ka2, _) = m.get(&a, &mut derive);
        assert_eq!(calls, 2);
        assert_eq!(ka, kb);
        assert_eq!(ka, ka2);
        assert!(Arc::ptr_eq(&m.key(ka), &m.key(kb)));
        assert_eq!((la, lb), (Some(1.0), Some(2.0)));
        assert_eq!(*m.key(ka), *labels(&[("job", "a")]));
    }

    #[test]
    fn a_new_label_set_with_equal_contents_is_derived_again() {
        let mut m = KeyMemo::default();
        let a = labels(&[("x", "1")]);
        let (k1, _) = m.get(&a, |l| (l.clone(), None));
        drop(a);
        let b = labels(&[("x", "2")]);
        let (k2, _) = m.get(&b, |l| (l.clone(), None));
        assert_ne!(*m.key(k1), *m.key(k2));
    }

    #[test]
    fn slot_groups_start_empty_each_step() {
        let mut g = SlotGroups::default();
        assert_eq!(g.get(3), None);
        g.set(3, 0);
        g.set(1, 1);
        assert_eq!((g.get(3), g.get(1), g.get(0)), (Some(0), Some(1), None));
    }
}

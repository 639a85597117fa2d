//! A binary heap with Go's `container/heap` algorithm, so `topk`/`bottomk` pick the same
//! elements as Prometheus among equal values.

use super::eval::Sample;

pub(crate) type Less = fn(&Sample, &Sample) -> bool;

/// `vectorByValueHeap`: NaN is smallest.
pub(crate) fn top_less(a: &Sample, b: &Sample) -> bool {
    a.v.is_nan() || a.v < b.v
}

/// `vectorByReverseValueHeap`: NaN is smallest, larger values are "less".
pub(crate) fn bottom_less(a: &Sample, b: &Sample) -> bool {
    a.v.is_nan() || a.v > b.v
}

fn up(h: &mut [Sample], mut j: usize, less: Less) {
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

fn down(h: &mut [Sample], i0: usize, n: usize, less: Less) -> bool {
    let mut i = i0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        let j2 = j1 + 1;
        if j2 < n && less(&h[j2], &h[j1]) {
            j = j2;
        }
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
    i > i0
}

pub(crate) fn push(h: &mut Vec<Sample>, s: Sample, less: Less) {
    h.push(s);
    let n = h.len() - 1;
    up(h, n, less);
}

pub(crate) fn fix(h: &mut [Sample], i: usize, less: Less) {
    let n = h.len();
    if !down(h, i, n, less) {
        up(h, i, less);
    }
}

/// `sort.Sort(sort.Reverse(heap))`: for `topk` descending, for `bottomk` ascending, NaNs last.
pub(crate) fn sort_reverse(h: &mut [Sample], top: bool) {
    use std::cmp::Ordering;
    h.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if top => b.v.total_cmp(&a.v),
        _ => a.v.total_cmp(&b.v),
    });
}

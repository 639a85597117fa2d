//! One request's work split across the machine's cores: decoding the chunks of many series and
//! writing a large answer. A query is otherwise evaluated on one thread; these two steps are
//! independent per series, so a large query's latency shrinks with the cores while a small
//! one (below the thresholds its callers set) stays on its thread and pays no spawn. Scoped
//! threads rather than a pool: a spawn costs tens of microseconds, against the milliseconds
//! a part takes once over the threshold.

use std::sync::OnceLock;

/// Most threads one request uses.
const MAX_PARTS: usize = 4;

/// The cores this process may use.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many parts `work` units make, each at least `min_part` units, at most one per core.
pub(crate) fn parts(work: usize, min_part: usize) -> usize {
    (work / min_part.max(1)).clamp(1, cores().clamp(1, MAX_PARTS))
}

/// `f` over `parts` consecutive runs of `items` (as even as their count allows), the runs
/// after the first on threads of their own; results in the items' order.
pub(crate) fn map_owned<T: Send, R: Send>(
    mut items: Vec<T>,
    parts: usize,
    f: impl Fn(Vec<T>) -> R + Sync,
) -> Vec<R> {
    if parts <= 1 || items.len() < 2 {
        return vec![f(items)];
    }
    let size = items.len().div_ceil(parts);
    let mut runs = Vec::with_capacity(parts);
    while items.len() > size {
        let tail = items.split_off(items.len() - size);
        runs.push(tail);
    }
    runs.push(items);
    runs.reverse();
    run_all(runs, &f)
}

/// `f` over `parts` consecutive runs of `items`, as [`map_owned`] but borrowing.
pub(crate) fn map_slices<T: Sync, R: Send>(
    items: &[T],
    parts: usize,
    f: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    if parts <= 1 || items.len() < 2 {
        return vec![f(items)];
    }
    let size = items.len().div_ceil(parts);
    run_all(items.chunks(size).collect(), &|s: &[T]| f(s))
}

fn run_all<P: Send, R: Send>(mut runs: Vec<P>, f: &(impl Fn(P) -> R + Sync)) -> Vec<R> {
    let Some(first) = (!runs.is_empty()).then(|| runs.remove(0)) else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = runs.into_iter().map(|p| s.spawn(move || f(p))).collect();
        let mut out = Vec::with_capacity(handles.len() + 1);
        out.push(f(first));
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                // A part that panicked panics the request, as it would have on one thread.
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_keep_the_items_order() {
        for n in [0, 1, 2, 5, 17] {
            let items: Vec<usize> = (0..n).collect();
            for p in 1..=4 {
                let owned: Vec<usize> = map_owned(items.clone(), p, |v| v)
                    .into_iter()
                    .flatten()
                    .collect();
                assert_eq!(owned, items, "{n} items in {p} parts");
                let sliced: Vec<usize> = map_slices(&items, p, <[usize]>::to_vec)
                    .into_iter()
                    .flatten()
                    .collect();
                assert_eq!(sliced, items, "{n} items in {p} parts");
                assert!(map_slices(&items, p, |_| ()).len() <= p.max(1));
            }
        }
    }

    #[test]
    fn small_work_is_one_part() {
        assert_eq!(parts(10, 100), 1);
        assert_eq!(parts(0, 100), 1);
        assert!(parts(10_000, 100) <= MAX_PARTS);
    }
}

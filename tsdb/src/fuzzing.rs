//! Bodies of the `cargo fuzz` targets under `tsdb/fuzz/` (see `docs/fuzzing.md`), one function
//! per target, named as the target. Each takes the fuzzer's bytes and panics when a property
//! fails; the unit tests below run them over the checked-in corpus and crash reproducers, so
//! the stable toolchain keeps them as regression tests.

mod disk;
mod text;
mod wire;

pub use disk::{block_index, checkpoint, chunk, exemplar_log, tombstones, wal_record};
pub use text::{api_params, config, exposition, promql};
pub use wire::{ingest, remote_write};

use crate::labels::{Labels, METRIC_NAME};

/// A label set as every reader expects one: names sorted, unique, non-empty, values non-empty.
fn assert_well_formed(labels: &Labels) {
    let names: Vec<&str> = labels.iter().map(|l| &*l.name).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{labels:?}");
    assert!(labels.iter().all(|l| !l.value.is_empty()), "{labels:?}");
    assert!(labels.iter().all(|l| !l.name.is_empty()), "{labels:?}");
}

/// A series' label set as ingest accepts one: well formed, with a metric name.
fn assert_series_labels(labels: &Labels) {
    assert_well_formed(labels);
    assert!(
        labels.get(METRIC_NAME).is_some(),
        "no metric name: {labels:?}"
    );
}

#[cfg(test)]
mod tests {
    bus::fuzz_corpus_tests!(
        api_params,
        block_index,
        checkpoint,
        chunk,
        config,
        exemplar_log,
        exposition,
        ingest,
        promql,
        remote_write,
        tombstones,
        wal_record,
    );
}

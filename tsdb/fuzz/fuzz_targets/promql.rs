#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // `tsdb::promql::parse_expr` takes promql-parser's panics as syntax errors; the hook
        // libfuzzer-sys installs would abort on them before they are caught. A panic out of the
        // target still aborts (libfuzzer-sys catches it and aborts).
        drop(std::panic::take_hook());
    },
    |data: &[u8]| tsdb::fuzzing::promql(data)
);

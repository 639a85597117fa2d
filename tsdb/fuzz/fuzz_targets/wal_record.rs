#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tsdb::fuzzing::wal_record(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tsdb::fuzzing::remote_write(data));

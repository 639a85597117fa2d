//! Bodies of the `cargo fuzz` targets under `bus/fuzz/` (see `docs/fuzzing.md`). Each takes the
//! fuzzer's bytes and panics when a property fails; the unit tests below run them over the
//! checked-in corpus and crash reproducers, so the stable toolchain keeps them as regressions.

use std::io::Cursor;

use crate::embedded::segment::{self, Read1};

/// A segment file's bytes: read as recovery reads them, and again with the first record's
/// checksum fixed so the fuzzer gets past it; every record read must re-encode to the bytes it
/// was read from. Then the input split into key and payload must round-trip.
pub fn segment(data: &[u8]) {
    read_all(data);
    if data.len() >= segment::HEADER_BYTES {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&fixed[segment::HEADER_BYTES..]);
        fixed[4..8].copy_from_slice(&crc.to_le_bytes());
        read_all(&fixed);
    }
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (key, payload) = data.split_at(split);
    let mut buf = Vec::new();
    segment::encode(&mut buf, 42, -7, key, payload);
    assert_eq!(buf.len(), segment::encoded_len(key, payload));
    match segment::read_record(&mut Cursor::new(&buf)) {
        Ok(Read1::Record(r, n)) => {
            assert_eq!(n, buf.len());
            assert_eq!((r.offset, r.timestamp_ms), (42, -7));
            assert_eq!((&r.key[..], &r.payload[..]), (key, payload));
        }
        other => panic!("an encoded record did not read back: {other:?}"),
    }
}

/// Reads records until the end or a torn tail, checking each against its bytes.
fn read_all(data: &[u8]) {
    let mut cur = Cursor::new(data);
    loop {
        let start = cur.position() as usize;
        match segment::read_record(&mut cur) {
            Ok(Read1::Record(r, n)) => {
                assert_eq!(cur.position() as usize, start + n);
                let mut again = Vec::new();
                segment::encode(&mut again, r.offset, r.timestamp_ms, &r.key, &r.payload);
                assert_eq!(again, &data[start..start + n]);
            }
            Ok(Read1::End | Read1::Torn(_)) => return,
            Err(e) => panic!("reading from memory failed: {e}"),
        }
    }
}

/// Runs `target` over every file of `<crate_dir>/fuzz/corpus/<name>/` and
/// `<crate_dir>/fuzz/regressions/<name>/`: the stable regression test of a fuzz target, shared
/// by the crates that have fuzz targets (through [`fuzz_corpus_tests`](crate::fuzz_corpus_tests)).
pub fn replay(crate_dir: &std::path::Path, name: &str, target: fn(&[u8])) {
    let root = crate_dir.join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
            continue;
        };
        for e in entries {
            let path = e
                .unwrap_or_else(|e| panic!("listing the corpus of {name}: {e}"))
                .path();
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            eprintln!("{}", path.display());
            target(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for fuzz target {name}");
}

/// One `#[test]` per named fuzz target of the calling crate's `fuzzing` module, running it over
/// its checked-in corpus and crash reproducers with [`fuzzing::replay`](crate::fuzzing::replay).
#[macro_export]
macro_rules! fuzz_corpus_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            $crate::fuzzing::replay(
                ::std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
                stringify!($name),
                super::$name,
            );
        }
    )*};
}

#[cfg(test)]
mod tests {
    crate::fuzz_corpus_tests!(segment);
}

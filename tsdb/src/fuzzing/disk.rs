//! Targets over what the store reads back from its own files (which a crash, a bad disk or an
//! operator's copy can corrupt): chunks, WAL records, block indexes and tombstones, the
//! exemplar log, checkpoints. Formats behind a CRC get their CRC fixed, so the fuzzer reaches
//! the decoder.

use std::io::Write as _;
use std::sync::Arc;

use crate::chunk::{Chunk, ChunkRef, seal};
use crate::storage::Sample;

/// Samples as comparable bits.
fn bits(samples: impl IntoIterator<Item = Sample>) -> Vec<(i64, u64)> {
    samples.into_iter().map(|s| (s.t, s.v.to_bits())).collect()
}

/// A serialized chunk (open or sealed), then samples made from the same bytes. Whatever the
/// bytes, decoding does not panic, and where the samples are in time order (as in every chunk
/// written; files are CRC-checked) `decode_into` agrees with the iterator; a chunk
/// `from_bytes` accepts re-serializes (plain and sealed) to the same samples; samples with
/// increasing timestamps round-trip bit-exactly through `append`, `from_samples` and `seal`.
pub fn chunk(data: &[u8]) {
    if let Ok(view) = ChunkRef::new(data) {
        let all: Vec<Sample> = view.iter().collect();
        let ordered = all.windows(2).all(|w| w[0].t < w[1].t);
        if let (Some(first), Some(last), true) = (all.first(), all.last(), ordered) {
            let (lo, hi) = (first.t, last.t);
            let mut within = Vec::new();
            view.iter().decode_into(lo, hi, &mut within);
            let want = all.iter().filter(|s| (lo..=hi).contains(&s.t)).copied();
            assert_eq!(bits(within), bits(want));
            let _ = view.iter().seek(last.t);
        }
    }
    if let Ok(c) = Chunk::from_bytes(data) {
        let want = bits(c.iter());
        for b in [c.to_bytes(), c.sealed()] {
            let again = ChunkRef::new(&b).unwrap_or_else(|e| panic!("re-serialized: {e}"));
            assert_eq!(bits(again.iter()), want);
        }
    }
    let samples = samples_of(data);
    let want = bits(samples.iter().copied());
    let mut appended = Chunk::new(crate::chunk::ValueEncoding::Int { exp: 0 });
    samples.iter().for_each(|s| appended.append(s.t, s.v));
    assert_eq!(bits(appended.iter()), want, "appended");
    let c = Chunk::from_samples(&samples);
    assert_eq!(bits(c.iter()), want, "from_samples");
    for b in [c.to_bytes(), c.sealed(), seal(&samples)] {
        let view = ChunkRef::new(&b).unwrap_or_else(|e| panic!("{samples:?}: {e}"));
        assert_eq!(bits(view.iter()), want, "serialized");
        let back = Chunk::from_bytes(&b).unwrap_or_else(|e| panic!("{samples:?}: {e}"));
        assert_eq!(bits(back.iter()), want, "from_bytes");
    }
}

/// Up to one chunk of samples with increasing timestamps from 10-byte groups: a timestamp
/// delta and a value that is, by the group's first byte, the raw bits, a small integer or a
/// short decimal (so every value coding is reached).
fn samples_of(data: &[u8]) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::new();
    let mut t = i64::from_le_bytes(*data.first_chunk::<8>().unwrap_or(&[0; 8]));
    for g in data
        .chunks_exact(10)
        .take(usize::from(crate::chunk::SAMPLES_PER_CHUNK))
    {
        let word = i64::from_le_bytes([g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]]);
        let v = match g[0] % 4 {
            0 => f64::from_bits(word as u64),
            1 => f64::from(word as i32),
            2 => f64::from(word as i16) / 100.0,
            _ => (word % 1_000_000) as f64,
        };
        if !out.is_empty() {
            let step = i64::from(g[1]) + 1;
            let Some(next) = t.checked_add(if g[0] & 0x80 != 0 { step << 40 } else { step }) else {
                break;
            };
            t = next;
        }
        out.push(Sample { t, v });
    }
    out
}

/// A WAL segment: read as replay reads it, and the input framed as one record (so its CRC
/// holds); a record that decodes re-encodes to bytes that decode to the same encoding.
pub fn wal_record(data: &[u8]) {
    use crate::wal::{Record, frame_with, read_segment};
    let _ = read_segment(data);
    let mut framed = Vec::new();
    frame_with(&mut framed, |out| out.extend_from_slice(data));
    let (recs, len) = read_segment(&framed);
    let Some(rec) = recs.first() else {
        assert_eq!(len, 0);
        return;
    };
    assert_eq!(len, framed.len());
    let mut once = Vec::new();
    rec.encode(&mut once);
    let again = Record::decode(&once).unwrap_or_else(|| panic!("{rec:?} did not decode"));
    let mut twice = Vec::new();
    again.encode(&mut twice);
    assert_eq!(once, twice);
}

/// The magic, `body` and the CRC of both: how block files are laid out.
fn with_crc(magic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend(crc.to_le_bytes());
    out
}

/// A block's `index` file: the input as is, and deflated behind the magic with its CRC fixed;
/// what decodes has postings that point at existing series and symbols.
pub fn block_index(data: &[u8]) {
    use crate::tsdb::block::index::{MAGIC, decode};
    let _ = decode(data);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let Ok(deflated) = z.write_all(data).and_then(|()| z.finish()) else {
        return;
    };
    let Some(d) = decode(&with_crc(MAGIC, &deflated)) else {
        return;
    };
    for s in &d.series {
        for &(n, v) in &s.labels {
            assert!((n as usize) < d.symbols.len() && (v as usize) < d.symbols.len());
        }
    }
}

/// A block's `tombstones` file (CRC fixed): what decodes re-encodes to the same tombstones.
pub fn tombstones(data: &[u8]) {
    use crate::tsdb::block::tombstones::{MAGIC, decode, encode};
    let _ = decode(data);
    let Some(t) = decode(&with_crc(MAGIC, data)) else {
        return;
    };
    assert_eq!(decode(&encode(&t)).as_ref(), Some(&t));
}

/// The exemplar log: replayed as is, and the input framed as one record; a frame either
/// replays whole or not at all.
pub fn exemplar_log(data: &[u8]) {
    use crate::exemplar::ExemplarBuffer;
    use crate::exemplar::log::{frame, replay};
    let mut buffer = ExemplarBuffer::new(16, 0);
    let _ = replay(data, &mut buffer);
    let mut framed = Vec::new();
    frame(data, &mut framed);
    let n = replay(&framed, &mut ExemplarBuffer::new(16, 0));
    assert!(
        n == 0 || n == framed.len(),
        "replayed {n} of {}",
        framed.len()
    );
}

/// A checkpoint's body, loaded into an empty head without chunk files (so chunks on disk fail
/// to read); the head's series then read back without a panic. The head is a vector indexed
/// by series id, as long as the checkpoint's next id: bodies whose next id is over 2^16 are
/// skipped (that many ids take that much memory by design).
pub fn checkpoint(data: &[u8]) {
    use crate::head::{ChunkStore, Head};
    if crate::wal::record::Reader::new(data)
        .uvarint()
        .is_none_or(|n| n > 1 << 16)
    {
        return;
    }
    let store = Arc::new(ChunkStore::default());
    let mut head = Head::new(&crate::TsdbConfig::default(), store.clone());
    if crate::tsdb::checkpoint::decode(data, &mut head).is_none() {
        return;
    }
    // Label sets are not checked: the checkpoint is the head's own (CRC-checked) file, and its
    // decoder takes the names it holds, empty ones too.
    for (_, snapshot) in head.snapshots_before(i64::MAX) {
        let _ = snapshot.samples(&store);
    }
}

//! The on-disk log of one topic: segment files of CRC-checked records.
//!
//! A topic directory holds segments named after the offset of their first record
//! (`00000000000000004096.log`). A record is
//!
//! ```text
//! u32 len | u32 crc32(body) | body = u64 offset | i64 timestamp_ms | u32 key_len | key | payload
//! ```
//!
//! all little-endian, `len` being the body's length. Only the newest segment is ever written;
//! older ones were fsynced before it was created, so recovery scans just the newest one and cuts it
//! after its last whole record whose offset follows the one before.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use crate::{Error, Result};

/// Bytes before the body: length and checksum.
pub(crate) const HEADER_BYTES: usize = 8;
/// Fixed part of the body: offset, timestamp, key length.
const BODY_FIXED_BYTES: usize = 20;
/// Largest key + payload accepted in one record.
pub(crate) const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) offset: u64,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: Bytes,
    pub(crate) payload: Bytes,
}

/// Appends the encoding of one record to `buf`.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: &[u8],
    payload: &[u8],
) {
    let body_len = BODY_FIXED_BYTES + key.len() + payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + HEADER_BYTES..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The encoded size of a record.
pub(crate) fn encoded_len(key: &[u8], payload: &[u8]) -> usize {
    HEADER_BYTES + BODY_FIXED_BYTES + key.len() + payload.len()
}

/// What reading at a position found.
#[derive(Debug)]
pub(crate) enum Read1 {
    /// A whole, intact record and its encoded length.
    Record(StoredRecord, usize),
    /// Clean end of data.
    End,
    /// Bytes that are not a whole intact record (a torn tail after a crash).
    Torn(String),
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads one record from `r`.
pub(crate) fn read_record<R: Read>(r: &mut R) -> io::Result<Read1> {
    let mut header = [0u8; HEADER_BYTES];
    match read_full(r, &mut header)? {
        0 => return Ok(Read1::End),
        HEADER_BYTES => {}
        n => return Ok(Read1::Torn(format!("{n} bytes of a record header"))),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(BODY_FIXED_BYTES..=BODY_FIXED_BYTES + MAX_RECORD_BYTES).contains(&len) {
        return Ok(Read1::Torn(format!("record length {len} out of range")));
    }
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Ok(Read1::Torn(format!("{got} of {len} body bytes")));
    }
    if crc32fast::hash(&body) != crc {
        return Ok(Read1::Torn("checksum mismatch".to_owned()));
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[i..i + 8]);
        b
    };
    let offset = u64::from_le_bytes(u64_at(0));
    let timestamp_ms = i64::from_le_bytes(u64_at(8));
    let key_len = u32::from_le_bytes([body[16], body[17], body[18], body[19]]) as usize;
    if BODY_FIXED_BYTES + key_len > len {
        return Ok(Read1::Torn(format!("key length {key_len} beyond record")));
    }
    let body = Bytes::from(body);
    let record = StoredRecord {
        offset,
        timestamp_ms,
        key: body.slice(BODY_FIXED_BYTES..BODY_FIXED_BYTES + key_len),
        payload: body.slice(BODY_FIXED_BYTES + key_len..),
    };
    Ok(Read1::Record(record, HEADER_BYTES + len))
}

/// A closed or active segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub(crate) base: u64,
    pub(crate) bytes: u64,
    /// When the segment was last written (its closing time, for retention).
    pub(crate) modified: SystemTime,
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Segments of a topic directory, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentMeta>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let meta = entry.metadata().map_err(Error::io(entry.path()))?;
        out.push(SegmentMeta {
            base,
            bytes: meta.len(),
            modified: meta.modified().unwrap_or_else(|_| SystemTime::now()),
        });
    }
    out.sort_by_key(|s| s.base);
    Ok(out)
}

/// Fsyncs a directory so that file creations, renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// The state of a topic's log after recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) segments: Vec<SegmentMeta>,
    /// Offset the next appended record gets.
    pub(crate) next_offset: u64,
    /// Bytes cut from the end of the newest segment (a torn write).
    pub(crate) truncated_bytes: u64,
}

/// Opens (creating if needed) a topic directory and makes its newest segment end at a record
/// boundary.
pub(crate) fn recover(dir: &Path) -> Result<Recovered> {
    fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let mut segments = list_segments(dir)?;
    if segments.is_empty() {
        let path = segment_path(dir, 0);
        File::create(&path).map_err(Error::io(&path))?;
        sync_dir(dir)?;
        segments = list_segments(dir)?;
    }
    let Some(last) = segments.last_mut() else {
        return Err(Error::Corrupt {
            path: dir.to_owned(),
            reason: "no segment after creating one".to_owned(),
        });
    };
    let path = segment_path(dir, last.base);
    let file = File::open(&path).map_err(Error::io(&path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut expected = last.base;
    let mut good: u64 = 0;
    loop {
        match read_record(&mut reader).map_err(Error::io(&path))? {
            Read1::Record(r, n) if r.offset == expected => {
                expected += 1;
                good += n as u64;
            }
            Read1::Record(r, _) => {
                tracing::warn!(path = %path.display(), offset = r.offset, expected, "out-of-sequence record, cutting the log there");
                break;
            }
            Read1::End => break,
            Read1::Torn(reason) => {
                tracing::warn!(path = %path.display(), reason, "torn record at the end of the bus log, cutting it");
                break;
            }
        }
    }
    let truncated_bytes = last.bytes.saturating_sub(good);
    if truncated_bytes > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        f.set_len(good).map_err(Error::io(&path))?;
        f.sync_all().map_err(Error::io(&path))?;
        last.bytes = good;
    }
    Ok(Recovered {
        segments,
        next_offset: expected,
        truncated_bytes,
    })
}

/// Sequential reader of one segment.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    pub(crate) base: u64,
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the record the next read returns.
    pub(crate) next: u64,
}

impl SegmentReader {
    /// Opens the segment starting at `base` and skips to the first record at or after `position`.
    pub(crate) fn open(dir: &Path, base: u64, position: u64) -> Result<SegmentReader> {
        let path = segment_path(dir, base);
        let mut file = File::open(&path).map_err(Error::io(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(Error::io(&path))?;
        let mut reader = SegmentReader {
            base,
            path,
            reader: BufReader::with_capacity(256 * 1024, file),
            next: base,
        };
        while reader.next < position {
            if reader.read()?.is_none() {
                break;
            }
        }
        Ok(reader)
    }

    /// The next record, or `None` at the end of the segment's data. Callers only read below the
    /// durable end, where every record is whole: a torn record here is corruption.
    pub(crate) fn read(&mut self) -> Result<Option<StoredRecord>> {
        match read_record(&mut self.reader).map_err(Error::io(&self.path))? {
            Read1::Record(r, _) => {
                if r.offset != self.next {
                    return Err(Error::Corrupt {
                        path: self.path.clone(),
                        reason: format!(
                            "found offset {} where {} was expected",
                            r.offset, self.next
                        ),
                    });
                }
                self.next += 1;
                Ok(Some(r))
            }
            Read1::End => Ok(None),
            Read1::Torn(reason) => Err(Error::Corrupt {
                path: self.path.clone(),
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    fn write_records(path: &Path, base: u64, n: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..n {
            encode(
                &mut buf,
                base + i,
                i as i64,
                format!("k{i}").as_bytes(),
                &vec![i as u8; i as usize],
            );
        }
        File::create(path).unwrap().write_all(&buf).unwrap();
        buf
    }

    proptest! {
        #[test]
        fn records_round_trip(offset: u64, ts: i64, key in proptest::collection::vec(any::<u8>(), 0..64),
                              payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = Vec::new();
            encode(&mut buf, offset, ts, &key, &payload);
            prop_assert_eq!(buf.len(), encoded_len(&key, &payload));
            match read_record(&mut buf.as_slice()).unwrap() {
                Read1::Record(r, n) => {
                    prop_assert_eq!(n, buf.len());
                    prop_assert_eq!(r.offset, offset);
                    prop_assert_eq!(r.timestamp_ms, ts);
                    prop_assert_eq!(&r.key[..], &key[..]);
                    prop_assert_eq!(&r.payload[..], &payload[..]);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        /// Any cut of a log, or any flipped byte, recovers to a prefix of whole records.
        #[test]
        fn recovery_keeps_a_prefix(n in 1u64..20, cut_frac in 0.0f64..1.0, flip in proptest::option::of(0usize..4000)) {
            let dir = tempfile::tempdir().unwrap();
            let path = segment_path(dir.path(), 7);
            let mut buf = write_records(&path, 7, n);
            let cut = (buf.len() as f64 * cut_frac) as usize;
            buf.truncate(cut);
            if let Some(i) = flip.filter(|i| *i < buf.len()) {
                buf[i] ^= 0x5a;
            }
            File::create(&path).unwrap().write_all(&buf).unwrap();
            let rec = recover(dir.path()).unwrap();
            let kept = rec.next_offset - 7;
            prop_assert!(kept <= n);
            let mut reader = SegmentReader::open(dir.path(), 7, 7).unwrap();
            for i in 0..kept {
                let r = reader.read().unwrap().unwrap();
                prop_assert_eq!(r.offset, 7 + i);
                prop_assert_eq!(r.payload.len() as u64, i);
            }
            prop_assert!(reader.read().unwrap().is_none());
            // Nothing past the cut survives, and a second recovery changes nothing.
            let again = recover(dir.path()).unwrap();
            prop_assert_eq!(again.next_offset, rec.next_offset);
            prop_assert_eq!(again.truncated_bytes, 0);
        }
    }

    #[test]
    fn reader_skips_to_position() {
        let dir = tempfile::tempdir().unwrap();
        write_records(&segment_path(dir.path(), 100), 100, 10);
        let mut r = SegmentReader::open(dir.path(), 100, 105).unwrap();
        assert_eq!(r.read().unwrap().unwrap().offset, 105);
    }

    #[test]
    fn empty_dir_gets_a_first_segment() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recover(&dir.path().join("metrics")).unwrap();
        assert_eq!(rec.next_offset, 0);
        assert_eq!(rec.segments.len(), 1);
    }
}

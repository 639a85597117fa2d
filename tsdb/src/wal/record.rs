//! WAL record payloads and the varint helpers the checkpoint shares.

use crate::head::SeriesId;
use crate::labels::Labels;
use crate::storage::Sample;

const SERIES: u8 = 1;
const SAMPLES: u8 = 2;
const DELETE: u8 = 3;

/// One logged change of the head.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Record {
    /// New series with their ids.
    Series(Vec<(SeriesId, Labels)>),
    /// Stored samples by series id.
    Samples(Vec<(SeriesId, Sample)>),
    /// Samples in `mint..=maxt` of the series were deleted.
    Delete {
        ids: Vec<SeriesId>,
        mint: i64,
        maxt: i64,
    },
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub(crate) fn put_labels(out: &mut Vec<u8>, l: &Labels) {
    put_uvarint(out, l.len() as u64);
    for l in l.iter() {
        put_bytes(out, l.name.as_bytes());
        put_bytes(out, l.value.as_bytes());
    }
}

/// A cursor over a byte slice; every read is checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    /// The bytes not read yet.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.b
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.b.split_first()?;
        self.b = rest;
        Some(*first)
    }

    pub(crate) fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    pub(crate) fn varint(&mut self) -> Option<i64> {
        let z = self.uvarint()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub(crate) fn id(&mut self) -> Option<SeriesId> {
        SeriesId::try_from(self.uvarint()?).ok()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    pub(crate) fn u64_le(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.uvarint()?).ok()?;
        self.take(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    pub(crate) fn labels(&mut self) -> Option<Labels> {
        let n = self.uvarint()?;
        let mut pairs = Vec::new();
        for _ in 0..n {
            pairs.push((self.str()?, self.str()?));
        }
        Some(Labels::from_pairs(pairs))
    }

    /// A count that cannot exceed the bytes left (each item takes at least one byte).
    pub(crate) fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.uvarint()?).ok()?;
        (n <= self.b.len()).then_some(n)
    }
}

/// Encodes a [`Record::Series`] of these series (without copying them into one).
pub(crate) fn encode_series(s: &[(SeriesId, Labels)], out: &mut Vec<u8>) {
    out.push(SERIES);
    put_uvarint(out, s.len() as u64);
    for (id, l) in s {
        put_uvarint(out, u64::from(*id));
        put_labels(out, l);
    }
}

/// Encodes a [`Record::Samples`] of these samples (without copying them into one).
pub(crate) fn encode_samples(s: &[(SeriesId, Sample)], out: &mut Vec<u8>) {
    out.push(SAMPLES);
    put_uvarint(out, s.len() as u64);
    let base = s.first().map(|(_, p)| p.t).unwrap_or(0);
    put_varint(out, base);
    // At most 10 + 10 + 8 bytes per sample: reserved once.
    out.reserve(s.len() * 28);
    for (id, p) in s {
        put_uvarint(out, u64::from(*id));
        put_varint(out, p.t.wrapping_sub(base));
        out.extend_from_slice(&p.v.to_bits().to_le_bytes());
    }
}

impl Record {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Series(s) => encode_series(s, out),
            Record::Samples(s) => encode_samples(s, out),
            Record::Delete { ids, mint, maxt } => {
                out.push(DELETE);
                put_varint(out, *mint);
                put_varint(out, *maxt);
                put_uvarint(out, ids.len() as u64);
                for id in ids {
                    put_uvarint(out, u64::from(*id));
                }
            }
        }
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Record> {
        let mut r = Reader::new(b);
        let rec = match r.u8()? {
            SERIES => {
                let n = r.count()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push((r.id()?, r.labels()?));
                }
                Record::Series(v)
            }
            SAMPLES => {
                let n = r.count()?;
                let base = r.varint()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = r.id()?;
                    let t = base.wrapping_add(r.varint()?);
                    let v_bits = r.u64_le()?;
                    v.push((
                        id,
                        Sample {
                            t,
                            v: f64::from_bits(v_bits),
                        },
                    ));
                }
                Record::Samples(v)
            }
            DELETE => {
                let mint = r.varint()?;
                let maxt = r.varint()?;
                let n = r.count()?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(r.id()?);
                }
                Record::Delete { ids, mint, maxt }
            }
            _ => return None,
        };
        r.is_empty().then_some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Series(vec![(
                7,
                Labels::from_pairs([("__name__", "up"), ("job", "é")]),
            )]),
            Record::Samples(vec![
                (
                    7,
                    Sample {
                        t: 1000,
                        v: f64::from_bits(crate::storage::STALE_NAN_BITS),
                    },
                ),
                (8, Sample { t: -5, v: -0.0 }),
            ]),
            Record::Delete {
                ids: vec![1, 2],
                mint: i64::MIN,
                maxt: i64::MAX,
            },
        ];
        for rec in recs {
            let mut b = Vec::new();
            rec.encode(&mut b);
            let back = Record::decode(&b).unwrap();
            let (mut b2, mut b3) = (Vec::new(), Vec::new());
            back.encode(&mut b2);
            rec.encode(&mut b3);
            assert_eq!(b2, b3);
            assert!(Record::decode(&b[..b.len() - 1]).is_none());
        }
    }
}

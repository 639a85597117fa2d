//! Series as a remote-write request carries them: label pairs as raw bytes of the decoded body
//! (UTF-8 unchecked, order as sent), not yet a [`Labels`] set.
//!
//! Building a label set per series of every request (checking and copying its strings,
//! sorting, hashing and comparing it with the stored one) was most of ingest's CPU time. A store
//! given a [`RawBatch`] can find a known series from its raw bytes instead (see
//! [`crate::head`]'s series cache) and build labels only for series it does not know.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;

use crate::labels::Labels;
use crate::storage::{AppendReport, RejectReason, Sample, SeriesSamples};

/// Offsets of one label's name and value in the batch's buffer.
#[derive(Clone, Copy, Debug)]
struct PairAt {
    name: (u32, u32),
    value: (u32, u32),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The bytes of the series' label fields when they are contiguous in the body, and their
    /// [`span_key`].
    span: Option<((u32, u32), SpanKey)>,
    pairs: (u32, u32),
    samples: (u32, u32),
}

/// Why a series cannot be added to a [`RawBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RawError {
    #[error("the body is larger than 4 GiB")]
    TooLarge,
    #[error("a label or span is not part of the body")]
    Outside,
}

/// A label's name and value as sent.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// A seeded 128-bit hash of a series' encoded label fields (low, high half).
pub type SpanKey = (u64, u64);

/// The seed of [`span_key`]: per process, from the OS's randomness, so that senders cannot aim
/// collisions.
static SEED: LazyLock<u64> = LazyLock::new(|| {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(0x5e_c7a7_u64)
});

/// The key of the series cache for encoded label fields. Computed as a series is decoded,
/// while its bytes are in the CPU's cache (hashing them later cost about three times as much).
pub fn span_key(encoded: &[u8]) -> SpanKey {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(encoded, *SEED);
    (h as u64, (h >> 64) as u64)
}

/// The series of one request with their samples, label bytes borrowed from the request's
/// decoded body (one buffer, a few flat vectors: no allocation per series).
#[derive(Clone, Debug, Default)]
pub struct RawBatch {
    buf: Bytes,
    pairs: Vec<PairAt>,
    entries: Vec<Entry>,
    samples: Vec<Sample>,
}

/// One series of a [`RawBatch`].
#[derive(Clone, Copy, Debug)]
pub struct RawSeries<'a> {
    buf: &'a [u8],
    pairs: &'a [PairAt],
    /// The encoded label fields (contiguous in the body), when known, and their key in the
    /// series cache.
    pub span: Option<&'a [u8]>,
    pub key: Option<SpanKey>,
    pub samples: &'a [Sample],
}

impl RawBatch {
    /// An empty batch over the decoded body `buf`.
    pub fn new(buf: Bytes) -> Result<RawBatch, RawError> {
        if u32::try_from(buf.len()).is_err() {
            return Err(RawError::TooLarge);
        }
        Ok(RawBatch {
            buf,
            ..RawBatch::default()
        })
    }

    /// The buffer the series' bytes must be slices of.
    pub fn buf(&self) -> &Bytes {
        &self.buf
    }

    /// Where `sub`, a slice of the buffer, starts and how long it is.
    fn at(&self, sub: &[u8]) -> Result<(u32, u32), RawError> {
        // An absent field decodes as an empty slice from anywhere.
        if sub.is_empty() {
            return Ok((0, 0));
        }
        let start = (sub.as_ptr() as usize).wrapping_sub(self.buf.as_ptr() as usize);
        let end = start.checked_add(sub.len()).ok_or(RawError::Outside)?;
        if end > self.buf.len() || self.buf[start..end].as_ptr() != sub.as_ptr() {
            return Err(RawError::Outside);
        }
        // The buffer's length fits u32 (checked in `new`).
        Ok((start as u32, sub.len() as u32))
    }

    /// Adds a series: its label pairs and the span of its encoded label fields, all slices of
    /// [`RawBatch::buf`], and its samples. With a span, the pairs are not kept: they are read
    /// from the span when needed (they must be what it holds).
    pub fn push(
        &mut self,
        span: Option<&[u8]>,
        pairs: &[(&[u8], &[u8])],
        samples: &[Sample],
    ) -> Result<(), RawError> {
        let span = match span {
            Some(s) => Some((self.at(s)?, span_key(s))),
            None => None,
        };
        let first = self.pairs.len();
        for (n, v) in pairs.iter().filter(|_| span.is_none()) {
            let p = PairAt {
                name: self.at(n)?,
                value: self.at(v)?,
            };
            self.pairs.push(p);
        }
        let s0 = self.samples.len();
        self.samples.extend_from_slice(samples);
        self.entries.push(Entry {
            span,
            pairs: (first as u32, self.pairs.len() as u32),
            samples: (s0 as u32, self.samples.len() as u32),
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Samples of all series.
    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// Series in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = RawSeries<'_>> {
        self.entries.iter().map(|e| RawSeries {
            buf: &self.buf,
            pairs: &self.pairs[e.pairs.0 as usize..e.pairs.1 as usize],
            span: e
                .span
                .map(|((s, n), _)| &self.buf[s as usize..(s + n) as usize]),
            key: e.span.map(|(_, k)| k),
            samples: &self.samples[e.samples.0 as usize..e.samples.1 as usize],
        })
    }

    /// The series as label sets (for stores without a series cache); series with invalid
    /// labels are rejected in the report, sample by sample.
    pub fn to_series(&self) -> (Vec<SeriesSamples>, AppendReport) {
        let mut report = AppendReport::default();
        let mut out = Vec::with_capacity(self.entries.len());
        for s in self.iter() {
            match s.labels() {
                Ok(labels) => out.push(SeriesSamples {
                    labels,
                    samples: s.samples.to_vec(),
                }),
                Err(why) => s.reject_invalid(&mut report, &why),
            }
        }
        (out, report)
    }
}

impl<'a> RawSeries<'a> {
    /// The label pairs as sent, or why they cannot be read.
    pub fn pairs(&self) -> Result<Vec<Pair<'a>>, String> {
        let mut out = Vec::new();
        match self.span {
            Some(span) => crate::api::remote_decode::decode_labels(span, &mut out)
                .map_err(|e| format!("decoding labels: {e}"))?,
            None => {
                let buf = self.buf;
                let b = |(s, n): (u32, u32)| &buf[s as usize..(s + n) as usize];
                out.extend(self.pairs.iter().map(|p| (b(p.name), b(p.value))));
            }
        }
        Ok(out)
    }

    /// The label set, or why the labels are invalid (see [`labels_from_pairs`]).
    pub fn labels(&self) -> Result<Labels, String> {
        labels_from_pairs(self.pairs()?.into_iter(), |b| {
            std::str::from_utf8(b)
                .map(Arc::from)
                .map_err(|_| format!("{:?} is not valid UTF-8", String::from_utf8_lossy(b)))
        })
    }

    /// Rejects every sample as having invalid labels.
    pub fn reject_invalid(&self, report: &mut AppendReport, why: &str) {
        for _ in self.samples {
            report.reject(RejectReason::InvalidLabels, || {
                let shown = self.pairs().map(|p| show(p.into_iter()));
                format!("invalid labels {}: {why}", shown.unwrap_or_default())
            });
        }
    }
}

/// Labels of a remote-write series, or why they are invalid (as Prometheus's receiver: a
/// metric name is required, names must be non-empty, unique and valid UTF-8). `intern` checks
/// and copies one string.
pub fn labels_from_pairs<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    mut intern: impl FnMut(&'a [u8]) -> Result<Arc<str>, String>,
) -> Result<Labels, String> {
    let mut out: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(pairs.size_hint().0);
    for (n, v) in pairs {
        if n.is_empty() {
            return Err("empty label name".into());
        }
        if out.iter().any(|(m, _)| m.as_bytes() == n) {
            return Err(format!(
                "duplicate label name {:?}",
                String::from_utf8_lossy(n)
            ));
        }
        out.push((intern(n)?, intern(v)?));
    }
    let labels = Labels::from_pairs(out);
    if labels.metric_name().is_none() {
        return Err("no metric name".into());
    }
    Ok(labels)
}

/// Label pairs as sent, for messages: `{name="value", …}`.
pub fn show<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> String {
    let parts: Vec<String> = pairs
        .map(|(n, v)| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Appends `labels` encoded as remote-write 1.0's `repeated Label labels = 1` (as Prometheus
/// and vmagent encode them: each label name, then value): the bytes a series' span has when
/// its sender encodes canonically.
pub(crate) fn encode_labels(labels: &Labels, out: &mut Vec<u8>) {
    fn uvarint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn varint_len(v: usize) -> usize {
        (usize::BITS - (v | 1).leading_zeros()).div_ceil(7) as usize
    }
    for l in labels.iter() {
        let (n, v) = (l.name.as_bytes(), l.value.as_bytes());
        let inner = 1 + varint_len(n.len()) + n.len() + 1 + varint_len(v.len()) + v.len();
        out.push(0x0a);
        uvarint(out, inner as u64);
        out.push(0x0a);
        uvarint(out, n.len() as u64);
        out.extend_from_slice(n);
        out.push(0x12);
        uvarint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::api::remote_proto::{Label, TimeSeries};

    fn encoded(labels: &Labels) -> Vec<u8> {
        TimeSeries {
            labels: labels
                .iter()
                .map(|l| Label {
                    name: Bytes::copy_from_slice(l.name.as_bytes()),
                    value: Bytes::copy_from_slice(l.value.as_bytes()),
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn encode_labels_is_what_prost_writes() {
        let long = "v".repeat(300);
        for l in [
            Labels::from_pairs([("__name__", "up")]),
            Labels::from_pairs([("__name__", "up"), ("job", long.as_str()), ("a", "é")]),
            Labels::empty(),
        ] {
            let mut b = Vec::new();
            encode_labels(&l, &mut b);
            assert_eq!(b, encoded(&l), "{l}");
        }
    }

    #[test]
    fn batch_round_trips_and_refuses_foreign_slices() {
        let buf = Bytes::from_static(b"__name__upjobx");
        let mut b = RawBatch::new(buf.clone()).unwrap();
        let s = [Sample { t: 1, v: 2.0 }];
        b.push(
            Some(&buf[0..10]),
            &[(&buf[0..8], &buf[8..10]), (&buf[10..13], &buf[13..14])],
            &s,
        )
        .unwrap();
        // Empty strings (absent fields) need not be in the buffer.
        b.push(None, &[(&buf[0..8], &[])], &s).unwrap();
        let other = b"job".to_vec();
        assert_eq!(
            b.push(None, &[(&other[..], &buf[0..1])], &s),
            Err(RawError::Outside)
        );
        let got: Vec<_> = b.iter().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].pairs().unwrap(), [(&b"__name__"[..], &b""[..])]);
        assert_eq!(got[0].span, Some(&b"__name__up"[..]));
        assert_eq!(got[0].samples, &s);
        // With a span, the labels are read from it (here: not a protobuf).
        assert!(got[0].labels().is_err());
        let want = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        let mut enc = Vec::new();
        encode_labels(&want, &mut enc);
        let buf = Bytes::from(enc);
        let mut b = RawBatch::new(buf.clone()).unwrap();
        b.push(Some(&buf[..]), &[], &s).unwrap();
        assert_eq!(b.iter().next().unwrap().labels().unwrap(), want);
    }

    #[test]
    fn invalid_labels_are_rejected_per_sample() {
        let buf = Bytes::from_static(b"jobxjob");
        let mut b = RawBatch::new(buf.clone()).unwrap();
        let s = [Sample { t: 1, v: 2.0 }, Sample { t: 2, v: 2.0 }];
        // No metric name.
        b.push(None, &[(&buf[0..3], &buf[3..4])], &s).unwrap();
        // A duplicate name.
        b.push(
            None,
            &[(&buf[0..3], &buf[3..4]), (&buf[4..7], &buf[3..4])],
            &s[..1],
        )
        .unwrap();
        let (series, report) = b.to_series();
        assert!(series.is_empty());
        assert_eq!(report.rejected.get(&RejectReason::InvalidLabels), Some(&3));
        assert_eq!(
            report.first_rejection.as_deref(),
            Some("invalid labels {job=\"x\"}: no metric name")
        );
    }
}

//! A hand-written decoder of remote_write 1.0's `WriteRequest`, the hot path of ingest.
//!
//! `prost` decodes every label into its own `String`/`Bytes` and every series into its own
//! vectors: about 2 µs per series of 9 labels here. This decoder walks the wire format once,
//! borrows label strings from the buffer and hands each series to a callback with reused scratch
//! space, as VictoriaMetrics does with its own protobuf parser. Metadata (rare, small) still goes
//! through `prost`. Checked against `prost` by a property test.

use prost::Message as _;

use super::remote_proto::MetricMetadata;
use crate::storage::Sample;

/// Why a body is not a valid `WriteRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated message")]
    Truncated,
    #[error("invalid varint")]
    Varint,
    #[error("invalid field key {0}")]
    Key(u64),
    #[error("field {field} has wire type {wire}, expected {expected}")]
    WireType { field: u32, wire: u8, expected: u8 },
    #[error("metadata: {0}")]
    Metadata(String),
    #[error(transparent)]
    Raw(#[from] crate::raw::RawError),
}

/// One field of a message.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32,
}

impl Field<'_> {
    fn wire(&self) -> u8 {
        match self {
            Field::Varint(_) => 0,
            Field::Fixed64(_) => 1,
            Field::Len(_) => 2,
            Field::Fixed32 => 5,
        }
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        // The tenth byte holds the 64th bit alone; more overflows (refused, as by `prost`).
        if shift == 63 && b > 1 {
            return Err(DecodeError::Varint);
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(DecodeError::Varint)
}

/// Calls `f` with every field of the message in `buf`.
fn fields<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, Field<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    fields_at(buf, |field, v, _| f(field, v))
}

/// Calls `f` with every field of the message in `buf` and where the field (key included)
/// lies in `buf`.
fn fields_at<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, Field<'a>, std::ops::Range<usize>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = varint(buf, &mut pos)?;
        // A key (field number and wire type) is a 32-bit varint, as `prost` reads it.
        let field = u32::try_from(key).map_err(|_| DecodeError::Key(key))? >> 3;
        if field == 0 {
            return Err(DecodeError::Key(key));
        }
        let value = match key & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                let b = buf.get(pos..pos + 8).ok_or(DecodeError::Truncated)?;
                pos += 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Field::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| DecodeError::Truncated)?;
                let end = pos.checked_add(len).ok_or(DecodeError::Truncated)?;
                let b = buf.get(pos..end).ok_or(DecodeError::Truncated)?;
                pos = end;
                Field::Len(b)
            }
            5 => {
                buf.get(pos..pos + 4).ok_or(DecodeError::Truncated)?;
                pos += 4;
                Field::Fixed32
            }
            _ => return Err(DecodeError::Key(key)),
        };
        f(field, value, start..pos)?;
    }
    Ok(())
}

fn expect_len<'a>(field: u32, v: Field<'a>) -> Result<&'a [u8], DecodeError> {
    match v {
        Field::Len(b) => Ok(b),
        other => Err(DecodeError::WireType {
            field,
            wire: other.wire(),
            expected: 2,
        }),
    }
}

/// One decoded series: label pairs as raw bytes (UTF-8 unchecked), samples, exemplars, and
/// how many native histograms it carried.
#[derive(Debug, Default)]
pub struct SeriesRef<'a> {
    pub labels: Vec<(&'a [u8], &'a [u8])>,
    /// The label fields as encoded, when they are contiguous (as every known sender writes
    /// them): what identifies the series cheaply.
    pub labels_span: Option<&'a [u8]>,
    pub samples: Vec<Sample>,
    pub exemplars: Vec<ExemplarRef<'a>>,
    pub histograms: usize,
}

/// One decoded exemplar (`prometheus.Exemplar`), labels as raw bytes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExemplarRef<'a> {
    pub labels: Vec<(&'a [u8], &'a [u8])>,
    pub value: f64,
    pub timestamp: i64,
}

/// Decodes a `prometheus.WriteRequest`, calling `on_series` for each series (the argument is
/// reused between calls) and returning the metadata.
pub fn decode_write_request<'a>(
    buf: &'a [u8],
    mut on_series: impl FnMut(&SeriesRef<'a>),
) -> Result<Vec<MetricMetadata>, DecodeError> {
    let mut metadata = Vec::new();
    let mut s = SeriesRef::default();
    fields(buf, |field, v| {
        match field {
            1 => {
                let ts = expect_len(field, v)?;
                s.labels.clear();
                s.labels_span = None;
                s.samples.clear();
                s.exemplars.clear();
                s.histograms = 0;
                decode_series(ts, &mut s)?;
                on_series(&s);
            }
            3 => {
                let m = expect_len(field, v)?;
                metadata.push(
                    MetricMetadata::decode(m).map_err(|e| DecodeError::Metadata(e.to_string()))?,
                );
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(metadata)
}

/// A length-delimited field with key byte `key` at `*pos`, if there is one.
fn canonical_len<'a>(buf: &'a [u8], pos: &mut usize, key: u8) -> Option<&'a [u8]> {
    if *buf.get(*pos)? != key {
        return None;
    }
    *pos += 1;
    let n = usize::try_from(varint(buf, pos).ok()?).ok()?;
    let b = buf.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(b)
}

/// A `prometheus.Label` as senders write it (name, then value, nothing else), read without
/// the generic field loop; `None` for any other layout.
fn canonical_label(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut pos = 0;
    let name = canonical_len(buf, &mut pos, 0x0a)?;
    let value = canonical_len(buf, &mut pos, 0x12)?;
    (pos == buf.len()).then_some((name, value))
}

/// A `prometheus.Sample` as senders write it (value, then timestamp, nothing else).
fn canonical_sample(buf: &[u8]) -> Option<Sample> {
    if buf.len() < 11 || buf[0] != 0x09 || buf[9] != 0x10 {
        return None;
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[1..9]);
    let mut pos = 10;
    let t = varint(buf, &mut pos).ok()?;
    (pos == buf.len()).then_some(Sample {
        t: t as i64,
        v: f64::from_bits(u64::from_le_bytes(a)),
    })
}

/// The labels of a series' label fields (`repeated Label labels = 1`, as
/// [`SeriesRef::labels_span`] holds them), appended to `out`.
pub(crate) fn decode_labels<'a>(
    span: &'a [u8],
    out: &mut Vec<(&'a [u8], &'a [u8])>,
) -> Result<(), DecodeError> {
    fields(span, |field, v| {
        if field == 1 {
            out.push(decode_label(expect_len(field, v)?)?);
        }
        Ok(())
    })
}

/// A `prometheus.Label`.
fn decode_label(buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    if let Some(l) = canonical_label(buf) {
        return Ok(l);
    }
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    fields(buf, |f, v| {
        match f {
            1 => name = expect_len(f, v)?,
            2 => value = expect_len(f, v)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok((name, value))
}

/// A `prometheus.Exemplar`.
fn decode_exemplar(buf: &[u8]) -> Result<ExemplarRef<'_>, DecodeError> {
    let mut e = ExemplarRef::default();
    fields(buf, |f, v| {
        match (f, v) {
            (1, v) => e.labels.push(decode_label(expect_len(f, v)?)?),
            (2, Field::Fixed64(bits)) => e.value = f64::from_bits(bits),
            (3, Field::Varint(t)) => e.timestamp = t as i64,
            (2 | 3, other) => {
                return Err(DecodeError::WireType {
                    field: f,
                    wire: other.wire(),
                    expected: if f == 2 { 1 } else { 0 },
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(e)
}

fn decode_series<'a>(buf: &'a [u8], s: &mut SeriesRef<'a>) -> Result<(), DecodeError> {
    // Where the label fields seen so far lie, while they are contiguous.
    let mut span: Option<std::ops::Range<usize>> = None;
    let mut contiguous = true;
    fields_at(buf, |field, v, at| {
        match field {
            1 => {
                s.labels.push(decode_label(expect_len(field, v)?)?);
                match &mut span {
                    None => span = Some(at),
                    Some(r) if r.end == at.start => r.end = at.end,
                    Some(_) => contiguous = false,
                }
            }
            2 => {
                let buf = expect_len(field, v)?;
                if let Some(sample) = canonical_sample(buf) {
                    s.samples.push(sample);
                    return Ok(());
                }
                let mut sample = Sample { t: 0, v: 0.0 };
                fields(buf, |f, v| {
                    match (f, v) {
                        (1, Field::Fixed64(bits)) => sample.v = f64::from_bits(bits),
                        (2, Field::Varint(t)) => sample.t = t as i64,
                        (1 | 2, other) => {
                            return Err(DecodeError::WireType {
                                field: f,
                                wire: other.wire(),
                                expected: if f == 1 { 1 } else { 0 },
                            });
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                s.samples.push(sample);
            }
            3 => s.exemplars.push(decode_exemplar(expect_len(field, v)?)?),
            4 => {
                // Not decoded (not stored yet), but a malformed one fails the request, as in
                // Prometheus's receiver.
                fields(expect_len(field, v)?, |_, _| Ok(()))?;
                s.histograms += 1;
            }
            _ => {}
        }
        Ok(())
    })?;
    s.labels_span = span.filter(|_| contiguous).map(|r| &buf[r]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::api::remote_proto::{self, Opaque, TimeSeries, WriteRequest};

    /// Found by the `remote_write` fuzz target: a varint of more than 64 bits was accepted.
    #[test]
    fn an_overflowing_varint_fails_the_request() {
        let mut ts = [0xff; 10];
        let mut sample = vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        for last in [0x01, 0x02] {
            ts[9] = last;
            sample.truncate(10);
            sample.extend(ts);
            let mut series = vec![0x12, sample.len() as u8];
            series.extend(&sample);
            let mut req = vec![0x0a, series.len() as u8];
            req.extend(&series);
            let ours = decode_write_request(&req, |_| {});
            assert_eq!(
                ours.is_ok(),
                WriteRequest::decode(&req[..]).is_ok(),
                "{last}"
            );
            assert_eq!(ours.is_ok(), last == 0x01);
        }
    }

    /// Found by the `remote_write` fuzz target: a field key over 32 bits was accepted.
    #[test]
    fn a_key_over_32_bits_fails_the_request() {
        let req = [0x80, 0x80, 0x80, 0x80, 0x10, 0x00]; // key 2^32, a varint 0
        assert_eq!(
            decode_write_request(&req, |_| {}).unwrap_err(),
            DecodeError::Key(1 << 32)
        );
        assert!(WriteRequest::decode(&req[..]).is_err());
    }

    /// Found by the `remote_write` fuzz target: a malformed native histogram was accepted.
    #[test]
    fn a_malformed_histogram_fails_the_request() {
        let histogram = [0x0a, 0x05]; // a field claiming 5 bytes, with none
        let mut series = vec![0x22, histogram.len() as u8];
        series.extend(histogram);
        let mut req = vec![0x0a, series.len() as u8];
        req.extend(&series);
        assert_eq!(
            decode_write_request(&req, |_| {}).unwrap_err(),
            DecodeError::Truncated
        );
        assert!(WriteRequest::decode(&req[..]).is_err());
    }

    fn exemplar() -> impl Strategy<Value = remote_proto::Exemplar> {
        (
            prop::collection::vec(label(), 0..3),
            any::<f64>(),
            any::<i64>(),
        )
            .prop_map(|(labels, value, timestamp)| remote_proto::Exemplar {
                labels,
                value,
                timestamp,
            })
    }

    fn label() -> impl Strategy<Value = remote_proto::Label> {
        ("[a-z_]{0,6}", "\\PC{0,6}").prop_map(|(n, v)| remote_proto::Label {
            name: Bytes::from(n),
            value: Bytes::from(v),
        })
    }

    fn series() -> impl Strategy<Value = TimeSeries> {
        (
            prop::collection::vec(label(), 0..5),
            prop::collection::vec((any::<i64>(), any::<f64>()), 0..4),
            prop::collection::vec(exemplar(), 0..2),
            0usize..2,
        )
            .prop_map(|(labels, samples, exemplars, h)| TimeSeries {
                labels,
                samples: samples
                    .into_iter()
                    .map(|(timestamp, value)| remote_proto::Sample { value, timestamp })
                    .collect(),
                exemplars,
                histograms: vec![Opaque {}; h],
            })
    }

    proptest! {
        #[test]
        fn agrees_with_prost(ts in prop::collection::vec(series(), 0..5), md in 0usize..2) {
            let req = WriteRequest {
                timeseries: ts,
                metadata: vec![MetricMetadata {
                    r#type: 2,
                    metric_family_name: "m".into(),
                    help: "h".into(),
                    unit: String::new(),
                }; md],
            };
            let buf = req.encode_to_vec();
            let mut got = Vec::new();
            let meta = decode_write_request(&buf, |s| {
                got.push((
                    s.labels.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>(),
                    s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect::<Vec<_>>(),
                    s.exemplars.iter().map(|e| (
                        e.labels.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>(),
                        e.value.to_bits(),
                        e.timestamp,
                    )).collect::<Vec<_>>(),
                    s.histograms,
                ));
            }).unwrap();
            // Against what prost reads back (proto3 drops -0.0 like any zero).
            let back = WriteRequest::decode(&buf[..]).unwrap();
            let want: Vec<_> = back.timeseries.iter().map(|t| (
                t.labels.iter().map(|l| (l.name.to_vec(), l.value.to_vec())).collect::<Vec<_>>(),
                t.samples.iter().map(|p| (p.timestamp, p.value.to_bits())).collect::<Vec<_>>(),
                t.exemplars.iter().map(|e| (
                    e.labels.iter().map(|l| (l.name.to_vec(), l.value.to_vec())).collect::<Vec<_>>(),
                    e.value.to_bits(),
                    e.timestamp,
                )).collect::<Vec<_>>(),
                t.histograms.len(),
            )).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(meta, back.metadata);
            // prost writes the labels first and contiguously: the span is their encoding.
            let mut spans = Vec::new();
            decode_write_request(&buf, |s| spans.push(s.labels_span.map(<[u8]>::to_vec))).unwrap();
            let want: Vec<Option<Vec<u8>>> = back.timeseries.iter().map(|t| {
                (!t.labels.is_empty()).then(|| TimeSeries { labels: t.labels.clone(), ..Default::default() }.encode_to_vec())
            }).collect();
            prop_assert_eq!(spans, want);
        }

        #[test]
        fn garbage_never_panics(buf in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_write_request(&buf, |_| {});
        }
    }

    #[test]
    fn fields_in_any_order_and_interleaved_labels() {
        // Label {value: "v", name: "n"}, then a sample {timestamp: 5, value: 1.0}, then a
        // label {name: "m"} after it.
        let mut ts = vec![0x0a, 6, 0x12, 1, b'v', 0x0a, 1, b'n'];
        ts.extend([0x12, 11, 0x10, 5, 0x09]);
        ts.extend(1.0f64.to_le_bytes());
        ts.extend([0x0a, 3, 0x0a, 1, b'm']);
        let mut req = vec![0x0a, ts.len() as u8];
        req.extend(&ts);
        let mut got = Vec::new();
        decode_write_request(&req, |s| {
            got.push((
                s.labels.clone(),
                s.labels_span,
                s.samples.iter().map(|p| (p.t, p.v)).collect::<Vec<_>>(),
            ));
        })
        .unwrap();
        assert_eq!(
            got,
            [(
                vec![(&b"n"[..], &b"v"[..]), (&b"m"[..], &b""[..])],
                None,
                vec![(5, 1.0)]
            )]
        );
        let mut pairs = Vec::new();
        decode_labels(&ts[..8], &mut pairs).unwrap();
        assert_eq!(pairs, [(&b"n"[..], &b"v"[..])]);
    }

    #[test]
    fn truncated_and_bad_wire_types_are_errors() {
        assert_eq!(
            decode_write_request(&[0x0a, 0x05, 0x0a], |_| {}),
            Err(DecodeError::Truncated)
        );
        // Field 1 as a varint.
        assert!(matches!(
            decode_write_request(&[0x08, 0x01], |_| {}),
            Err(DecodeError::WireType { field: 1, .. })
        ));
        assert_eq!(
            decode_write_request(&[0x0f], |_| {}),
            Err(DecodeError::Key(15))
        );
        assert_eq!(decode_write_request(&[], |_| {}), Ok(vec![]));
    }
}

//! Targets over what clients and the bus send: remote-write bodies and the metrics topic's
//! records.

use prost::Message as _;

use super::{assert_series_labels, assert_well_formed};
use crate::api::remote_decode::{DecodeError, SeriesRef, decode_labels, decode_write_request};
use crate::api::remote_proto::{Label, TimeSeries, WriteRequest};
use crate::api::write::decode_for_fuzzing;

/// Largest decompressed body the target decodes (the receiver's default is larger; the
/// fuzzer's inputs are smaller anyway).
const MAX_BODY: usize = 1 << 20;

/// A remote-write body; its first byte picks 1.0 (even) or 2.0 (odd), the rest is the
/// protobuf message. 1.0's hand-written decoder must agree with `prost` on every message (both
/// refuse it, or both accept it with the same content). The message, snappy-compressed, goes
/// through the receiver's decoding, and every series that reaches the store has a
/// well-formed label set; the raw bytes go through it as a (mostly broken) snappy body.
pub fn remote_write(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let v2 = flags & 1 == 1;
    let accepted = !v2 && agrees_with_prost(body);
    if let Ok(compressed) = snap::raw::Encoder::new().compress_vec(body) {
        match decode_for_fuzzing(&compressed, v2, MAX_BODY) {
            Ok((_, series)) => series.iter().for_each(|s| assert_series_labels(&s.labels)),
            Err(e) => assert!(!accepted, "a body the decoder accepts was refused: {e}"),
        }
    }
    if let Ok((_, series)) = decode_for_fuzzing(body, v2, MAX_BODY) {
        series.iter().for_each(|s| assert_series_labels(&s.labels));
    }
}

/// A series as both decoders can show it: labels, samples (value bits), exemplars,
/// histograms.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;
#[derive(Debug, PartialEq)]
struct Owned {
    labels: Pairs,
    samples: Vec<(i64, u64)>,
    exemplars: Vec<(Pairs, u64, i64)>,
    histograms: usize,
}

fn pairs<'a>(it: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Pairs {
    it.into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

fn prost_pairs(labels: &[Label]) -> Pairs {
    pairs(labels.iter().map(|l| (&l.name[..], &l.value[..])))
}

impl Owned {
    fn ours(s: &SeriesRef<'_>) -> Owned {
        if let Some(span) = s.labels_span {
            let mut again = Vec::new();
            decode_labels(span, &mut again).unwrap_or_else(|e| panic!("a label span: {e}"));
            assert_eq!(again, s.labels, "the label span holds the labels");
        }
        Owned {
            labels: pairs(s.labels.iter().copied()),
            samples: s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect(),
            exemplars: (s.exemplars.iter())
                .map(|e| {
                    (
                        pairs(e.labels.iter().copied()),
                        e.value.to_bits(),
                        e.timestamp,
                    )
                })
                .collect(),
            histograms: s.histograms,
        }
    }

    fn prost(s: &TimeSeries) -> Owned {
        Owned {
            labels: prost_pairs(&s.labels),
            samples: s
                .samples
                .iter()
                .map(|x| (x.timestamp, x.value.to_bits()))
                .collect(),
            exemplars: (s.exemplars.iter())
                .map(|e| (prost_pairs(&e.labels), e.value.to_bits(), e.timestamp))
                .collect(),
            histograms: s.histograms.len(),
        }
    }
}

/// Checks the hand-written decoder against `prost`; whether it accepted the message.
fn agrees_with_prost(body: &[u8]) -> bool {
    let mut ours = Vec::new();
    let got = decode_write_request(body, |s| ours.push(Owned::ours(s)));
    match (got, WriteRequest::decode(body)) {
        (Ok(metadata), Ok(want)) => {
            let want_series: Vec<Owned> = want.timeseries.iter().map(Owned::prost).collect();
            assert_eq!(ours, want_series);
            assert_eq!(metadata, want.metadata);
            true
        }
        (Err(_), Err(_)) => false,
        // Known: groups (wire types 3 and 4, deprecated, sent by no known client) in unknown
        // fields are skipped by `prost` and Prometheus, refused here.
        (Err(DecodeError::Key(k)), Ok(_)) if matches!(k & 7, 3 | 4) => false,
        (Ok(_), Err(e)) => panic!("accepted a message prost refuses ({e})"),
        (Err(e), Ok(_)) => panic!("refused a message prost accepts ({e})"),
    }
}

/// A record of the bus's metrics topic, as the tsdb's consumer decodes it.
pub fn ingest(data: &[u8]) {
    for batch in crate::ingest::decode(std::iter::once(data)).values() {
        for s in &batch.series {
            assert_well_formed(&s.labels);
            assert!(!s.samples.is_empty());
        }
        for s in &batch.exemplars {
            assert_well_formed(&s.labels);
            s.exemplars
                .iter()
                .for_each(|e| assert_well_formed(&e.labels));
        }
    }
}

//! The payloads carried on the bus, as protobuf messages, and their partition keys.
//!
//! The messages are declared with `prost` derives rather than generated from `.proto` files, which
//! keeps `protoc` out of the build. Field numbers are the wire contract: never reuse one. The
//! metrics messages keep Prometheus remote-write's field numbers (`Label`, `Sample`, `TimeSeries`)
//! so that a remote-write series maps onto them one to one.

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

/// A label pair.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A float sample.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// One series (labels sorted by name, `__name__` included) with samples in time order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars of the series (scraped OpenMetrics exemplars), as remote-write carries them.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
}

/// An exemplar: its own labels (`trace_id`, …), value and time (remote-write field numbers).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
    /// Whether the time came with the exemplar (a scraped exemplar without one gets the
    /// scrape's time, and the store treats its repeats as duplicates). Not in remote-write.
    #[prost(bool, tag = "4")]
    pub has_timestamp: bool,
}

/// The payload of [`crate::Topic::Metrics`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricsBatch {
    /// Tenant (`X-Scope-OrgID`); empty means the default tenant.
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(message, repeated, tag = "2")]
    pub series: Vec<TimeSeries>,
}

/// One log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogEntry {
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub timestamp_ns: i64,
    #[prost(string, tag = "2")]
    pub line: String,
    /// Per-line fields that are not stream labels (parsed access-log fields, trace id…), as
    /// Loki's structured metadata.
    #[prost(message, repeated, tag = "3")]
    pub fields: Vec<Label>,
}

/// Lines of one log stream (one label set), in time order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogStream {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<LogEntry>,
}

/// The payload of [`crate::Topic::Logs`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogsBatch {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(message, repeated, tag = "2")]
    pub streams: Vec<LogStream>,
}

/// The payload of [`crate::Topic::Spans`]: an OTLP `TracesData` message, kept encoded so that the
/// bus and its producers need not depend on the OTLP types; the tracer decodes it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpansBatch {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub otlp_traces_data: Bytes,
}

/// A discrete event: a scaling decision, an alert transition, a Kubernetes event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub timestamp_ns: i64,
    /// What kind of event (`scaling`, `alert`, `kubernetes`…).
    #[prost(string, tag = "2")]
    pub kind: String,
    #[prost(message, repeated, tag = "3")]
    pub labels: Vec<Label>,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// The payload of [`crate::Topic::Events`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventsBatch {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<Event>,
}

/// The partition key of a series or log stream: a hash of its tenant and sorted label set, so
/// that every batch of one series lands on one partition, in order.
///
/// `labels` must be sorted by name (as [`TimeSeries`] and [`LogStream`] require).
pub fn labels_key(tenant: &str, labels: &[Label]) -> Bytes {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(tenant.as_bytes());
    buf.push(0xff);
    for l in labels {
        buf.extend_from_slice(l.name.as_bytes());
        buf.push(0xfe);
        buf.extend_from_slice(l.value.as_bytes());
        buf.push(0xff);
    }
    Bytes::copy_from_slice(&xxh3_64(&buf).to_be_bytes())
}

/// The partition key of a trace: its 16-byte trace id, so that all spans of a trace land on one
/// partition.
pub fn trace_key(trace_id: &[u8]) -> Bytes {
    Bytes::copy_from_slice(trace_id)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn metrics_batch_round_trips() {
        let batch = MetricsBatch {
            tenant: "team-a".into(),
            series: vec![TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "node")],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: 1_700_000_000_000,
                    },
                    Sample {
                        value: f64::NAN,
                        timestamp: 1_700_000_015_000,
                    },
                ],
                exemplars: vec![Exemplar {
                    labels: vec![label("trace_id", "4bf92f3577b34da6")],
                    value: 0.25,
                    timestamp: 1_700_000_014_000,
                    has_timestamp: true,
                }],
            }],
        };
        let decoded = MetricsBatch::decode(batch.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.tenant, "team-a");
        assert_eq!(decoded.series[0].labels, batch.series[0].labels);
        assert!(decoded.series[0].samples[1].value.is_nan());
        assert_eq!(decoded.series[0].exemplars, batch.series[0].exemplars);
    }

    #[test]
    fn time_series_is_wire_compatible_with_remote_write() {
        // A remote-write TimeSeries with one label {a="b"} and one sample (1.5 @ 1000), encoded by
        // hand from prompb/types.proto: labels=1 (name=1, value=2), samples=2 (value=1, timestamp=2).
        let wire = [
            0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', // labels
            0x12, 0x0c, 0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x10, 0xe8, 0x07, // samples
        ];
        let ts = TimeSeries::decode(wire.as_slice()).unwrap();
        assert_eq!(ts.labels, vec![label("a", "b")]);
        assert_eq!(ts.samples[0].value, 1.5);
        assert_eq!(ts.samples[0].timestamp, 1000);
        assert_eq!(ts.encode_to_vec(), wire);
    }

    #[test]
    fn keys_separate_tenants_and_label_sets() {
        let a = [label("__name__", "up"), label("job", "x")];
        let b = [label("__name__", "up"), label("job", "y")];
        assert_eq!(labels_key("t", &a), labels_key("t", &a));
        assert_ne!(labels_key("t", &a), labels_key("t", &b));
        assert_ne!(labels_key("t", &a), labels_key("u", &a));
        // Separators keep ("ab","c") and ("a","bc") apart.
        assert_ne!(
            labels_key("", &[label("ab", "c")]),
            labels_key("", &[label("a", "bc")])
        );
    }
}

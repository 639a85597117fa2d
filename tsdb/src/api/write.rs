//! `POST /api/v1/write`: Prometheus remote_write 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`), snappy block format, with the receiver semantics of the
//! spec and Prometheus: 204 on success; 400 (do not retry) for undecodable bodies and for
//! samples rejected for non-retriable reasons, the accepted samples of the same request being
//! stored; 5xx (retry) when storage fails; 415 for content types and encodings we do not speak.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message as _;

use super::remote_decode::{DecodeError, ExemplarRef, decode_write_request};
use super::remote_proto::{RequestV2, type_name};
use super::{ApiState, blocking};
use crate::exemplar::{Exemplar, ExemplarReject, ExemplarReport, SeriesExemplars};
use crate::labels::{Labels, METRIC_NAME};
use crate::metadata::Metadata;
use crate::metrics;
use crate::raw::{RawBatch, show};
use crate::storage::{AppendReport, RejectReason, Sample, SeriesSamples, Store};

const V2_PROTO: &str = "io.prometheus.write.v2.Request";
const V1_PROTO: &str = "prometheus.WriteRequest";

/// What one ingest request produced besides its series.
#[derive(Debug, Default)]
pub(super) struct Rejections {
    /// Samples not passed to storage, by metric reason.
    pub counts: Vec<(&'static str, usize)>,
    /// The first of them, for the client's error message.
    pub first: Option<String>,
}

impl Rejections {
    pub(super) fn add(&mut self, reason: &'static str, n: usize, message: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        match self.counts.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.counts.push((reason, n)),
        }
        if self.first.is_none() {
            self.first = Some(message());
        }
    }
}

/// A plain-text answer (remote_write and import answer text, not the JSON envelope).
pub(super) fn text(path: &str, status: StatusCode, message: impl Into<String>) -> Response {
    metrics::WRITE_REQUESTS
        .with_label_values(&[path, status.as_str()])
        .inc();
    let mut m = message.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    (status, m).into_response()
}

/// What one ingest request decoded: samples by series, what was refused before storage,
/// exemplars and metric metadata.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    pub batch: Vec<SeriesSamples>,
    /// Series with raw labels (remote-write 1.0), checked by the store.
    pub raw: RawBatch,
    pub pre: Rejections,
    pub exemplars: Vec<SeriesExemplars>,
    pub metadata: Vec<(String, Metadata)>,
    /// Why an exemplar could not be read (remote_write 2.0 answers 400 for it).
    pub bad_exemplar: Option<String>,
}

/// Appends the decoded request to the tenant's store and answers as the remote_write receiver
/// does; counts accepted and rejected samples by path and reason. Samples and exemplars are
/// made durable concurrently (each has its own log); metadata is recorded on the way.
/// With `v2`, remote_write 2.0's headers are set and out-of-order exemplars answer 400.
pub(super) async fn append_and_answer(
    store: Arc<dyn Store>,
    decoded: Decoded,
    path: &'static str,
    v2: bool,
) -> Response {
    let Decoded {
        batch,
        raw,
        pre,
        exemplars,
        metadata,
        bad_exemplar,
    } = decoded;
    let samples = {
        let store = store.clone();
        async move {
            if batch.is_empty() && raw.is_empty() {
                Ok(AppendReport::default())
            } else {
                blocking(move || {
                    let mut report = AppendReport::default();
                    if !batch.is_empty() {
                        report.merge(store.append(&batch)?);
                    }
                    if !raw.is_empty() {
                        report.merge(store.append_raw(&raw)?);
                    }
                    Ok(report)
                })
                .await
            }
        }
    };
    let annotations = async move {
        if exemplars.is_empty() && metadata.is_empty() {
            return Ok(ExemplarReport::default());
        }
        blocking(move || {
            if !metadata.is_empty()
                && let Err(e) = store.record_metadata(metadata)
            {
                tracing::warn!(path, error = %e, "recording metric metadata failed");
            }
            if exemplars.is_empty() {
                return Ok(ExemplarReport::default());
            }
            Ok(store.append_exemplars(&exemplars)?)
        })
        .await
    };
    let (result, exemplar_result) = tokio::join!(samples, annotations);
    for (reason, n) in &pre.counts {
        metrics::INGEST_REJECTED
            .with_label_values(&[path, reason])
            .inc_by(*n as u64);
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path, error = %e.message, "ingest failed in storage");
            return text(path, StatusCode::INTERNAL_SERVER_ERROR, e.message);
        }
    };
    metrics::SAMPLES_INGESTED
        .with_label_values(&[path])
        .inc_by(report.accepted as u64);
    for (reason, n) in &report.rejected {
        metrics::INGEST_REJECTED
            .with_label_values(&[path, reason.as_str()])
            .inc_by(*n as u64);
    }
    let exemplar_report = match exemplar_result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path, error = %e.message, "storing exemplars failed");
            return text(path, StatusCode::INTERNAL_SERVER_ERROR, e.message);
        }
    };
    let ooo_exemplars = exemplar_report
        .rejected
        .get(&ExemplarReject::OutOfOrder)
        .copied()
        .unwrap_or(0);
    if ooo_exemplars > 0 {
        tracing::warn!(
            path,
            num_dropped = ooo_exemplars,
            "error on ingesting out-of-order exemplars"
        );
    }
    let mut first = pre.first.or(report.first_rejection.clone());
    if v2 {
        // Remote-write 2.0 reports unreadable and out-of-order exemplars (1.0 only logs them).
        first = first
            .or(bad_exemplar)
            .or(exemplar_report.first_out_of_order.clone());
    }
    let mut response = match first {
        Some(m) => {
            let pre_total: usize = pre.counts.iter().map(|(_, n)| n).sum();
            tracing::debug!(
                path,
                accepted = report.accepted,
                rejected = pre_total + report.rejected_total(),
                first = %m,
                "ingest rejected samples"
            );
            text(path, StatusCode::BAD_REQUEST, m)
        }
        None => {
            metrics::WRITE_REQUESTS
                .with_label_values(&[path, "204"])
                .inc();
            StatusCode::NO_CONTENT.into_response()
        }
    };
    if v2 {
        let h = response.headers_mut();
        let written = HeaderValue::from(report.accepted);
        h.insert("X-Prometheus-Remote-Write-Samples-Written", written);
        h.insert(
            "X-Prometheus-Remote-Write-Histograms-Written",
            HeaderValue::from(0),
        );
        h.insert(
            "X-Prometheus-Remote-Write-Exemplars-Written",
            HeaderValue::from(exemplar_report.accepted),
        );
    }
    response
}

/// Per-request string interning: each distinct label string of a request is checked for UTF-8
/// and allocated once, however many series repeat it.
#[derive(Default)]
struct Interner<'a> {
    /// foldhash, not SipHash: one lookup per label string of the request, and seeded, since
    /// the keys are what the client sent.
    strings: foldhash::HashMap<&'a [u8], Arc<str>>,
}

impl<'a> Interner<'a> {
    fn get(&mut self, b: &'a [u8]) -> Result<Arc<str>, String> {
        if let Some(s) = self.strings.get(b) {
            return Ok(s.clone());
        }
        let s: Arc<str> = std::str::from_utf8(b)
            .map_err(|_| format!("{:?} is not valid UTF-8", String::from_utf8_lossy(b)))?
            .into();
        self.strings.insert(b, s.clone());
        Ok(s)
    }
}

/// Labels of a remote-write series, or why they are invalid.
fn series_labels<'a>(
    interner: &mut Interner<'a>,
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Labels, String> {
    crate::raw::labels_from_pairs(pairs, |b| interner.get(b))
}

/// The family a series' metadata belongs to (`_bucket`, `_sum`, `_count` of histograms and
/// summaries name their family without the suffix).
fn family_of(name: &str, kind: &str) -> String {
    if matches!(kind, "histogram" | "gaugehistogram" | "summary") {
        for suffix in ["_bucket", "_sum", "_count", "_created"] {
            if let Some(f) = name.strip_suffix(suffix) {
                return f.to_string();
            }
        }
    }
    name.to_string()
}

pub(super) async fn remote_write(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const PATH: &str = "remote_write";
    let header_str = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(enc) = header_str(header::CONTENT_ENCODING)
        && !enc.trim().is_empty()
        && !enc.trim().eq_ignore_ascii_case("snappy")
    {
        return text(
            PATH,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported compression: {enc}. Only snappy is supported"),
        );
    }
    let v2 = match header_str(header::CONTENT_TYPE).map(str::trim) {
        None | Some("") => false,
        Some(ct) => {
            let mut parts = ct.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|m| m.eq_ignore_ascii_case("application/x-protobuf"))
            {
                return text(
                    PATH,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("unsupported content type {ct:?}; expected application/x-protobuf"),
                );
            }
            match parts.find_map(|p| p.strip_prefix("proto=")) {
                None | Some(V1_PROTO) => false,
                Some(V2_PROTO) => true,
                Some(other) => {
                    return text(
                        PATH,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!("unsupported proto message {other:?}"),
                    );
                }
            }
        }
    };
    let tenant = match super::tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return text(PATH, StatusCode::BAD_REQUEST, e.message),
    };
    let store = match state.inner.tenants.tenant(&tenant) {
        Ok(s) => s,
        Err(e) => return text(PATH, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Decompressing and decoding a large body takes milliseconds: off the async runtime.
    let st = state.clone();
    let decoded = tokio::task::spawn_blocking(move || decode(&st, &body, v2)).await;
    match decoded {
        Ok(Ok(d)) => append_and_answer(store, d, PATH, v2).await,
        Ok(Err((status, message))) => text(PATH, status, message),
        Err(e) => text(
            PATH,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("decoding task failed: {e}"),
        ),
    }
}

/// Snappy, then protobuf, then our series, exemplars and metadata.
pub(super) fn decode(
    state: &ApiState,
    body: &[u8],
    v2: bool,
) -> Result<Decoded, (StatusCode, String)> {
    decode_body(body, v2, state.config().max_body())
}

/// [`decode`] with the largest decompressed body `max`.
fn decode_body(body: &[u8], v2: bool, max: usize) -> Result<Decoded, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    match snap::raw::decompress_len(body) {
        Ok(n) if n > max => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed body of {n} bytes exceeds the limit of {max} bytes"),
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(bad(format!("snappy: {e}"))),
    }
    // Decoding from `Bytes` makes label strings slices of this buffer.
    let raw = Bytes::from(
        snap::raw::Decoder::new()
            .decompress_vec(body)
            .map_err(|e| bad(format!("snappy: {e}")))?,
    );
    if v2 {
        RequestV2::decode(raw)
            .map(from_v2)
            .map_err(|e| bad(format!("decoding protobuf: {e}")))
    } else {
        from_v1(raw).map_err(|e| bad(format!("decoding protobuf: {e}")))
    }
}

/// An exemplar's labels (empty values dropped); `None` when a string is not UTF-8.
fn exemplar_labels<'a>(
    interner: &mut Interner<'a>,
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<Labels> {
    let mut out: Vec<(Arc<str>, Arc<str>)> = Vec::new();
    for (n, v) in pairs {
        out.push((interner.get(n).ok()?, interner.get(v).ok()?));
    }
    Some(Labels::from_pairs(out))
}

fn v1_exemplars<'a>(
    interner: &mut Interner<'a>,
    labels: &Labels,
    refs: &[ExemplarRef<'a>],
) -> Option<SeriesExemplars> {
    let mut exemplars = Vec::with_capacity(refs.len());
    for e in refs {
        let Some(l) = exemplar_labels(interner, e.labels.iter().copied()) else {
            tracing::debug!(series = %labels, "dropping an exemplar with labels not in UTF-8");
            continue;
        };
        exemplars.push(Exemplar {
            labels: l,
            value: e.value,
            t: e.timestamp,
            has_ts: e.timestamp != 0,
        });
    }
    (!exemplars.is_empty()).then(|| SeriesExemplars {
        labels: labels.clone(),
        exemplars,
    })
}

/// Series without exemplars or histograms go to the store with raw labels (it checks them
/// only for series it does not know); the others are checked here, since their exemplars and
/// messages need label sets.
fn from_v1(buf: Bytes) -> Result<Decoded, DecodeError> {
    let mut pre = Rejections::default();
    let mut raw = RawBatch::new(buf.clone())?;
    let mut interner = Interner::default();
    let mut exemplars = Vec::new();
    let mut pushed = Ok(());
    let metadata = decode_write_request(&buf, |ts| {
        if !ts.exemplars.is_empty() || ts.histograms > 0 {
            let n = ts.samples.len() + ts.histograms;
            let labels = match series_labels(&mut interner, ts.labels.iter().copied()) {
                Ok(l) => l,
                Err(why) => {
                    pre.add(RejectReason::InvalidLabels.as_str(), n, || {
                        format!("invalid labels {}: {why}", show(ts.labels.iter().copied()))
                    });
                    return;
                }
            };
            pre.add("native_histogram", ts.histograms, || {
                format!("series {labels}: native histograms are not supported")
            });
            if !ts.exemplars.is_empty()
                && let Some(e) = v1_exemplars(&mut interner, &labels, &ts.exemplars)
            {
                exemplars.push(e);
            }
        }
        if !ts.samples.is_empty() && pushed.is_ok() {
            pushed = raw.push(ts.labels_span, &ts.labels, &ts.samples);
        }
    })?;
    pushed?;
    let metadata = metadata
        .into_iter()
        .map(|m| {
            (
                m.metric_family_name,
                Metadata {
                    kind: type_name(m.r#type).to_string(),
                    help: m.help,
                    unit: m.unit,
                },
            )
        })
        .collect();
    Ok(Decoded {
        batch: Vec::new(),
        raw,
        pre,
        exemplars,
        metadata,
        bad_exemplar: None,
    })
}

fn from_v2(req: RequestV2) -> Decoded {
    let mut pre = Rejections::default();
    let mut batch = Vec::with_capacity(req.timeseries.len());
    let mut metadata = Vec::new();
    let mut exemplars = Vec::new();
    let mut bad_exemplar = None;
    let sym = |i: u32| req.symbols.get(i as usize).map(|b| &b[..]);
    let text = |i: u32| {
        sym(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut interner = Interner::default();
    for ts in &req.timeseries {
        let n = ts.samples.len() + ts.histograms.len();
        let pairs: Option<Vec<(&[u8], &[u8])>> = if ts.labels_refs.len() % 2 == 1 {
            None
        } else {
            ts.labels_refs
                .chunks(2)
                .map(|c| Some((sym(c[0])?, sym(c[1])?)))
                .collect()
        };
        let Some(pairs) = pairs else {
            pre.add(RejectReason::InvalidLabels.as_str(), n, || {
                format!(
                    "invalid labels_refs {:?}: odd length or out of the symbols table",
                    ts.labels_refs
                )
            });
            continue;
        };
        let labels = match series_labels(&mut interner, pairs.iter().copied()) {
            Ok(l) => l,
            Err(why) => {
                pre.add(RejectReason::InvalidLabels.as_str(), n, || {
                    let shown: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> = pairs
                        .iter()
                        .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
                        .collect();
                    format!("invalid labels {shown:?}: {why}")
                });
                continue;
            }
        };
        pre.add("native_histogram", ts.histograms.len(), || {
            format!("series {labels}: native histograms are not supported")
        });
        if let Some(md) = &ts.metadata
            && md.r#type != 0
        {
            let kind = type_name(md.r#type);
            let name = labels.get(METRIC_NAME).unwrap_or_default();
            metadata.push((
                family_of(name, kind),
                Metadata {
                    kind: kind.to_string(),
                    help: text(md.help_ref),
                    unit: text(md.unit_ref),
                },
            ));
        }
        let mut ex = Vec::new();
        for e in &ts.exemplars {
            let pairs: Option<Vec<(&[u8], &[u8])>> = if e.labels_refs.len() % 2 == 1 {
                None
            } else {
                e.labels_refs
                    .chunks(2)
                    .map(|c| Some((sym(c[0])?, sym(c[1])?)))
                    .collect()
            };
            match pairs.and_then(|p| exemplar_labels(&mut interner, p.into_iter())) {
                Some(l) => ex.push(Exemplar {
                    labels: l,
                    value: e.value,
                    t: e.timestamp,
                    has_ts: e.timestamp != 0,
                }),
                None => {
                    bad_exemplar.get_or_insert_with(|| {
                        format!(
                            "parsing exemplar for series {labels}: invalid labels_refs {:?}",
                            e.labels_refs
                        )
                    });
                }
            }
        }
        if !ex.is_empty() {
            exemplars.push(SeriesExemplars {
                labels: labels.clone(),
                exemplars: ex,
            });
        }
        if ts.samples.is_empty() {
            continue;
        }
        batch.push(SeriesSamples {
            labels,
            samples: ts
                .samples
                .iter()
                .map(|s| Sample {
                    t: s.timestamp,
                    v: s.value,
                })
                .collect(),
        });
    }
    Decoded {
        batch,
        raw: RawBatch::default(),
        pre,
        exemplars,
        metadata,
        bad_exemplar,
    }
}

/// For `crate::fuzzing`: decodes a request body as [`remote_write`] does, then the series'
/// label sets as the store builds them; the sample count and series that reach the store.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode_for_fuzzing(
    body: &[u8],
    v2: bool,
    max: usize,
) -> Result<(usize, Vec<SeriesSamples>), String> {
    let d = decode_body(body, v2, max).map_err(|(_, m)| m)?;
    let (mut series, _) = d.raw.to_series();
    series.extend(d.batch);
    for e in &d.exemplars {
        assert!(!e.exemplars.is_empty(), "a series with no exemplars");
    }
    Ok((d.raw.num_samples(), series))
}

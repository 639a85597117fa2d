//! `POST /api/v1/import/prometheus`: text exposition / OpenMetrics import as VictoriaMetrics
//! serves it. Samples without a timestamp get the request's arrival time; `extra_label=name=value`
//! parameters set labels on every sample (overriding the body's); a gzip body is accepted with
//! `Content-Encoding: gzip`; `# TYPE/# HELP/# UNIT` feed `/api/v1/metadata`; OpenMetrics
//! exemplars are stored (without a timestamp they take their sample's). 204 on success,
//! 400 with the line and column of a syntax error, and the remote_write semantics for samples the
//! store rejects.

use std::collections::HashMap;
use std::io::Read as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;

use super::ApiState;
use super::params::Params;
use super::query::now_ms;
use super::write::{Decoded, append_and_answer, text};
use crate::exemplar::{Exemplar, SeriesExemplars};
use crate::exposition::{self, Format, MetricType};
use crate::labels::Labels;
use crate::metadata::Metadata;
use crate::storage::{Sample, SeriesSamples};

const PATH: &str = "import";

pub(super) async fn import(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_str = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    let gzip = match header_str(header::CONTENT_ENCODING).map(str::trim) {
        None | Some("" | "identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(e) => {
            return text(
                PATH,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {e:?}; use gzip or none"),
            );
        }
    };
    let params = Params::from_request(&Method::GET, &uri, &headers, &[]);
    let mut extra: Vec<(String, String)> = Vec::new();
    for l in params.all("extra_label") {
        match l.split_once('=') {
            Some((n, v)) if !n.is_empty() => extra.push((n.to_string(), v.to_string())),
            _ => {
                return text(
                    PATH,
                    StatusCode::BAD_REQUEST,
                    format!("extra_label {l:?}: expected name=value"),
                );
            }
        }
    }
    let tenant = match super::tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return text(PATH, StatusCode::BAD_REQUEST, e.message),
    };
    let format = Format::from_content_type(header_str(header::CONTENT_TYPE).unwrap_or(""));
    let store = match state.inner.tenants.tenant(&tenant) {
        Ok(s) => s,
        Err(e) => return text(PATH, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let now = now_ms();
    let max_body = state.config().max_body();
    // Inflating and parsing a large body takes milliseconds: off the async runtime.
    let parsed = tokio::task::spawn_blocking(move || {
        let raw = if gzip {
            gunzip(&body, max_body)?
        } else {
            body.to_vec()
        };
        let text = std::str::from_utf8(&raw).map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "the body is not valid UTF-8".to_string(),
            )
        })?;
        to_batch(text, format, &extra, now)
    })
    .await;
    match parsed {
        Ok(Ok(decoded)) => append_and_answer(store, decoded, PATH, false).await,
        Ok(Err((status, message))) => text(PATH, status, message),
        Err(e) => text(
            PATH,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("parsing task failed: {e}"),
        ),
    }
}

fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("gzip: {e}")))?;
    if out.len() > max {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body exceeds the limit of {max} bytes"),
        ));
    }
    Ok(out)
}

/// Parses the exposition: samples and exemplars grouped by series, and its metadata.
fn to_batch(
    text: &str,
    format: Format,
    extra: &[(String, String)],
    now: i64,
) -> Result<Decoded, (StatusCode, String)> {
    let parsed = exposition::parse(text, format)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("parsing import: {e}")))?;
    let meta: Vec<(String, Metadata)> = parsed
        .metadata
        .iter()
        .filter(|m| m.kind != MetricType::Unknown || !m.help.is_empty() || !m.unit.is_empty())
        .map(|m| {
            (
                m.family.clone(),
                Metadata {
                    kind: m.kind.as_str().to_string(),
                    help: m.help.clone(),
                    unit: m.unit.clone(),
                },
            )
        })
        .collect();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut batch: Vec<SeriesSamples> = Vec::new();
    let mut exemplars: Vec<SeriesExemplars> = Vec::new();
    for s in parsed.samples {
        let mut labels = s.labels;
        for (n, v) in extra {
            labels = labels.with(n, v);
        }
        let sample = Sample {
            t: s.timestamp_ms.unwrap_or(now),
            v: s.value,
        };
        if let Some(e) = s.exemplar {
            exemplars.push(SeriesExemplars {
                labels: labels.clone(),
                exemplars: vec![Exemplar {
                    labels: e.labels,
                    value: e.value,
                    t: e.timestamp_ms.unwrap_or(sample.t),
                    has_ts: e.timestamp_ms.is_some(),
                }],
            });
        }
        match index.get(&labels) {
            Some(&i) => batch[i].samples.push(sample),
            None => {
                index.insert(labels.clone(), batch.len());
                batch.push(SeriesSamples {
                    labels,
                    samples: vec![sample],
                });
            }
        }
    }
    for s in &mut batch {
        s.samples.sort_by_key(|p| p.t);
    }
    Ok(Decoded {
        batch,
        exemplars,
        metadata: meta,
        ..Decoded::default()
    })
}

//! Router tests, in process through `tower::ServiceExt::oneshot`.

mod disk;
mod exemplars;
mod failures;
mod ingest;
mod limits;
mod query;
mod read;
mod throughput;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use prost::Message as _;
use serde_json::Value as Json;
use tower::ServiceExt as _;

use super::remote_proto::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use super::{ApiConfig, ApiState, router};
use crate::storage::MemTenants;

pub(super) fn state_with(config: ApiConfig) -> ApiState {
    ApiState::new(
        Arc::new(MemTenants::new()),
        config,
        UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
    )
}

pub(super) fn app() -> Router {
    router(state_with(ApiConfig {
        enable_admin_api: true,
        ..ApiConfig::default()
    }))
}

pub(super) struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a Prometheus error envelope and returns its message.
    fn error(&self, status: u16, error_type: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        let j = self.json();
        assert_eq!(j["status"], "error", "{}", self.body);
        assert_eq!(j["errorType"], error_type, "{}", self.body);
        assert!(j.get("data").is_none());
        j["error"].as_str().unwrap().to_string()
    }

    /// Asserts a success envelope and returns `data`.
    fn data(&self) -> Json {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "{}",
            self.body
        );
        let j = self.json();
        assert_eq!(j["status"], "success");
        j["data"].clone()
    }
}

pub(super) async fn call(app: &Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// Percent-encodes the characters a test writes literally but a URI may not hold.
pub(super) fn enc(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    for c in uri.chars() {
        match c {
            '"' | ' ' | '{' | '}' | '|' | '<' | '>' | '\\' | '^' | '`' => {
                out.push_str(&format!("%{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

pub(super) fn get(uri: &str) -> Request<Body> {
    Request::get(enc(uri)).body(Body::empty()).unwrap()
}

pub(super) fn get_as(tenant: &str, uri: &str) -> Request<Body> {
    Request::get(enc(uri))
        .header("X-Scope-OrgID", tenant)
        .body(Body::empty())
        .unwrap()
}

pub(super) fn post_form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub(super) fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string().into(),
                value: v.to_string().into(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|(t, v)| Sample {
                timestamp: *t,
                value: *v,
            })
            .collect(),
        exemplars: vec![],
        histograms: vec![],
    }
}

/// A remote_write 1.0 request as Prometheus sends it.
pub(super) fn remote_write(
    tenant: Option<&str>,
    timeseries: Vec<TimeSeries>,
    metadata: Vec<MetricMetadata>,
) -> Request<Body> {
    let body = WriteRequest {
        timeseries,
        metadata,
    }
    .encode_to_vec();
    let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    let mut r = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(t) = tenant {
        r = r.header("X-Scope-OrgID", t);
    }
    r.body(Body::from(body)).unwrap()
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Stores a few series for the default tenant and for tenant `other`.
pub(super) async fn seeded() -> Router {
    let app = app();
    let w = remote_write(
        None,
        vec![
            series(
                &[("__name__", "up"), ("job", "api"), ("instance", "a:9090")],
                &[(1_000, 1.0), (2_000, 1.0)],
            ),
            series(
                &[("__name__", "up"), ("job", "db"), ("instance", "b:9090")],
                &[(1_000, 0.0)],
            ),
            series(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", "200"),
                ],
                &[(1_000, 10.0), (5_000, 20.0)],
            ),
        ],
        vec![MetricMetadata {
            r#type: 1,
            metric_family_name: "http_requests_total".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    );
    assert_eq!(call(&app, w).await.status, StatusCode::NO_CONTENT);
    let w = remote_write(
        Some("other"),
        vec![series(
            &[("__name__", "secret_metric"), ("job", "hidden")],
            &[(1_000, 7.0)],
        )],
        vec![],
    );
    assert_eq!(call(&app, w).await.status, StatusCode::NO_CONTENT);
    app
}

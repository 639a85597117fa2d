//! remote_write and import.

use std::io::Write as _;

use super::*;
use crate::api::remote_proto::{MetadataV2, RequestV2, SampleV2, TimeSeriesV2};

#[tokio::test]
async fn remote_write_stores_per_tenant_with_metadata() {
    let app = seeded().await;
    let d = call(&app, get("/api/v1/series?match[]=up")).await.data();
    assert_eq!(
        d,
        serde_json::json!([
            {"__name__":"up","instance":"a:9090","job":"api"},
            {"__name__":"up","instance":"b:9090","job":"db"},
        ])
    );
    // Another tenant sees only its own series.
    let d = call(
        &app,
        get_as("other", "/api/v1/series?match[]={job=~\".%2B\"}"),
    )
    .await
    .data();
    assert_eq!(
        d,
        serde_json::json!([{"__name__":"secret_metric","job":"hidden"}])
    );
    let d = call(&app, get("/api/v1/series?match[]=secret_metric"))
        .await
        .data();
    assert_eq!(d, serde_json::json!([]));
    let d = call(&app, get("/api/v1/metadata")).await.data();
    assert_eq!(
        d,
        serde_json::json!({"http_requests_total":[{"type":"counter","help":"Requests served.","unit":""}]})
    );
    assert_eq!(
        call(&app, get_as("other", "/api/v1/metadata")).await.data(),
        serde_json::json!({})
    );
}

#[tokio::test]
async fn remote_write_rejects_invalid_series_but_stores_the_rest() {
    let app = app();
    let w = remote_write(
        None,
        vec![
            series(&[("job", "no-name")], &[(1_000, 1.0)]),
            series(
                &[("__name__", "ok"), ("a", "1"), ("a", "2")],
                &[(1_000, 1.0)],
            ),
            series(&[("__name__", "good")], &[(1_000, 1.0)]),
            TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: bytes::Bytes::from_static(b"bad\xff"),
                }],
                ..series(&[], &[(1_000, 1.0)])
            },
        ],
        vec![],
    );
    let a = call(&app, w).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("no metric name"), "{}", a.body);
    assert!(a.body.contains("no-name"), "{}", a.body);
    let d = call(&app, get("/api/v1/labels")).await.data();
    assert_eq!(d, serde_json::json!(["__name__"]));
    let d = call(&app, get("/api/v1/label/__name__/values"))
        .await
        .data();
    assert_eq!(d, serde_json::json!(["good"]));
}

#[tokio::test]
async fn remote_write_protocol_errors() {
    let app = app();
    let garbage = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .body(Body::from(vec![0xffu8; 16]))
        .unwrap();
    let a = call(&app, garbage).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.starts_with("snappy"), "{}", a.body);

    // Valid snappy around invalid protobuf.
    let body = snap::raw::Encoder::new()
        .compress_vec(&[0x0a, 0xff, 0xff, 0xff])
        .unwrap();
    let a = call(
        &app,
        Request::post("/api/v1/write")
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("protobuf"), "{}", a.body);

    let a = call(
        &app,
        Request::post("/api/v1/write")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = call(
        &app,
        Request::post("/api/v1/write")
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::CONTENT_ENCODING, "zstd")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = call(
        &app,
        Request::post("/api/v1/write")
            .header(header::CONTENT_TYPE, "application/x-protobuf;proto=foo.Bar")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = call(
        &app,
        Request::post("/api/v1/write")
            .header("X-Scope-OrgID", "bad tenant/../")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn remote_write_body_limit() {
    let app = router(state_with(ApiConfig {
        max_write_body: bytesize::ByteSize::kib(1),
        ..ApiConfig::default()
    }));
    // 4 KiB of zeros compresses to a few bytes but decompresses over the limit.
    let body = snap::raw::Encoder::new()
        .compress_vec(&[0u8; 4096])
        .unwrap();
    let a = call(
        &app,
        Request::post("/api/v1/write")
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
}

#[tokio::test]
async fn remote_write_v2_with_symbols_and_metadata() {
    let app = app();
    let req = RequestV2 {
        symbols: [
            "",
            "__name__",
            "rpc_seconds_count",
            "job",
            "svc",
            "RPC latency.",
            "seconds",
        ]
        .map(|s: &'static str| bytes::Bytes::from_static(s.as_bytes()))
        .to_vec(),
        timeseries: vec![
            TimeSeriesV2 {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    SampleV2 {
                        value: 3.0,
                        timestamp: 1_000,
                        start_timestamp: 0,
                    },
                    SampleV2 {
                        value: 4.0,
                        timestamp: 2_000,
                        start_timestamp: 0,
                    },
                ],
                histograms: vec![],
                exemplars: vec![],
                metadata: Some(MetadataV2 {
                    r#type: 3,
                    help_ref: 5,
                    unit_ref: 6,
                }),
            },
            TimeSeriesV2 {
                labels_refs: vec![1, 99],
                samples: vec![SampleV2::default()],
                ..TimeSeriesV2::default()
            },
        ],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let a = call(
        &app,
        Request::post("/api/v1/write")
            .header(
                header::CONTENT_TYPE,
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            )
            .header(header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "2.0.0")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    // The out-of-table series is rejected (400), the good one stored.
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("symbols table"), "{}", a.body);
    assert_eq!(a.headers["X-Prometheus-Remote-Write-Samples-Written"], "2");
    let d = call(&app, get("/api/v1/series?match[]=rpc_seconds_count"))
        .await
        .data();
    assert_eq!(
        d,
        serde_json::json!([{"__name__":"rpc_seconds_count","job":"svc"}])
    );
    let d = call(&app, get("/api/v1/metadata?metric=rpc_seconds"))
        .await
        .data();
    assert_eq!(
        d,
        serde_json::json!({"rpc_seconds":[{"type":"histogram","help":"RPC latency.","unit":"seconds"}]})
    );
}

const EXPOSITION: &str = "# HELP jobs_total Jobs run.\n\
# TYPE jobs_total counter\n\
jobs_total{queue=\"a\"} 3 1000\n\
jobs_total{queue=\"b\"} 4\n\
# TYPE temp gauge\n\
temp 21.5 2000\n";

#[tokio::test]
async fn import_text_with_metadata_extra_labels_and_default_time() {
    let app = app();
    let before = now_ms();
    let a = call(
        &app,
        Request::post("/api/v1/import/prometheus?extra_label=env=prod&extra_label=queue=z")
            .header("X-Scope-OrgID", "t1")
            .body(Body::from(EXPOSITION))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let d = call(&app, get_as("t1", "/api/v1/series?match[]={env=\"prod\"}"))
        .await
        .data();
    // extra_label overrides the body's `queue`, so both jobs_total lines are one series.
    assert_eq!(
        d,
        serde_json::json!([
            {"__name__":"jobs_total","env":"prod","queue":"z"},
            {"__name__":"temp","env":"prod","queue":"z"},
        ])
    );
    // The line without a timestamp got the arrival time.
    let d = call(
        &app,
        get_as(
            "t1",
            &format!("/api/v1/series?match[]=jobs_total&start={}", before / 1000),
        ),
    )
    .await
    .data();
    assert_eq!(d.as_array().unwrap().len(), 1);
    let d = call(&app, get_as("t1", "/api/v1/metadata")).await.data();
    assert_eq!(
        d,
        serde_json::json!({
            "jobs_total":[{"type":"counter","help":"Jobs run.","unit":""}],
            "temp":[{"type":"gauge","help":"","unit":""}],
        })
    );
}

#[tokio::test]
async fn import_gzip_and_errors() {
    let app = app();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(EXPOSITION.as_bytes()).unwrap();
    let a = call(
        &app,
        Request::post("/api/v1/import/prometheus")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(gz.finish().unwrap()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let d = call(&app, get("/api/v1/label/queue/values")).await.data();
    assert_eq!(d, serde_json::json!(["a", "b"]));

    let a = call(
        &app,
        Request::post("/api/v1/import/prometheus")
            .body(Body::from("ok 1\nbroken{a=\"b\" 1\n"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("line 2, column 14"), "{}", a.body);
    let a = call(
        &app,
        Request::post("/api/v1/import/prometheus?extra_label=novalue")
            .body(Body::from("x 1\n"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(
        &app,
        Request::post("/api/v1/import/prometheus")
            .header(header::CONTENT_ENCODING, "br")
            .body(Body::from("x 1\n"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn import_openmetrics_timestamps_are_seconds() {
    let app = app();
    let a = call(
        &app,
        Request::post("/api/v1/import/prometheus")
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0",
            )
            .body(Body::from("# TYPE om gauge\nom 1 1.5\n# EOF\n"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let d = call(&app, get("/api/v1/series?match[]=om&start=1.5&end=1.5"))
        .await
        .data();
    assert_eq!(d.as_array().unwrap().len(), 1);
    let d = call(&app, get("/api/v1/series?match[]=om&start=1.501"))
        .await
        .data();
    assert_eq!(d.as_array().unwrap().len(), 0);
}

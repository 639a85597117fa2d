//! Exemplars through the API: remote_write 1.0 and 2.0, imports, query_exemplars' shape and
//! errors, and a restart of the persistent store (exemplars and metadata come back).

use super::*;
use crate::api::remote_proto::{
    Exemplar, ExemplarV2, MetadataV2, RequestV2, SampleV2, TimeSeriesV2,
};
use crate::{DiskTenants, TsdbConfig};

fn exemplar(labels: &[(&str, &str)], value: f64, timestamp: i64) -> Exemplar {
    Exemplar {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string().into(),
                value: v.to_string().into(),
            })
            .collect(),
        value,
        timestamp,
    }
}

fn with_exemplars(mut ts: TimeSeries, ex: Vec<Exemplar>) -> TimeSeries {
    ts.exemplars = ex;
    ts
}

/// The series and exemplars of the golden answer, as remote_write 1.0 carries them.
fn golden_write(tenant: Option<&str>) -> Request<Body> {
    let bucket = [
        ("__name__", "http_request_duration_seconds_bucket"),
        ("job", "api"),
        ("le", "0.5"),
    ];
    remote_write(
        tenant,
        vec![
            with_exemplars(
                series(&bucket, &[(1_600_096_945_479, 3.0)]),
                vec![
                    exemplar(&[("trace_id", "EpTxMJ40fUus7aGY")], 0.25, 1_600_096_945_479),
                    // An empty label value is dropped, as Prometheus drops it.
                    exemplar(
                        &[
                            ("trace_id", "Olp9XHlq763ccsfa"),
                            ("span_id", "1a"),
                            ("x", ""),
                        ],
                        0.5,
                        1_600_096_955_000,
                    ),
                ],
            ),
            with_exemplars(
                series(
                    &[("__name__", "http_requests_total"), ("job", "api")],
                    &[(1_600_096_946_050, 10.0)],
                ),
                vec![exemplar(
                    &[("trace_id", "hCtjygkIHwAN9vs4")],
                    f64::INFINITY,
                    1_600_096_946_050,
                )],
            ),
            // Exemplars of other series are not selected by the query below.
            with_exemplars(
                series(
                    &[("__name__", "other"), ("job", "api")],
                    &[(1_600_096_946_000, 1.0)],
                ),
                vec![exemplar(&[("trace_id", "zzz")], 1.0, 1_600_096_946_000)],
            ),
        ],
        vec![MetricMetadata {
            r#type: 1,
            metric_family_name: "http_requests_total".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    )
}

const GOLDEN_QUERY: &str = "/api/v1/query_exemplars?query=sum(rate(http_request_duration_seconds_bucket[5m])) / rate(http_requests_total{job=\"api\"}[5m])&start=1600096900&end=1600097000";

#[tokio::test]
async fn remote_write_exemplars_answer_the_golden_json() {
    let app = app();
    let a = call(&app, golden_write(None)).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = call(&app, get(GOLDEN_QUERY)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.body.trim(),
        include_str!("golden/query_exemplars.json").trim()
    );
    // POST with a form body answers the same.
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "query",
            "http_request_duration_seconds_bucket or http_requests_total",
        )
        .append_pair("start", "1600096900")
        .append_pair("end", "1600097000")
        .finish();
    let d = call(&app, post_form("/api/v1/query_exemplars", &body))
        .await
        .data();
    assert_eq!(d.as_array().unwrap().len(), 2);
    // The time range cuts exemplars; an empty result is [].
    let d = call(
        &app,
        get("/api/v1/query_exemplars?query=http_request_duration_seconds_bucket&start=1600096950&end=1600096960"),
    )
    .await
    .data();
    assert_eq!(d[0]["exemplars"].as_array().unwrap().len(), 1);
    assert_eq!(d[0]["exemplars"][0]["timestamp"], 1_600_096_955.0);
    let d = call(
        &app,
        get("/api/v1/query_exemplars?query=http_requests_total&start=0&end=1"),
    )
    .await
    .data();
    assert_eq!(d, serde_json::json!([]));
    // Another tenant sees none of them.
    let d = call(
        &app,
        get_as("other", "/api/v1/query_exemplars?query=http_requests_total"),
    )
    .await
    .data();
    assert_eq!(d, serde_json::json!([]));
    // Errors in Prometheus's envelope.
    let m = call(&app, get("/api/v1/query_exemplars?query=up&start=x"))
        .await
        .error(400, "bad_data");
    assert!(m.starts_with("invalid parameter \"start\""), "{m}");
    call(&app, get("/api/v1/query_exemplars?query=rate(up[5m]"))
        .await
        .error(400, "bad_data");
}

#[tokio::test]
async fn remote_write_exemplar_rejections_follow_prometheus() {
    let app = app();
    let s = [("__name__", "c_total")];
    let w =
        |ex: Vec<Exemplar>| remote_write(None, vec![with_exemplars(series(&s, &[]), ex)], vec![]);
    let a = call(
        &app,
        w(vec![exemplar(&[("trace_id", "a")], 1.0, 10_000_000)]),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    // 1.0: out-of-order (beyond the 10 m window), duplicate and too long exemplars are dropped
    // without failing the request.
    let long = "x".repeat(200);
    let a = call(
        &app,
        w(vec![
            exemplar(&[("trace_id", "b")], 1.0, 10_000_000 - 700_000),
            exemplar(&[("trace_id", "a")], 1.0, 10_000_000),
            exemplar(&[("trace_id", &long)], 1.0, 10_000_001),
            exemplar(&[("trace_id", "c")], 2.0, 10_000_000 - 60_000),
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let d = call(&app, get("/api/v1/query_exemplars?query=c_total"))
        .await
        .data();
    let traces: Vec<&str> = d[0]["exemplars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["labels"]["trace_id"].as_str().unwrap())
        .collect();
    // The late one within the out-of-order window is stored in time order.
    assert_eq!(traces, ["c", "a"]);

    // 2.0: an out-of-order exemplar answers 400 (the rest is stored); headers count them.
    let req = RequestV2 {
        symbols: ["", "__name__", "c_total", "trace_id", "d", "e"]
            .iter()
            .map(|s| s.as_bytes().to_vec().into())
            .collect(),
        timeseries: vec![TimeSeriesV2 {
            labels_refs: vec![1, 2],
            samples: vec![SampleV2 {
                value: 1.0,
                timestamp: 10_000_010,
                start_timestamp: 0,
            }],
            histograms: vec![],
            exemplars: vec![
                ExemplarV2 {
                    labels_refs: vec![3, 4],
                    value: 3.0,
                    timestamp: 10_000_010,
                },
                ExemplarV2 {
                    labels_refs: vec![3, 5],
                    value: 3.0,
                    timestamp: 1,
                },
            ],
            metadata: Some(MetadataV2 {
                r#type: 1,
                help_ref: 3,
                unit_ref: 0,
            }),
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let r = Request::post("/api/v1/write")
        .header(
            header::CONTENT_TYPE,
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .header(header::CONTENT_ENCODING, "snappy")
        .body(Body::from(body))
        .unwrap();
    let a = call(&app, r).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(
        a.body
            .contains("out of order exemplar for series c_total{}"),
        "{}",
        a.body
    );
    assert_eq!(
        a.headers["X-Prometheus-Remote-Write-Exemplars-Written"],
        "1"
    );
    assert_eq!(a.headers["X-Prometheus-Remote-Write-Samples-Written"], "1");
    let d = call(&app, get("/api/v1/query_exemplars?query=c_total"))
        .await
        .data();
    assert_eq!(d[0]["exemplars"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn openmetrics_import_stores_exemplars() {
    let app = app();
    let body = "# TYPE rpc_duration_seconds histogram\n\
                rpc_duration_seconds_bucket{le=\"1\"} 4 1600000000 # {trace_id=\"t1\"} 0.7 1599999999.5\n\
                rpc_duration_seconds_bucket{le=\"+Inf\"} 5 1600000000 # {trace_id=\"t2\"} 3\n\
                # EOF\n";
    let r = Request::post("/api/v1/import/prometheus?extra_label=env=prod")
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0",
        )
        .body(Body::from(body))
        .unwrap();
    let a = call(&app, r).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let d = call(
        &app,
        get("/api/v1/query_exemplars?query=rpc_duration_seconds_bucket{env=\"prod\"}"),
    )
    .await
    .data();
    assert_eq!(
        d,
        serde_json::json!([
            {"seriesLabels":{"__name__":"rpc_duration_seconds_bucket","env":"prod","le":"+Inf"},
             "exemplars":[{"labels":{"trace_id":"t2"},"value":"3","timestamp":1600000000}]},
            {"seriesLabels":{"__name__":"rpc_duration_seconds_bucket","env":"prod","le":"1"},
             "exemplars":[{"labels":{"trace_id":"t1"},"value":"0.7","timestamp":1599999999.5}]},
        ])
    );
}

fn disk_app(dir: &std::path::Path) -> (Router, Arc<DiskTenants>) {
    let tenants = Arc::new(DiskTenants::open(dir, TsdbConfig::default()).unwrap());
    let app = router(ApiState::new(
        tenants.clone(),
        ApiConfig::default(),
        UNIX_EPOCH,
    ));
    (app, tenants)
}

#[tokio::test]
async fn exemplars_and_metadata_survive_a_restart_without_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (app, _tenants) = disk_app(dir.path());
        let a = call(&app, golden_write(Some("team-a"))).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
        // Dropped without `close`: no checkpoint, no flush.
    }
    let (app, tenants) = disk_app(dir.path());
    let a = call(&app, {
        let mut r = get(GOLDEN_QUERY);
        r.headers_mut()
            .insert("X-Scope-OrgID", "team-a".parse().unwrap());
        r
    })
    .await;
    assert_eq!(
        a.body.trim(),
        include_str!("golden/query_exemplars.json").trim()
    );
    let d = call(&app, get_as("team-a", "/api/v1/metadata"))
        .await
        .data();
    assert_eq!(
        d,
        serde_json::json!({"http_requests_total":[{"type":"counter","help":"Requests served.","unit":""}]})
    );
    // The default tenant has none of it.
    assert_eq!(
        call(&app, get("/api/v1/metadata")).await.data(),
        serde_json::json!({})
    );
    tenants.close().unwrap();
}

//! The read endpoints: parameters, envelopes, errors.

use super::*;

#[tokio::test]
async fn series_labels_and_values_with_limits() {
    let app = seeded().await;
    let a = call(&app, get("/api/v1/series?match[]=up&limit=1")).await;
    let j = a.json();
    assert_eq!(j["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        j["warnings"],
        serde_json::json!(["results truncated due to limit"])
    );

    // Several match[] are a union; POST body and URL parameters are merged.
    let a = call(
        &app,
        post_form(
            "/api/v1/series?match[]=http_requests_total",
            "match%5B%5D=up%7Bjob%3D%22db%22%7D",
        ),
    )
    .await;
    assert_eq!(
        a.data(),
        serde_json::json!([
            {"__name__":"http_requests_total","code":"200","job":"api"},
            {"__name__":"up","instance":"b:9090","job":"db"},
        ])
    );
    let d = call(&app, get("/api/v1/labels")).await.data();
    assert_eq!(
        d,
        serde_json::json!(["__name__", "code", "instance", "job"])
    );
    let a = call(&app, get("/api/v1/labels?match[]=up&limit=2")).await;
    assert_eq!(
        a.json()["data"],
        serde_json::json!(["__name__", "instance"])
    );
    assert_eq!(a.json()["warnings"][0], "results truncated due to limit");
    let d = call(&app, get("/api/v1/label/job/values")).await.data();
    assert_eq!(d, serde_json::json!(["api", "db"]));
    let d = call(
        &app,
        get("/api/v1/label/job/values?match[]=http_requests_total"),
    )
    .await
    .data();
    assert_eq!(d, serde_json::json!(["api"]));
    let d = call(&app, get("/api/v1/label/__name__/values?start=4&end=10"))
        .await
        .data();
    assert_eq!(d, serde_json::json!(["http_requests_total"]));
    let d = call(&app, get("/api/v1/label/U__job/values")).await.data();
    assert_eq!(d, serde_json::json!(["api", "db"]));
    let a = call(&app, get("/api/v1/label/job/values?limit=1")).await;
    assert_eq!(a.json()["warnings"][0], "results truncated due to limit");
}

#[tokio::test]
async fn read_errors_are_bad_data() {
    let app = seeded().await;
    let m = call(&app, get("/api/v1/series"))
        .await
        .error(400, "bad_data");
    assert_eq!(m, "no match[] parameter provided");
    let m = call(&app, get("/api/v1/series?match[]={job=~\".*\"}"))
        .await
        .error(400, "bad_data");
    assert_eq!(
        m,
        "invalid parameter \"match[]\": vector selector must contain at least one non-empty matcher"
    );
    let m = call(&app, get("/api/v1/series?match[]=up&start=yesterday"))
        .await
        .error(400, "bad_data");
    assert_eq!(
        m,
        "invalid parameter \"start\": invalid time value for 'start': cannot parse \"yesterday\" to a valid timestamp"
    );
    let m = call(&app, get("/api/v1/labels?limit=-1"))
        .await
        .error(400, "bad_data");
    assert_eq!(m, "invalid parameter \"limit\": limit must be non-negative");
    call(&app, get("/api/v1/labels?match[]=up{"))
        .await
        .error(400, "bad_data");
    call(&app, get("/api/v1/label/U__a_zz_/values"))
        .await
        .error(400, "bad_data");
    let m = call(&app, get("/api/v1/metadata?limit=x"))
        .await
        .error(400, "bad_data");
    assert_eq!(m, "limit must be a number");
    let m = call(&app, get_as("a/b", "/api/v1/labels"))
        .await
        .error(400, "bad_data");
    assert!(m.contains("X-Scope-OrgID"), "{m}");
}

#[tokio::test]
async fn query_parameter_errors() {
    let app = seeded().await;
    let cases = [
        (
            "/api/v1/query_range?query=up&start=10&end=5&step=1",
            "invalid parameter \"end\": end timestamp must not be before start time",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=5&step=0",
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=11001&step=1",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ),
        (
            "/api/v1/query_range?query=up&start=x&end=5&step=1",
            "invalid parameter \"start\": cannot parse \"x\" to a valid timestamp",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=5&step=1q",
            "invalid parameter \"step\": cannot parse \"1q\" to a valid duration",
        ),
        (
            "/api/v1/query?query=up&time=nope",
            "invalid parameter \"time\": invalid time value for 'time': cannot parse \"nope\" to a valid timestamp",
        ),
        (
            "/api/v1/query?query=up&timeout=soon",
            "invalid parameter \"timeout\": cannot parse \"soon\" to a valid duration",
        ),
        (
            "/api/v1/query?query=up&lookback_delta=long",
            "error parsing lookback delta duration: cannot parse \"long\" to a valid duration",
        ),
        (
            "/api/v1/query?query=up&limit=x",
            "invalid parameter \"limit\": strconv.Atoi: parsing \"x\": invalid syntax",
        ),
    ];
    for (uri, want) in cases {
        let m = call(&app, get(uri)).await.error(400, "bad_data");
        assert_eq!(m, want, "{uri}");
    }
    // Exactly 11,000 points is allowed (the engine decides the rest).
    let a = call(
        &app,
        get("/api/v1/query_range?query=up&start=0&end=11000&step=1"),
    )
    .await;
    assert_ne!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
}

#[tokio::test]
async fn format_query_and_exemplars() {
    let app = app();
    let d = call(
        &app,
        post_form("/api/v1/format_query", "query=sum(rate(x%5B5m%5D))by(job)"),
    )
    .await
    .data();
    assert_eq!(d, "sum by (job) (rate(x[5m]))");
    let m = call(&app, get("/api/v1/format_query?query=sum("))
        .await
        .error(400, "bad_data");
    assert!(m.starts_with("invalid parameter \"query\": "), "{m}");

    // Grafana's probe: milliseconds for start/end, and it must succeed.
    let now = now_ms();
    let d = call(
        &app,
        get(&format!(
            "/api/v1/query_exemplars?query=test&start={}&end={now}",
            now - 1_800_000
        )),
    )
    .await
    .data();
    assert_eq!(d, serde_json::json!([]));
    let a = call(&app, get("/api/v1/query_exemplars?query=1%2B1")).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let m = call(&app, get("/api/v1/query_exemplars?query=up&start=5&end=1"))
        .await
        .error(400, "bad_data");
    assert_eq!(m, "end timestamp must not be before start timestamp");
    call(&app, get("/api/v1/query_exemplars?query=up{"))
        .await
        .error(400, "bad_data");
}

#[tokio::test]
async fn status_endpoints() {
    let app = seeded().await;
    let d = call(&app, get("/api/v1/status/buildinfo")).await.data();
    assert_eq!(d["version"], crate::api::PROMETHEUS_COMPAT_VERSION);
    assert!(
        d.get("features").is_none(),
        "Grafana must see vanilla Prometheus"
    );
    let d = call(&app, get("/api/v1/status/runtimeinfo")).await.data();
    assert_eq!(d["startTime"], "2023-11-14T22:13:20Z");
    assert_eq!(d["reloadConfigSuccess"], true);

    let d = call(&app, get("/api/v1/status/tsdb?limit=1")).await.data();
    assert_eq!(d["headStats"]["numSeries"], 3);
    assert_eq!(d["headStats"]["minTime"], 1_000);
    assert_eq!(d["headStats"]["maxTime"], 5_000);
    assert_eq!(
        d["seriesCountByMetricName"],
        serde_json::json!([{"name":"up","value":2}])
    );
    assert_eq!(d["labelValueCountByLabelName"].as_array().unwrap().len(), 1);
    let d = call(&app, get_as("nobody", "/api/v1/status/tsdb"))
        .await
        .data();
    assert_eq!(d["headStats"]["numSeries"], 0);
    assert_eq!(d["headStats"]["minTime"], i64::MAX);
    let m = call(&app, get("/api/v1/status/tsdb?limit=0"))
        .await
        .error(400, "bad_data");
    assert_eq!(m, "limit must be a positive number");
    let m = call(&app, get("/api/v1/status/tsdb?limit=10001"))
        .await
        .error(400, "bad_data");
    assert_eq!(m, "limit must not exceed 10000");
}

#[tokio::test]
async fn delete_series_needs_the_admin_api() {
    let off = router(state_with(ApiConfig::default()));
    let m = call(
        &off,
        post_form("/api/v1/admin/tsdb/delete_series", "match%5B%5D=up"),
    )
    .await
    .error(500, "unavailable");
    assert_eq!(m, "admin APIs disabled");

    let app = seeded().await;
    call(&app, post_form("/api/v1/admin/tsdb/delete_series", ""))
        .await
        .error(400, "bad_data");
    call(
        &app,
        post_form("/api/v1/admin/tsdb/delete_series", "match%5B%5D=up%7B"),
    )
    .await
    .error(400, "bad_data");
    // Deleting in one tenant leaves the other alone.
    let a = call(
        &app,
        Request::put(enc(
            "/api/v1/admin/tsdb/delete_series?match[]={job=~\".%2B\"}",
        ))
        .header("X-Scope-OrgID", "other")
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let d = call(&app, get_as("other", "/api/v1/labels")).await.data();
    assert_eq!(d, serde_json::json!([]));
    // A time range deletes only its samples.
    let a = call(
        &app,
        post_form(
            "/api/v1/admin/tsdb/delete_series",
            "match%5B%5D=up&start=0&end=1.5",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let d = call(&app, get("/api/v1/series?match[]=up")).await.data();
    assert_eq!(
        d,
        serde_json::json!([{"__name__":"up","instance":"a:9090","job":"api"}])
    );
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let app = app();
    assert_eq!(
        call(&app, get("/api/v1/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, get("/api/v1/write")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn large_json_answers_are_gzipped_when_accepted() {
    use std::io::Read as _;
    let app = app();
    let many: Vec<TimeSeries> = (0..200)
        .map(|i| {
            series(
                &[("__name__", "m"), ("instance", &format!("host-{i:04}"))],
                &[(1_000, 1.0)],
            )
        })
        .collect();
    assert_eq!(
        call(&app, remote_write(None, many, vec![])).await.status,
        StatusCode::NO_CONTENT
    );
    let plain = call(&app, get("/api/v1/label/instance/values")).await;
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
    let resp = app
        .clone()
        .oneshot(
            Request::get("/api/v1/label/instance/values")
                .header(header::ACCEPT_ENCODING, "deflate, gzip;q=0.8")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    let gz = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(gz.len() < plain.body.len() / 2);
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain.body);
}

//! `/api/v1/query` and `/api/v1/query_range` against the PromQL engine.

use super::*;

#[tokio::test]
async fn grafana_health_check_and_scalar_string_results() {
    let app = app();
    // Grafana's data source check: `1+1` at time=4.
    let d = call(&app, post_form("/api/v1/query", "query=1%2B1&time=4"))
        .await
        .data();
    assert_eq!(
        d,
        serde_json::json!({"resultType":"scalar","result":[4,"2"]})
    );
    let a = call(&app, get("/api/v1/query?query=\"hi\"&time=1.5")).await;
    assert_eq!(
        a.body,
        r#"{"status":"success","data":{"resultType":"string","result":[1.500,"hi"]}}"#
    );
}

#[tokio::test]
async fn instant_and_range_queries_render_like_prometheus() {
    let app = seeded().await;
    let d = call(&app, get("/api/v1/query?query=up&time=2"))
        .await
        .data();
    let mut r = d["result"].as_array().unwrap().clone();
    r.sort_by_key(|s| s["metric"]["job"].as_str().unwrap().to_string());
    assert_eq!(d["resultType"], "vector");
    assert_eq!(
        serde_json::Value::Array(r),
        serde_json::json!([
            {"metric":{"__name__":"up","instance":"a:9090","job":"api"},"value":[2,"1"]},
            {"metric":{"__name__":"up","instance":"b:9090","job":"db"},"value":[2,"0"]},
        ])
    );
    let d = call(
        &app,
        get("/api/v1/query_range?query=up&start=1&end=2&step=0.5"),
    )
    .await
    .data();
    assert_eq!(
        d,
        serde_json::json!({"resultType":"matrix","result":[
            {"metric":{"__name__":"up","instance":"a:9090","job":"api"},
             "values":[[1,"1"],[1.5,"1"],[2,"1"]]},
            {"metric":{"__name__":"up","instance":"b:9090","job":"db"},
             "values":[[1,"0"],[1.5,"0"],[2,"0"]]},
        ]})
    );
    // Body parameters win over URL parameters (Go's FormValue), RFC3339 works.
    let d = call(
        &app,
        post_form(
            "/api/v1/query?query=nothing&time=1970-01-01T00:00:05Z",
            "query=sum(http_requests_total)",
        ),
    )
    .await
    .data();
    assert_eq!(d["result"][0]["value"], serde_json::json!([5, "20"]));
    // limit truncates with Prometheus's warning.
    let a = call(&app, get("/api/v1/query?query=up&time=2&limit=1")).await;
    let j = a.json();
    assert_eq!(j["data"]["result"].as_array().unwrap().len(), 1);
    assert_eq!(j["warnings"][0], "results truncated due to limit");
}

#[tokio::test]
async fn tenants_do_not_see_each_other_in_queries() {
    let app = seeded().await;
    let d = call(&app, get("/api/v1/query?query=secret_metric&time=1"))
        .await
        .data();
    assert_eq!(d["result"], serde_json::json!([]));
    let d = call(
        &app,
        get_as("other", "/api/v1/query?query=secret_metric&time=1"),
    )
    .await
    .data();
    assert_eq!(d["result"][0]["value"], serde_json::json!([1, "7"]));
    let d = call(
        &app,
        get_as("other", "/api/v1/query?query=count(up)&time=1"),
    )
    .await
    .data();
    assert_eq!(d["result"], serde_json::json!([]));
}

#[tokio::test]
async fn query_errors_have_prometheus_types_and_statuses() {
    let app = seeded().await;
    let m = call(&app, get("/api/v1/query?query=sum(&time=1"))
        .await
        .error(400, "bad_data");
    assert!(m.starts_with("invalid parameter \"query\": "), "{m}");
    // Two series made identical is an execution error.
    let m = call(
        &app,
        get(
            "/api/v1/query?query=label_replace(label_replace(up,\"job\",\"x\",\"job\",\".*\"),\"instance\",\"x\",\"instance\",\".*\")&time=1",
        ),
    )
    .await
    .error(422, "execution");
    assert_eq!(m, "vector cannot contain metrics with the same labelset");
    // A zero timeout has passed before evaluation ends.
    let m = call(&app, get("/api/v1/query?query=up&time=1&timeout=0"))
        .await
        .error(503, "timeout");
    assert!(m.starts_with("query timed out in "), "{m}");
}

#[tokio::test]
async fn the_sample_limit_fails_one_query_only() {
    let app = router(state_with(ApiConfig {
        max_samples: 2,
        ..ApiConfig::default()
    }));
    let w = remote_write(
        None,
        vec![series(
            &[("__name__", "m")],
            &[(1_000, 1.0), (2_000, 2.0), (3_000, 3.0), (4_000, 4.0)],
        )],
        vec![],
    );
    assert_eq!(call(&app, w).await.status, StatusCode::NO_CONTENT);
    let m = call(&app, get("/api/v1/query?query=m[10s]&time=4"))
        .await
        .error(422, "execution");
    assert_eq!(
        m,
        "query processing would load too many samples into memory in query execution"
    );
    // The next, smaller query is unaffected.
    let d = call(&app, get("/api/v1/query?query=m&time=4")).await.data();
    assert_eq!(d["result"][0]["value"], serde_json::json!([4, "4"]));
}

#[tokio::test]
async fn experimental_syntax_follows_the_feature_flag() {
    // Off (the default): Prometheus's parse error, as bad_data.
    let app = seeded().await;
    let m = call(
        &app,
        get("/api/v1/query_range?query=count_over_time(up[step()])&start=1&end=2&step=1"),
    )
    .await
    .error(400, "bad_data");
    assert_eq!(
        m,
        "invalid parameter \"query\": 1:20: parse error: experimental duration expression is not enabled"
    );
    // On: `step()` is the query's step, `smoothed` interpolates.
    let app = router(state_with(ApiConfig {
        experimental_functions: true,
        ..ApiConfig::default()
    }));
    let w = remote_write(
        None,
        vec![series(
            &[("__name__", "m")],
            &[(0, 0.0), (1_000, 1.0), (2_000, 2.0), (3_000, 3.0)],
        )],
        vec![],
    );
    assert_eq!(call(&app, w).await.status, StatusCode::NO_CONTENT);
    let d = call(
        &app,
        get("/api/v1/query_range?query=count_over_time(m[step()%2Bstep()])&start=2&end=3&step=1"),
    )
    .await
    .data();
    assert_eq!(
        d["result"][0]["values"],
        serde_json::json!([[2, "2"], [3, "2"]])
    );
    let d = call(&app, get("/api/v1/query?query=m%20smoothed&time=1.25"))
        .await
        .data();
    assert_eq!(d["result"][0]["value"], serde_json::json!([1.25, "1.25"]));
}

//! The API over the persistent store: remote_write, queries and restart.

use super::*;
use crate::{DiskTenants, TsdbConfig};

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
async fn remote_write_then_query_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let t0 = now - 60_000;
    {
        let (app, tenants) = disk_app(dir.path());
        let w = remote_write(
            Some("team-a"),
            vec![series(
                &[("__name__", "cpu_seconds_total"), ("pod", "p1")],
                &[(t0, 1.0), (t0 + 15_000, 2.0), (t0 + 30_000, 4.0)],
            )],
            vec![],
        );
        let a = call(&app, w).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
        // A duplicate timestamp with another value is refused for good (400) and named.
        let w = remote_write(
            Some("team-a"),
            vec![series(
                &[("__name__", "cpu_seconds_total"), ("pod", "p1")],
                &[(t0 + 15_000, 9.0), (t0 + 45_000, 5.0)],
            )],
            vec![],
        );
        let a = call(&app, w).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert!(a.body.contains("cpu_seconds_total"), "{}", a.body);
        tenants.close().unwrap();
    }
    let (app, tenants) = disk_app(dir.path());
    let uri = format!(
        "/api/v1/query_range?query=cpu_seconds_total&start={}&end={}&step=15",
        t0 as f64 / 1000.0,
        (t0 + 45_000) as f64 / 1000.0
    );
    let d = call(&app, get_as("team-a", &uri)).await.data();
    let values: Vec<&str> = d["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap())
        .collect();
    // The accepted sample of the half-rejected request is there, the duplicate is not.
    assert_eq!(values, ["1", "2", "4", "5"]);
    let d = call(&app, get(&uri)).await.data();
    assert_eq!(d["result"], serde_json::json!([]));
    let d = call(&app, get_as("team-a", "/api/v1/status/tsdb"))
        .await
        .data();
    assert_eq!(d["headStats"]["numSeries"], 1);
    tenants.close().unwrap();
}

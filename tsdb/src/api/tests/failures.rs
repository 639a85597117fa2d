//! A failing store: ingest answers 5xx (the sender retries), reads answer `internal`.

use std::sync::Arc;

use super::*;
use crate::labels::Labels;
use crate::storage::{
    Annotations, AppendReport, Appendable, ExemplarReport, Matcher, Metadata, Queryable,
    SeriesExemplars, SeriesSamples, StorageError, Store, StoreStats, Tenants,
};

#[derive(Debug)]
struct Broken;

fn io() -> StorageError {
    StorageError::Internal("disk on fire".into())
}

impl Queryable for Broken {
    fn select(&self, _: &[Matcher], _: i64, _: i64) -> Result<Vec<SeriesSamples>, StorageError> {
        Err(io())
    }

    fn series(&self, _: &[Matcher], _: i64, _: i64) -> Result<Vec<Labels>, StorageError> {
        Err(io())
    }
}

impl Appendable for Broken {
    fn append(&self, _: &[SeriesSamples]) -> Result<AppendReport, StorageError> {
        Err(io())
    }

    fn delete(&self, _: &[Matcher], _: i64, _: i64) -> Result<(), StorageError> {
        Err(io())
    }
}

impl Annotations for Broken {
    fn append_exemplars(&self, _: &[SeriesExemplars]) -> Result<ExemplarReport, StorageError> {
        Err(io())
    }

    fn select_exemplars(
        &self,
        _: &[Vec<Matcher>],
        _: i64,
        _: i64,
    ) -> Result<Vec<SeriesExemplars>, StorageError> {
        Err(io())
    }

    fn record_metadata(&self, _: Vec<(String, Metadata)>) -> Result<(), StorageError> {
        Err(io())
    }

    fn metadata(
        &self,
        _: Option<&str>,
        _: i64,
        _: i64,
    ) -> Result<std::collections::BTreeMap<String, Vec<Metadata>>, StorageError> {
        Err(io())
    }
}

impl Store for Broken {
    fn stats(&self, _: usize) -> Result<StoreStats, StorageError> {
        Err(io())
    }
}

#[derive(Debug)]
struct BrokenTenants;

impl Tenants for BrokenTenants {
    fn tenant(&self, _: &str) -> Result<Arc<dyn Store>, StorageError> {
        Ok(Arc::new(Broken))
    }
}

fn broken_app() -> Router {
    router(ApiState::new(
        Arc::new(BrokenTenants),
        ApiConfig {
            enable_admin_api: true,
            ..ApiConfig::default()
        },
        UNIX_EPOCH,
    ))
}

#[tokio::test]
async fn storage_failures_are_retriable_on_ingest_and_internal_on_reads() {
    let app = broken_app();
    let w = remote_write(
        None,
        vec![series(&[("__name__", "x")], &[(1, 1.0)])],
        vec![],
    );
    let a = call(&app, w).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.body.contains("disk on fire"), "{}", a.body);
    let a = call(
        &app,
        Request::post("/api/v1/import/prometheus")
            .body(Body::from("x 1\n"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);

    for uri in [
        "/api/v1/query?query=x&time=1",
        "/api/v1/query_range?query=x&start=1&end=2&step=1",
        "/api/v1/series?match[]=x",
        "/api/v1/labels",
        "/api/v1/label/job/values",
        "/api/v1/status/tsdb",
    ] {
        let m = call(&app, get(uri)).await.error(500, "internal");
        assert!(m.contains("disk on fire"), "{uri}: {m}");
    }
    call(
        &app,
        post_form("/api/v1/admin/tsdb/delete_series", "match%5B%5D=x"),
    )
    .await
    .error(500, "internal");
}

fn counter(name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(n, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *n && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[tokio::test]
async fn ingest_and_query_metrics_are_counted() {
    let app = app();
    let before_ok = counter(
        "sextant_tsdb_samples_ingested_total",
        &[("path", "remote_write")],
    );
    let before_bad = counter(
        "sextant_tsdb_ingest_rejected_samples_total",
        &[("path", "remote_write"), ("reason", "invalid_labels")],
    );
    let before_q = counter(
        "sextant_tsdb_queries_total",
        &[("endpoint", "series"), ("outcome", "bad_data")],
    );
    let w = remote_write(
        None,
        vec![
            series(&[("__name__", "x")], &[(1, 1.0), (2, 2.0)]),
            series(&[("job", "nameless")], &[(1, 1.0)]),
        ],
        vec![],
    );
    assert_eq!(call(&app, w).await.status, StatusCode::BAD_REQUEST);
    call(&app, get("/api/v1/series"))
        .await
        .error(400, "bad_data");
    // Other tests run in parallel in this process: counters only grow.
    assert!(
        counter(
            "sextant_tsdb_samples_ingested_total",
            &[("path", "remote_write")]
        ) >= before_ok + 2.0
    );
    assert!(
        counter(
            "sextant_tsdb_ingest_rejected_samples_total",
            &[("path", "remote_write"), ("reason", "invalid_labels")],
        ) >= before_bad + 1.0
    );
    assert!(
        counter(
            "sextant_tsdb_queries_total",
            &[("endpoint", "series"), ("outcome", "bad_data")],
        ) >= before_q + 1.0
    );
}

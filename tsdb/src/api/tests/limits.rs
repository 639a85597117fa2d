//! Query limits: timeout, concurrency cap, cancellation. Driven through `query::run` with
//! evaluation closures, so they do not depend on the engine; no sleeps: closures wait on
//! channels or on the cancel flag.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::api::query::run;
use crate::api::response::{ApiError, ErrorType};
use crate::promql::{QueryError, QueryOptions, QueryOutput, Value};

fn scalar() -> QueryOutput {
    QueryOutput {
        value: Value::Scalar { t: 0, v: 1.0 },
        warnings: vec![],
        infos: vec![],
    }
}

/// Spins (yielding) until the query's cancel flag is set, then reports cancellation.
fn until_canceled(o: &QueryOptions) -> Result<QueryOutput, QueryError> {
    let cancel = o.cancel.clone().unwrap();
    while !cancel.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    Err(QueryError::Canceled("expression evaluation"))
}

fn one_slot() -> ApiState {
    state_with(ApiConfig {
        max_concurrency: 1,
        ..ApiConfig::default()
    })
}

#[tokio::test]
async fn options_carry_limits_deadline_and_cancel() {
    let state = state_with(ApiConfig {
        max_samples: 1234,
        ..ApiConfig::default()
    });
    let seen = run(&state, None, QueryOptions::default(), |o| {
        assert!(o.deadline.is_some() && o.cancel.is_some());
        Ok(scalar())
    })
    .await
    .unwrap();
    assert_eq!(seen, scalar());
}

#[tokio::test]
async fn a_query_past_its_timeout_is_a_503_and_is_canceled() {
    let state = state_with(ApiConfig::default());
    let (tx, rx) = mpsc::channel();
    let e = run(
        &state,
        Some(Duration::from_millis(1)),
        QueryOptions::default(),
        move |o| {
            let r = until_canceled(o);
            tx.send(()).unwrap();
            r
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        ApiError::new(
            ErrorType::Timeout,
            "query timed out in expression evaluation"
        )
    );
    assert_eq!(e.kind.status().as_u16(), 503);
    // The evaluation was told to stop.
    tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn queued_queries_wait_for_a_slot_and_time_out_in_the_queue() {
    let state = one_slot();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let track = |running: &Arc<AtomicUsize>, peak: &Arc<AtomicUsize>| {
        let n = running.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
    };
    let (r1, p1) = (running.clone(), peak.clone());
    let s1 = state.clone();
    let first = tokio::spawn(async move {
        run(&s1, None, QueryOptions::default(), move |_| {
            track(&r1, &p1);
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            r1.fetch_sub(1, Ordering::SeqCst);
            Ok(scalar())
        })
        .await
    });
    started_rx.await.unwrap();

    // The slot is taken: a query with a short timeout times out while queued.
    let e = run(
        &state,
        Some(Duration::from_millis(1)),
        QueryOptions::default(),
        |_| Ok(scalar()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorType::Timeout);
    assert_eq!(e.message, "query timed out in query queue");

    // A patient query waits, then runs once the first is done.
    let (r2, p2) = (running.clone(), peak.clone());
    let s2 = state.clone();
    let second = tokio::spawn(async move {
        run(&s2, None, QueryOptions::default(), move |_| {
            track(&r2, &p2);
            r2.fetch_sub(1, Ordering::SeqCst);
            Ok(scalar())
        })
        .await
    });
    release_tx.send(()).unwrap();
    assert!(first.await.unwrap().is_ok());
    assert!(second.await.unwrap().is_ok());
    assert_eq!(peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_going_away_cancels_its_query_and_frees_the_slot() {
    let state = one_slot();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let s = state.clone();
    let handler = tokio::spawn(async move {
        run(&s, None, QueryOptions::default(), move |o| {
            started_tx.send(()).unwrap();
            let r = until_canceled(o);
            done_tx.send(()).unwrap();
            r
        })
        .await
    });
    started_rx.await.unwrap();
    // Dropping the handler future is what axum does when the connection closes.
    handler.abort();
    assert!(handler.await.unwrap_err().is_cancelled());
    tokio::task::spawn_blocking(move || done_rx.recv().unwrap())
        .await
        .unwrap();
    // The slot is free again.
    assert!(
        run(&state, None, QueryOptions::default(), |_| Ok(scalar()))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn engine_errors_map_to_prometheus_types() {
    let state = state_with(ApiConfig::default());
    let cases: Vec<(QueryError, ErrorType)> = vec![
        (
            QueryError::BadData("parse error".into()),
            ErrorType::BadData,
        ),
        (
            QueryError::Execution("many-to-many".into()),
            ErrorType::Execution,
        ),
        (
            QueryError::TooManySamples("query execution"),
            ErrorType::Execution,
        ),
        (QueryError::Timeout("query execution"), ErrorType::Timeout),
        (QueryError::Canceled("query execution"), ErrorType::Canceled),
    ];
    for (err, want) in cases {
        let e = run(&state, None, QueryOptions::default(), move |_| Err(err))
            .await
            .unwrap_err();
        assert_eq!(e.kind, want, "{}", e.message);
    }
    // A panicking evaluation is an internal error, not a crash of the server.
    let e = run(&state, None, QueryOptions::default(), |_| panic!("boom"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorType::Internal);
}

//! `/api/v1/targets`: the scrape loop's targets, as Prometheus renders them.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::response::{ApiError, ApiSuccess};
use crate::scrape::Targets;

/// `state` (`active`, `dropped` or `any`, the default) and `scrapePool` filter the answer.
pub(super) async fn targets(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let all = state.targets();
    match filter(
        all,
        params.get("state").map(String::as_str),
        params.get("scrapePool"),
    ) {
        Ok(t) => match serde_json::to_string(&t) {
            Ok(json) => ApiSuccess::data(json).into_response(),
            Err(e) => ApiError::internal(format!("rendering targets: {e}")).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

fn filter(mut t: Targets, state: Option<&str>, pool: Option<&String>) -> Result<Targets, ApiError> {
    // Prometheus reads `state` case-insensitively and treats an unknown value as `any`.
    match state.map(str::to_ascii_lowercase).as_deref() {
        Some("active") => t.dropped_targets.clear(),
        Some("dropped") => t.active_targets.clear(),
        _ => {}
    }
    if let Some(pool) = pool {
        t.active_targets.retain(|a| &a.scrape_pool == pool);
        t.dropped_targets.retain(|d| &d.scrape_pool == pool);
    }
    Ok(t)
}

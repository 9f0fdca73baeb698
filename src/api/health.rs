//! Liveness and readiness probes.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::http::Problem;

/// A probe's answer.
#[derive(Serialize, ToSchema)]
pub struct Probe {
    /// `ok` (liveness) or `ready` (readiness).
    status: &'static str,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness: the process is up",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = Probe, example = json!({"status": "ok"})))
)]
pub async fn get_health() -> Json<Probe> {
    Json(Probe { status: "ok" })
}

/// `GET /readyz`: the store answers within a second.
#[utoipa::path(
    get,
    path = "/readyz",
    summary = "Readiness: the store answers",
    tag = "operations",
    responses(
        (status = 200, description = "The store answered within a second.", body = Probe,
            example = json!({"status": "ready"})),
        (status = 503, description = "The store is unavailable or did not answer within a second.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")),
            example = json!({"type": "/problems/unavailable", "title": "Service unavailable", "status": 503,
            "detail": "the store did not answer within 1 s"})),
    )
)]
pub async fn get_readiness(State(state): State<AppState>) -> Result<Json<Probe>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(1), state.reads.ping()).await {
        Ok(Ok(())) => Ok(Json(Probe { status: "ready" })),
        Ok(Err(error)) => Err(ApiError::from_read(error)),
        Err(_) => Err(ApiError::Unavailable {
            detail: "the store did not answer within 1 s".into(),
            retry_after_seconds: 5,
            ids: Vec::new(),
        }),
    }
}

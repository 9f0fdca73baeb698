//! Liveness and readiness probes.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};

/// `GET /healthz`: the process is up.
pub async fn get_health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers within a second.
pub async fn get_readiness(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(error)) => Err(ApiError::from_store(error)),
        Err(_) => Err(ApiError::Unavailable {
            detail: "the store did not answer within 1 s".into(),
            retry_after_seconds: 5,
            ids: Vec::new(),
        }),
    }
}

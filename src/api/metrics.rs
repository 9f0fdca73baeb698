//! `GET /metrics` and the middleware that times every HTTP answer by route.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::domain::incidents::IncidentQuery;
use crate::domain::incidents::Status;
use crate::http::Problem;
use crate::runtime::metrics::METRICS;

/// `GET /metrics`: the process's metrics, with the store-derived gauges read now.
#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics",
    tag = "operations",
    description = "Prometheus/OpenMetrics text: reports by outcome, rejections by problem type, \
        batch sizes and commit times, HTTP durations by route, method and status, queue depth, \
        open incidents and detector lag.",
    responses(
        (status = 200, description = "The metrics.", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
            example = "# TYPE outagewatch_open_incidents gauge\noutagewatch_open_incidents 2\n# EOF\n"),
        (status = 503, description = "The store is unavailable.", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")),
            example = json!({"type": "/problems/unavailable", "title": "Service unavailable", "status": 503,
            "detail": "the store is unavailable; retry later"})),
    )
)]
pub async fn get_metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    METRICS
        .queue_depth
        .set(i64::try_from(state.submitter.ingest.queue_depth()).unwrap_or(i64::MAX));
    METRICS
        .rate_limit_clients
        .set(i64::try_from(state.clients.tracked_clients()).unwrap_or(i64::MAX));
    let open = state
        .reads
        .incidents(&IncidentQuery {
            status: Some(Status::Open),
            limit: 100_000,
            ..IncidentQuery::default()
        })
        .await
        .map_err(ApiError::from_read)?;
    METRICS
        .open_incidents
        .set(i64::try_from(open.len()).unwrap_or(i64::MAX));
    if let Some(checkpoint) = state
        .reads
        .checkpoint()
        .await
        .map_err(ApiError::from_read)?
    {
        // The watermark minute is complete a minute after its start.
        let lag =
            crate::runtime::clock::now() - checkpoint.watermark - chrono::TimeDelta::minutes(1);
        METRICS.detector_lag_seconds.set(lag.num_seconds().max(0));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.encode(),
    )
        .into_response())
}

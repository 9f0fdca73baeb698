//! The pages people use: the report form, the status pages and the incident page, server-rendered HTML with embedded assets under the strict Content-Security-Policy every answer gets (`crate::api::security`).
//!
//! Pages are plain axum routes merged into the router beside the JSON API, not part of its
//! OpenAPI document. They read through the same functions as the API (`counts_answer`,
//! `regions_answer`, …) and the form stores through the API's ingest path
//! ([`crate::api::submit_reports`]) after the same rate limit ([`crate::api::admit_then`]).

mod assets;
mod form;
mod layout;
mod locale;
mod map;
mod status;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::compression::CompressionLayer;

use crate::api::AppState;

/// Every page and asset route.
pub fn pages(state: AppState) -> Router<AppState> {
    let report = Router::new()
        .route("/report", post(form::create_report))
        .route_layer(middleware::from_fn_with_state(state, form::admit_reporter));
    Router::new()
        .route("/", get(form::show_form))
        .route("/report/thanks", get(form::show_thanks))
        .route("/report/{service}", get(form::show_service_form))
        .route("/status", get(status::list_statuses))
        .route("/status/{service}", get(status::show_status))
        .route("/incidents/{id}", get(status::show_incident))
        .route("/assets/{file}", get(assets::get_asset))
        .merge(report)
        // The assets are sent as they are embedded, gzipped, and the layer leaves those alone.
        .layer(CompressionLayer::new())
}

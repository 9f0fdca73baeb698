//! The pages people use: the report form, the status pages and the incident page, server-rendered HTML with embedded assets under a strict Content-Security-Policy.
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

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::compression::CompressionLayer;

use crate::api::AppState;

/// Same origin only and nothing inline: scripts and styles are the embedded files; uPlot styles
/// its elements through the CSSOM, which this policy allows.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

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
        .layer(middleware::from_fn(security_headers))
        // The assets are sent as they are embedded, gzipped, and the layer leaves those alone.
        .layer(CompressionLayer::new())
}

/// The headers every page answer carries: the policy above, no MIME sniffing, no referrer to
/// other origins.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

//! The JSON API: routes, shared state, and the body rules every JSON endpoint follows.

mod admin;
mod caching;
mod challenge;
mod contract;
mod counts;
mod docs;
mod events;
mod export;
mod extract;
mod feeds;
mod health;
mod incidents;
mod metrics;
mod params;
mod places;
mod reports;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use axum::http::{header, HeaderMap};
use axum::{middleware, Extension, Router};
use bytes::Bytes;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::detector::DetectorTask;
use crate::domain::report::LiveCatalog;
use crate::http::{ClientPolicy, Submitter};
use crate::read::Reads;
use crate::runtime::events::EventBus;

pub use admin::AdminTokens;
pub use caching::ReadCache;
pub use counts::{counts_answer, Counts, CountsParams};
pub use export::{to_csv, to_table};
pub use incidents::{incidents_page, IncidentPage, IncidentsParams};
pub use reports::MAX_BATCH;

/// The problem document every endpoint answers errors with (shared with the pages).
pub use crate::http::ApiError;

/// What handlers share: one allocation behind an `Arc`, so the clone axum makes for each
/// layer and handler of every request is one reference-count increment (a struct of a dozen
/// `Arc`s cloned and dropped per layer was 6 % of the service's CPU at one report per request).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct SharedState {
    /// The read side for request work: every call gives up after `database.query_timeout_ms`.
    pub reads: Reads,
    /// The ingest path of reports (shared with the report form).
    pub submitter: Arc<Submitter>,
    /// The catalog now (admins change it at run time).
    pub catalog: Arc<LiveCatalog>,
    pub clients: Arc<ClientPolicy>,
    pub max_body_bytes: usize,
    /// A request body must arrive within this long (408 otherwise).
    pub body_read_timeout: Duration,
    /// An answer not ready this long after the request is abandoned with 503.
    pub request_timeout: Duration,
    pub admin: Arc<AdminTokens>,
    /// The live detector, which an admin's redetect pauses.
    pub detector: Arc<DetectorTask>,
    /// Live events (incident changes, minute counts) from the detector leader.
    pub events: EventBus,
    /// Turns true when the service starts shutting down (ends long-lived streams).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Recent answers of the read endpoints.
    pub read_cache: Arc<ReadCache>,
}

/// Reads are open to any origin, without credentials.
fn open_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD])
        .expose_headers([crate::http::DATA_AGE])
}

/// Every route of the JSON API and its document (`app` merges the pages beside them and wraps
/// both in [`crate::http::serve_layers`]).
pub fn router(state: AppState) -> Router {
    // Routes are registered only through `routes!`, which reads each handler's
    // `#[utoipa::path]`: the OpenAPI document and the router come from the same registrations.
    let ingest_routes = OpenApiRouter::new()
        .routes(routes!(reports::create_reports))
        .route_layer(middleware::from_fn_with_state(
            state.clients.clone(),
            crate::http::admit_client,
        ));
    // Reads: ETag/304 and Cache-Control, compressed when the client accepts it, and open to
    // any origin (GET only, no credentials) so dashboards elsewhere can poll them.
    let read_routes = OpenApiRouter::new()
        .routes(routes!(counts::get_counts))
        .routes(routes!(counts::list_services))
        .routes(routes!(places::list_places))
        .routes(routes!(counts::list_regions))
        .routes(routes!(incidents::list_incidents))
        .routes(routes!(incidents::get_incident))
        .route_layer(middleware::from_fn(export::csv_on_request))
        .route_layer(middleware::from_fn(crate::http::data_age))
        .layer(CompressionLayer::new())
        // Outside the compression layer, so a hit sends the compressed bytes as they are;
        // inside the ETag layer, so a 304 is decided per request and never shared.
        .layer(middleware::from_fn_with_state(
            state.read_cache.clone(),
            caching::cached,
        ))
        .layer(middleware::from_fn(caching::etag))
        .layer(open_cors());
    // The OpenAPI document goes with the pages: tagged and open to any origin, not CSV.
    let page_routes = OpenApiRouter::new()
        .routes(routes!(feeds::incidents_feed))
        .routes(routes!(feeds::status_badge))
        .routes(routes!(docs::get_openapi))
        .route_layer(middleware::from_fn(crate::http::data_age))
        .route_layer(middleware::from_fn(caching::etag))
        .layer(CompressionLayer::new())
        .layer(open_cors());
    let stream_routes = OpenApiRouter::new()
        .routes(routes!(events::stream_events))
        .layer(open_cors());
    // The docs page and its scripts: compressed (the Swagger UI files are sent as they are
    // embedded, gzipped, and the layer leaves those alone), and same-origin only, since the
    // page is for people in a browser.
    let docs_routes = OpenApiRouter::new()
        .routes(routes!(docs::get_docs_page))
        .routes(routes!(docs::get_docs_asset))
        .layer(CompressionLayer::new());
    // Admin calls: a bearer token first (401/403), then the handler; each call is logged.
    let admin_routes = OpenApiRouter::new()
        .routes(routes!(admin::list_services))
        .routes(routes!(admin::put_service))
        .routes(routes!(admin::put_incident_note))
        .routes(routes!(admin::resolve_incident))
        .routes(routes!(admin::redetect))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::authorize,
        ));
    let (routes, document) = OpenApiRouter::with_openapi(docs::base_document())
        .merge(ingest_routes)
        .merge(admin_routes)
        .merge(read_routes)
        .merge(page_routes)
        .merge(stream_routes)
        .merge(docs_routes)
        // Not rate limited: a form fetches a challenge before each report.
        .routes(routes!(challenge::get_challenge))
        .routes(routes!(metrics::get_metrics))
        .routes(routes!(health::get_health))
        .routes(routes!(health::get_readiness))
        .split_for_parts();
    // The document exists only once every route is registered, so it reaches its handler as
    // an extension rather than through the state.
    routes
        .layer(Extension(docs::Document(Arc::new(document))))
        .with_state(state)
}

/// Reads a JSON request body: 415 unless the content type is JSON, 413 past `limit` bytes,
/// 408 when it has not all arrived within `read_timeout`.
async fn json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    read_timeout: Duration,
) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let read = tokio::time::timeout(read_timeout, axum::body::to_bytes(body, limit)).await;
    match read {
        Err(_) => Err(ApiError::RequestTimeout {
            ms: read_timeout.as_millis() as u64,
        }),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) if is_length_limit(&error) => Err(ApiError::PayloadTooLarge { limit }),
        // The client broke off or sent a garbled body (e.g. bad chunked encoding).
        Ok(Err(_)) => Err(ApiError::MalformedJson(
            "the body could not be read to its end".into(),
        )),
    }
}

/// Whether a body error is the length limit's.
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

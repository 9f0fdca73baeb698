//! The pages people use: the report form, the status pages and the incident page, server-rendered HTML with embedded assets under the strict Content-Security-Policy every answer gets (`crate::http::security`).
//!
//! Pages are plain axum routes that `app` merges beside the JSON API's, not part of its OpenAPI
//! document. They read through the typed read layer ([`crate::read::Reads`]) as the API does,
//! and the form stores through the same ingest path ([`crate::http::Submitter`]) after the
//! same rate limit ([`crate::http::admit_then`]).

mod assets;
mod form;
mod layout;
mod locale;
mod map;
mod status;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::compression::CompressionLayer;

use crate::domain::report::LiveCatalog;
use crate::http::{ClientPolicy, Submitter};
use crate::read::Reads;

/// What the pages share.
#[derive(Clone)]
pub struct WebState {
    /// The read side, with the request deadline.
    pub reads: Reads,
    /// The catalog now (admins change it at run time).
    pub catalog: Arc<LiveCatalog>,
    /// The ingest path of the form's reports.
    pub submitter: Arc<Submitter>,
    /// Who is asking and their rate limit (the same buckets as the API's).
    pub clients: Arc<ClientPolicy>,
}

/// Every page and asset route.
pub fn pages(state: WebState) -> Router {
    let report = Router::new()
        .route("/report", post(form::create_report))
        .route_layer(middleware::from_fn_with_state(
            state.clients.clone(),
            form::admit_reporter,
        ));
    Router::new()
        .route("/", get(form::show_form))
        .route("/report/thanks", get(form::show_thanks))
        .route("/report/{service}", get(form::show_service_form))
        .route("/status", get(status::list_statuses))
        .route("/status/{service}", get(status::show_status))
        .route("/incidents/{id}", get(status::show_incident))
        .route("/assets/{file}", get(assets::get_asset))
        .merge(report)
        // A page read from the read replica says how old its data was, as the API does.
        .layer(middleware::from_fn(crate::http::data_age))
        // The assets are sent as they are embedded, gzipped, and the layer leaves those alone.
        .layer(CompressionLayer::new())
        .with_state(state)
}

//! What the JSON API and the pages share, so neither imports the other: the problem document
//! ([`ApiError`]), who is asking and their rate limit ([`client`]), proof of work ([`pow`]),
//! the one ingest path of reports ([`Submitter`]), embedded gzipped files ([`assets`]), and the
//! layers every answer passes through ([`serve_layers`]: the 404 fallback, the answer deadline,
//! timing, panics, request ids, tracing and the security headers).
//!
//! `app` builds the API's router and the pages' router, merges them and wraps the result in
//! [`serve_layers`].

pub mod assets;
pub mod client;
pub mod error;
pub mod pow;
pub mod security;
mod submit;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::runtime::metrics::{HttpLabels, METRICS};

pub use client::{admit_client, admit_then, ClientAddr, ClientPolicy};
pub use error::{ApiError, Problem};
pub use submit::Submitter;

/// Wraps every route of `routes` (the API's and the pages') in what every answer gets: a
/// problem 404 for unknown paths, a 503 for an answer not ready within `request_timeout`,
/// timing by route, a bare 500 for a panic, a request id, a trace span, and the security
/// headers (outermost, so panics and the fallback carry them too).
pub fn serve_layers(routes: Router, request_timeout: Duration) -> Router {
    let router = routes
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(
            request_timeout,
            answer_within,
        ))
        .layer(middleware::from_fn(track_http))
        // A panic answers a bare 500 problem (logged), never the panic's message.
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    let request_id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    // An info span, so every log line of the request carries its id; method and
                    // path only: no client address, no query string.
                    tracing::info_span!("request", id = %request_id, method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // A 503 is an answer we chose and already logged once with its cause.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    security::with_security_headers(router)
}

/// Abandons an answer that is not ready within `timeout` with 503 and `Retry-After`, so no
/// request hangs on a stalled dependency (a stream's answer is its headers, sent at once).
async fn answer_within(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "request abandoned: no answer in time"
            );
            ApiError::Unavailable {
                detail: "the answer took too long; retry shortly".into(),
                retry_after_seconds: 1,
                ids: Vec::new(),
            }
            .into_response()
        }
    }
}

/// Times the answer and counts it under its route pattern (never the raw path).
async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    METRICS
        .http_seconds
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The header of an answer read from the read replica (`database.read_url`): how many seconds
/// its data lagged the primary when it was computed (0: the replica had replayed everything).
/// Absent when the primary answered.
pub const DATA_AGE: HeaderName = HeaderName::from_static("x-data-age");

/// Adds [`DATA_AGE`] to an answer whose reads a replica served (the API's reads and feeds, the
/// pages). Inside the read cache, so a kept answer keeps the age it was computed with.
pub async fn data_age(request: Request, next: Next) -> Response {
    let (mut response, age) = crate::read::replica::noting_data_age(next.run(request)).await;
    if let Some(age) = age {
        if let Ok(value) = HeaderValue::from_str(&format!("{age:.1}")) {
            response.headers_mut().insert(DATA_AGE, value);
        }
    }
    response
}

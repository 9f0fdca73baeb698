//! `GET /api/v1/events`: Server-Sent Events of incident changes and per-minute counts, optionally for one service.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};

use super::params::parameters;
use super::{ApiError, AppState};
use crate::http::Problem;
use crate::runtime::events::LiveEvent;

/// The comment every stream opens with (`: connected`); clients ignore comments.
const OPENED: &str = "connected";

/// `GET /api/v1/events[?service=x]`: the `: connected` comment at once, then events named
/// `incident` (data: `{"type":"incident","kind":"opened|updated|resolved|reopened",
/// "incident":{…}}`) and `counts` (data: `{"type":"counts","service","minute","count"}`);
/// `lagged` (data: how many were skipped) when this client fell behind.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    summary = "Live incident changes and minute counts (Server-Sent Events)",
    tag = "live",
    description = "Server-Sent Events: `incident` events (kind `opened`, `updated`, `resolved` or \
        `reopened`, with the whole incident) and, for each minute the detector processes, the \
        service's worldwide `counts`. A client more than 4,096 events behind gets a `lagged` event \
        whose data is how many it missed. The stream opens with the comment line `: connected` \
        at once (clients ignore comments) and ends when the service shuts down.",
    params(("service" = Option<String>, Query, description = "Only this service's events (a catalog slug).", example = "x")),
    responses(
        (status = 200, description = "The event stream; each event's `data` is one JSON event.",
            content_type = "text/event-stream", body = LiveEvent,
            example = "event: counts\ndata: {\"type\":\"counts\",\"service\":\"x\",\"minute\":\"2025-03-10T18:06:00Z\",\"count\":12}\n\n"),
        (status = 400, description = "An unknown service or parameter, named in `errors`.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/invalid-parameter",
            "title": "Invalid parameter", "status": 400, "detail": "service: \"xx\" is not a known service; known services: x",
            "errors": [{"field": "service", "message": "\"xx\" is not a known service; known services: x"}]})),
    )
)]
pub async fn stream_events(
    State(state): State<AppState>,
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = parameters(params, &["service"])?;
    let service = match params
        .get("service")
        .map(|s| state.catalog.current().parse(s).cloned())
    {
        None => None,
        Some(Ok(found)) => Some(found.slug.as_str().to_owned()),
        Some(Err(e)) => return Err(ApiError::InvalidParameters(vec![e])),
    };
    // The stream ends when the service shuts down, so a graceful shutdown does not wait for
    // clients that never hang up.
    let stopping = WatchStream::new(state.stopping.clone())
        .filter(|stop| *stop)
        .map(|_| None);
    let stream = BroadcastStream::new(state.events.subscribe())
        .map(Some)
        .merge(stopping)
        .take_while(Option::is_some)
        .filter_map(move |item| match item? {
            Ok(event) if service.as_deref().is_none_or(|s| s == event.service()) => {
                let name = event.name();
                Event::default().event(name).json_data(&event).ok().map(Ok)
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(skipped)) => Some(Ok(Event::default()
                .event("lagged")
                .data(skipped.to_string()))),
        });
    // A comment first, so the client (and any proxy between) sees the stream open at once,
    // not at the first event or the first keep-alive 15 s later.
    let opened = tokio_stream::once(Ok(Event::default().comment(OPENED)));
    Ok(Sse::new(opened.chain(stream)).keep_alive(KeepAlive::default()))
}

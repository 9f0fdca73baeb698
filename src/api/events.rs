//! `GET /api/v1/events`: Server-Sent Events of incident changes and per-minute counts, optionally for one service.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::contract::Slug;
use super::extract::ApiQuery;
use super::{ApiError, AppState};
use crate::http::Problem;
use crate::runtime::events::LiveEvent;

/// The parameters of the event stream.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Only this service's events (a catalog slug).
    #[param(value_type = Option<Slug>, inline, example = "x")]
    service: Option<String>,
}

/// One event of the stream as a client reads it: the envelope (`event`, `data`, `id`,
/// `retry`) whose `data` is text. OpenAPI 3.2 calls this the `itemSchema` of
/// `text/event-stream`; in this 3.1 document it is the media type's `schema`, describing one
/// event, with `data` as JSON (`contentMediaType`) of the [`LiveEvent`] schema
/// (`contentSchema`), or a count for `lagged`.
pub(super) struct StreamEvent;

impl PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        let mut live_event = Extensions::default();
        live_event.insert(
            "contentSchema".to_owned(),
            serde_json::json!({"$ref": format!("#/components/schemas/{}", <LiveEvent as ToSchema>::name())}),
        );
        let envelope = |names: &[&str], data: ObjectBuilder| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "event",
                    text("The event's name.").enum_values(Some(names.iter().copied())),
                )
                .required("event")
                .property("data", data)
                .required("data")
                .property("id", text("The event's id (not sent)."))
                .property(
                    "retry",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .description(Some("Milliseconds to wait before reconnecting (not sent).")),
                )
        };
        OneOfBuilder::new()
            .description(Some(
                "One Server-Sent Event: `incident` and `counts` carry a LiveEvent as JSON text;                  `lagged` carries how many events this client missed.",
            ))
            .item(envelope(
                &["incident", "counts"],
                text("The event, as JSON text.")
                    .content_media_type("application/json")
                    .extensions(Some(live_event)),
            ))
            .item(envelope(
                &["lagged"],
                text("How many events were skipped.").pattern(Some("^[0-9]+$")),
            ))
            .into()
    }
}

impl ToSchema for StreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        // `data`'s contentSchema refers to it.
        schemas.push((
            <LiveEvent as ToSchema>::name().into_owned(),
            LiveEvent::schema(),
        ));
        LiveEvent::schemas(schemas);
    }
}

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
    params(EventsParams),
    responses(
        (status = 200, description = "The event stream; the schema describes one event of it.",
            content_type = "text/event-stream", body = StreamEvent,
            example = "event: counts\ndata: {\"type\":\"counts\",\"service\":\"x\",\"minute\":\"2025-03-10T18:06:00Z\",\"count\":12}\n\n"),
        (status = 400, description = "An unknown service or parameter, named in `errors`.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/invalid-parameter",
            "title": "Invalid parameter", "status": 400, "detail": "service: \"xx\" is not a known service; known services: x",
            "errors": [{"field": "service", "message": "\"xx\" is not a known service; known services: x"}]})),
    )
)]
pub async fn stream_events(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let service = match params
        .service
        .as_deref()
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

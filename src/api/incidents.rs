//! `GET /api/v1/incidents` (filtered, newest first, cursor-paged) and `GET /api/v1/incidents/{id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use super::contract::{Country, CsvFormat, ReadAnswers, Slug};
use super::docs::choice_schema;
use super::extract::ApiQuery;
use super::{ApiError, AppState};
use crate::domain::geo::CountryCode;
use crate::domain::incidents::IncidentQuery;
use crate::domain::incidents::{Incident, Status};
use crate::domain::report::Catalog;
use crate::domain::report::FieldError;
use crate::http::Problem;
use crate::read::Reads;

/// Incidents per page unless `limit` says otherwise, and the most a page holds.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// An incidents cursor: the next incident's start (unix seconds), `_` and its id.
struct IncidentsCursor;

impl PartialSchema for IncidentsCursor {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(
            "^-?[0-9]{1,12}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        ))
        .into()
    }
}

/// The parameters of `GET /api/v1/incidents`.
#[derive(Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentsParams {
    /// Only this service (a catalog slug).
    #[param(value_type = Option<Slug>, inline, example = "x")]
    pub service: Option<String>,
    /// Only this country (ISO 3166-1 alpha-2, any case).
    #[param(value_type = Option<Country>, inline, example = "PK")]
    pub country: Option<String>,
    /// Open, resolved, or all incidents.
    #[param(value_type = Option<StatusChoice>, inline)]
    pub status: Option<String>,
    /// RFC 3339: incidents that started then or later.
    #[param(value_type = Option<DateTime<Utc>>, example = "2025-03-10T00:00:00Z")]
    pub since: Option<String>,
    /// Most incidents per page; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The previous page's `next_cursor`.
    #[param(value_type = Option<IncidentsCursor>, inline, example = "1741600680_5f0c2d6e-8b1a-8e4f-9a57-3c2d1e0f4a6b")]
    pub cursor: Option<String>,
}

/// The `status` filter's schema: either status, or `all`.
pub(super) struct StatusChoice;

impl PartialSchema for StatusChoice {
    fn schema() -> RefOr<Schema> {
        choice_schema(
            [Status::Open.as_str(), Status::Resolved.as_str(), "all"],
            "all",
        )
    }
}

/// One page of incidents.
#[derive(Serialize, ToSchema)]
pub struct IncidentPage {
    /// Newest first.
    pub incidents: Vec<Incident>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The cursor of the page after `incident`: its start (unix seconds) and id.
fn cursor_of((started_at, id): (DateTime<Utc>, Uuid)) -> String {
    format!("{}_{}", started_at.timestamp(), id)
}

fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (seconds, id) = text.split_once('_')?;
    Some((
        DateTime::from_timestamp(seconds.parse().ok()?, 0)?,
        id.parse().ok()?,
    ))
}

/// Reads the list parameters, collecting every problem rather than stopping at the first.
fn list_query(
    params: &IncidentsParams,
    catalog: &Catalog,
) -> Result<IncidentQuery, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut query = IncidentQuery {
        limit: DEFAULT_LIMIT,
        ..IncidentQuery::default()
    };
    // In the parameters' alphabetical order, as the errors were always listed.
    let given = [
        ("country", &params.country),
        ("cursor", &params.cursor),
        ("limit", &params.limit),
        ("service", &params.service),
        ("since", &params.since),
        ("status", &params.status),
    ];
    for (name, value) in given {
        let Some(value) = value else { continue };
        match name {
            "service" => match catalog.parse(value) {
                Ok(service) => query.service = Some(service.slug.as_str().to_owned()),
                Err(e) => errors.push(e),
            },
            "country" => match CountryCode::parse(value) {
                Ok(code) => query.country = Some(code.as_str().to_owned()),
                Err(e) => errors.push(FieldError::new("country", e.to_string())),
            },
            "status" => match value.as_str() {
                "all" => query.status = None,
                other => match Status::parse(other) {
                    Some(status) => query.status = Some(status),
                    None => errors.push(FieldError::new(
                        "status",
                        "status must be open, resolved or all",
                    )),
                },
            },
            "since" => match value.parse::<DateTime<Utc>>() {
                Ok(since) => query.since = Some(since),
                Err(_) => errors.push(FieldError::new(
                    "since",
                    "since must be an RFC 3339 time, e.g. 2025-03-10T00:00:00Z",
                )),
            },
            "limit" => match value.parse::<u32>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => query.limit = limit,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
            "cursor" => match parse_cursor(value) {
                Some(after) => query.after = Some(after),
                None => errors.push(FieldError::new(
                    "cursor",
                    "cursor must be a next_cursor value from a previous page",
                )),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(errors)
    }
}

/// `GET /api/v1/incidents`
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    summary = "Incidents, newest first",
    tag = "incidents",
    description = "Incidents, newest first, filtered and cursor-paged. Counts are per 15 minutes \
        (the detector's window). The CSV has one row per incident.",
    params(IncidentsParams, CsvFormat),
    responses(
        (status = 200, description = "One page of incidents.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("X-Data-Age" = String, description = "Only on an answer read from the read replica (`database.read_url`): seconds its data lagged the primary when computed, e.g. `0.0` (it had replayed everything) or `2.4`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), content(
            (IncidentPage = "application/json", example = json!({"incidents": [{"id": "5f0c2d6e-8b1a-8e4f-9a57-3c2d1e0f4a6b", "service": "x", "scope": "country",
                "country": "PK", "city": null, "status": "resolved", "started_at": "2025-03-10T09:58:00Z",
                "detected_at": "2025-03-10T10:00:00Z", "peak_at": "2025-03-10T18:06:00Z",
                "peak_count": 133.0, "expected_at_peak": 4.9,
                "start_count": 37.0, "excess_reports": 2710.5, "resolved_at": "2025-03-10T19:40:00Z",
                "top_cities": [{"country": "PK", "city": "Lahore", "count": 1072},
                               {"country": "PK", "city": "Rawalpindi", "count": 658}],
                "problems": {"app": 0.558, "login": 0.008, "server_connection": 0.113, "website": 0.32},
                "parent_id": "0d7a9e51-3c4b-8f2a-b6d1-7e5f4c3b2a19",
                "summary": "Reports about X (Twitter) in Pakistan rose from 37 to 133 per 15 minutes (3.6×; about 4.9 expected), mostly from Lahore, Rawalpindi and Karachi. It ended at 2025-03-10 19:40 UTC.",
                "updated_at": "2025-03-10T19:40:00Z"}], "next_cursor": null})),
            (String = "text/csv", example = "id,service,scope,country,city,status,started_at,detected_at,peak_at,peak_count,expected_at_peak,start_count,excess_reports,resolved_at,top_cities,problems,parent_id,summary,updated_at\n"),
        )),
        ReadAnswers,
    )
)]
pub async fn list_incidents(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<IncidentsParams>,
) -> Result<Json<IncidentPage>, ApiError> {
    Ok(Json(
        incidents_page(&state.reads, &state.catalog.current(), &params).await?,
    ))
}

/// One page of incidents for [`IncidentsParams`].
pub async fn incidents_page(
    reads: &Reads,
    catalog: &Catalog,
    params: &IncidentsParams,
) -> Result<IncidentPage, ApiError> {
    let query = list_query(params, catalog).map_err(ApiError::InvalidParameters)?;
    let page = reads
        .incident_page(&query)
        .await
        .map_err(ApiError::from_read)?;
    Ok(IncidentPage {
        incidents: page.incidents,
        next_cursor: page.next.map(cursor_of),
    })
}

/// `GET /api/v1/incidents/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    summary = "One incident",
    tag = "incidents",
    description = "One incident. The CSV is one row.",
    params(
        ("id" = Uuid, Path, description = "The incident's id.", example = "5f0c2d6e-8b1a-8e4f-9a57-3c2d1e0f4a6b"),
        CsvFormat,
    ),
    responses(
        (status = 200, description = "The incident.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("X-Data-Age" = String, description = "Only on an answer read from the read replica (`database.read_url`): seconds its data lagged the primary when computed, e.g. `0.0` (it had replayed everything) or `2.4`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), content(
            (Incident = "application/json", example = json!({"id": "5f0c2d6e-8b1a-8e4f-9a57-3c2d1e0f4a6b", "service": "x", "scope": "country",
                "country": "PK", "city": null, "status": "resolved", "started_at": "2025-03-10T09:58:00Z",
                "detected_at": "2025-03-10T10:00:00Z", "peak_at": "2025-03-10T18:06:00Z",
                "peak_count": 133.0, "expected_at_peak": 4.9,
                "start_count": 37.0, "excess_reports": 2710.5, "resolved_at": "2025-03-10T19:40:00Z",
                "top_cities": [{"country": "PK", "city": "Lahore", "count": 1072},
                               {"country": "PK", "city": "Rawalpindi", "count": 658}],
                "problems": {"app": 0.558, "login": 0.008, "server_connection": 0.113, "website": 0.32},
                "parent_id": "0d7a9e51-3c4b-8f2a-b6d1-7e5f4c3b2a19",
                "summary": "Reports about X (Twitter) in Pakistan rose from 37 to 133 per 15 minutes (3.6×; about 4.9 expected), mostly from Lahore, Rawalpindi and Karachi. It ended at 2025-03-10 19:40 UTC.",
                "updated_at": "2025-03-10T19:40:00Z"})),
            (String = "text/csv", example = "id,service,scope,country,city,status,started_at,detected_at,peak_at,peak_count,expected_at_peak,start_count,excess_reports,resolved_at,top_cities,problems,parent_id,summary,updated_at\n\
                5f0c2d6e-8b1a-8e4f-9a57-3c2d1e0f4a6b,x,country,PK,,resolved,2025-03-10T09:58:00Z,2025-03-10T10:00:00Z,2025-03-10T18:06:00Z,133.0,4.9,37.0,2710.5,2025-03-10T19:40:00Z,\
                country=PK city=Lahore count=1072; country=PK city=Rawalpindi count=658,app=0.558 login=0.008 server_connection=0.113 website=0.32,\
                0d7a9e51-3c4b-8f2a-b6d1-7e5f4c3b2a19,Reports about X (Twitter) in Pakistan rose from 37 to 133 per 15 minutes.,2025-03-10T19:40:00Z\n"),
        )),
        ReadAnswers,
        (status = 404, description = "No incident has this id.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/not-found",
            "title": "Not found", "status": 404, "detail": "not found"})),
    )
)]
pub async fn get_incident(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Incident>, ApiError> {
    let id = id
        .ok()
        .and_then(|Path(text)| text.parse::<Uuid>().ok())
        .ok_or_else(|| {
            ApiError::InvalidParameters(vec![FieldError::new("id", "id must be a UUID")])
        })?;
    match state.reads.incident(id).await {
        Ok(Some(incident)) => Ok(Json(incident)),
        Ok(None) => Err(ApiError::NotFound),
        Err(e) => Err(ApiError::from_read(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let id = Uuid::from_u128(7);
        let at = DateTime::from_timestamp(1_741_600_320, 0).expect("valid time");
        assert_eq!(parse_cursor(&format!("1741600320_{id}")), Some((at, id)));
        assert_eq!(parse_cursor("1741600320"), None);
        assert_eq!(parse_cursor("x_00000000-0000-0000-0000-000000000007"), None);
    }
}

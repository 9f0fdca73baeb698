//! `GET /api/v1/incidents` (filtered, newest first, cursor-paged) and `GET /api/v1/incidents/{id}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::counts::parameters;
use super::{ApiError, AppState};
use crate::geo::CountryCode;
use crate::incidents::{Incident, Status};
use crate::report::Catalog;
use crate::report::FieldError;
use crate::store::{IncidentQuery, Store};

/// Incidents per page unless `limit` says otherwise, and the most a page holds.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

const PARAMETERS: [&str; 6] = ["service", "country", "status", "since", "limit", "cursor"];

/// One page of incidents.
#[derive(Serialize)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The cursor of the page after `incident`: its start (unix seconds) and id.
fn cursor_of(incident: &Incident) -> String {
    format!("{}_{}", incident.started_at.timestamp(), incident.id)
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
    params: &BTreeMap<String, String>,
    catalog: &Catalog,
) -> Result<IncidentQuery, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut query = IncidentQuery {
        limit: DEFAULT_LIMIT,
        ..IncidentQuery::default()
    };
    for (name, value) in params {
        match name.as_str() {
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
            // The handler has refused unknown parameters already.
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
pub async fn list_incidents(
    State(state): State<AppState>,
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<IncidentPage>, ApiError> {
    let params = parameters(params, &PARAMETERS)?;
    Ok(Json(
        incidents_page(&state.store, &state.catalog, &params).await?,
    ))
}

/// One page of incidents for query parameters (the API's and the `incidents` command's).
pub async fn incidents_page(
    store: &Arc<dyn Store>,
    catalog: &Catalog,
    params: &BTreeMap<String, String>,
) -> Result<IncidentPage, ApiError> {
    let mut query = list_query(params, catalog).map_err(ApiError::InvalidParameters)?;
    let limit = query.limit;
    // One more than asked tells whether another page follows.
    query.limit = limit + 1;
    let mut incidents = store
        .incidents(&query)
        .await
        .map_err(ApiError::from_store)?;
    let next_cursor = if incidents.len() > limit as usize {
        incidents.truncate(limit as usize);
        incidents.last().map(cursor_of)
    } else {
        None
    };
    Ok(IncidentPage {
        incidents,
        next_cursor,
    })
}

/// `GET /api/v1/incidents/{id}`
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
    match state.store.incident(id).await {
        Ok(Some(incident)) => Ok(Json(incident)),
        Ok(None) => Err(ApiError::NotFound),
        Err(e) => Err(ApiError::from_store(e)),
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
